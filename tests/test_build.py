"""The extension package: Blender's own builder validates and builds it, and bpy installs it."""
import importlib
import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXTENSION_MODULE = "bl_ext.user_default.speechface"


def load_build_script():
    """build.py as a module (by path: a PyPI package named `build` must not shadow it)."""
    spec = importlib.util.spec_from_file_location("speechface_build", REPO / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def build_script():
    return load_build_script()


@pytest.fixture(scope="module")
def extension_zip(build_script, tmp_path_factory) -> Path:
    zips = build_script.build_extension(tmp_path_factory.mktemp("dist"))
    assert len(zips) == 1
    return zips[0]


def test_manifest_validates(build_script):
    builder = build_script.blender_ext_script()
    proc = subprocess.run([sys.executable, str(builder), "validate", str(REPO)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_zip_holds_the_addon_only(extension_zip):
    assert extension_zip.name == "speechface-0.1.0.zip"
    names = zipfile.ZipFile(extension_zip).namelist()
    assert "blender_manifest.toml" in names
    assert "__init__.py" in names
    assert "addon/__init__.py" in names
    assert any(n.startswith("core/") for n in names)
    for excluded in ("train/", "tests/", ".venv/", ".cache/", ".ci/", ".git", "dist/", "out/"):
        assert not any(n.startswith(excluded) for n in names), excluded
    for excluded in ("build.py", "requirements.txt"):
        assert excluded not in names
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)


def test_zip_installs_and_enables_in_blender(extension_zip):
    # Installs into BLENDER_USER_RESOURCES, a temp dir set by conftest.py before bpy is imported.
    bpy = pytest.importorskip("bpy")
    import addon_utils

    result = bpy.ops.extensions.package_install_files(
        filepath=str(extension_zip), repo="user_default", enable_on_install=True)
    repo_index = next(i for i, r in enumerate(bpy.context.preferences.extensions.repos)
                      if r.module == "user_default")
    try:
        assert result == {"FINISHED"}
        assert EXTENSION_MODULE in bpy.context.preferences.addons
        assert addon_utils.check(EXTENSION_MODULE) == (True, True)  # (default, loaded)
        module = importlib.import_module(EXTENSION_MODULE)
        assert callable(module.register) and callable(module.unregister)
        assert f"{EXTENSION_MODULE}.addon" in sys.modules  # relative import of the Blender layer
    finally:
        bpy.ops.extensions.package_uninstall(repo_index=repo_index, pkg_id="speechface")
    assert EXTENSION_MODULE not in bpy.context.preferences.addons
