"""The extension package: Blender's own builder validates and builds it, and bpy installs it."""
import importlib
import os
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


CLEAN_BAKE = r'''
import os, sys
try:
    import torch
    sys.exit("torch is importable before the extension is installed: the test proves nothing")
except ImportError:
    pass
import bpy, numpy as np
zip_path, wav = sys.argv[1], sys.argv[2]
bpy.ops.wm.read_factory_settings(use_empty=True)
assert bpy.ops.extensions.package_install_files(
    filepath=zip_path, repo="user_default", enable_on_install=True) == {"FINISHED"}
import torch  # now from the wheels the zip brought
assert "/extensions/" in torch.__file__, torch.__file__
bpy.ops.speechface.add_head()
scene = bpy.context.scene
scene.sequence_editor_create().strips.new_sound("speech", wav, 1, 1)
assert bpy.ops.speechface.bake() == {"FINISHED"}
obj = scene.speechface.target
keys = [k.name for k in obj.data.shape_keys.key_blocks if k.name.startswith("speechface.")]
scene.frame_set(30)
ev = obj.evaluated_get(bpy.context.evaluated_depsgraph_get()).to_mesh()
co = np.empty(len(ev.vertices) * 3, np.float32); ev.vertices.foreach_get("co", co)
rest = np.empty_like(co); obj.data.vertices.foreach_get("co", rest)
print("BAKED", len(keys), float(np.abs(co - rest).max()))
# a mesh of another topology goes through the retarget map (scipy from the zip's wheels)
other = obj.copy()
other.data = obj.data.copy()
scene.collection.objects.link(other)
bpy.ops.speechface.clear(target=other.name)
other.modifiers.new("Decimate", "DECIMATE").ratio = 0.5
bpy.context.view_layer.objects.active = other
bpy.ops.object.modifier_apply(modifier="Decimate")
assert bpy.ops.speechface.bake(target=other.name) == {"FINISHED"}
import scipy
assert "/extensions/" in scipy.__file__, scipy.__file__
print("RETARGETED", len(other.data.vertices), "speechface_map" in other)
'''


def clean_bpy_site(venv_site: Path, where: Path) -> Path:
    """A site folder with only bpy and numpy (what Blender itself brings), linked from the venv."""
    where.mkdir(parents=True, exist_ok=True)
    for name in ("bpy", "numpy", "numpy.libs"):
        if (venv_site / name).exists():
            (where / name).symlink_to(venv_site / name)
    return where


def test_zip_with_wheels_bakes_in_blender_without_torch(build_script, tmp_path, clips):
    """The linux-x64 zip bundles torch & co.: installed into a bpy that has no torch, it bakes."""
    pytest.importorskip("bpy")
    zips = build_script.build_extension(tmp_path / "dist", platform="linux-x64")
    assert [z.name for z in zips] == ["speechface-0.1.0-linux_x64.zip"]
    names = zipfile.ZipFile(zips[0]).namelist()
    assert any(n.startswith("wheels/torch-2.13.0") for n in names)
    assert not any(n.startswith("wheels/numpy") for n in names)
    site = clean_bpy_site(Path(bpy_site()), tmp_path / "site")
    script = tmp_path / "clean_bake.py"
    script.write_text(f"import sys; sys.path.insert(0, {str(site)!r})\n" + CLEAN_BAKE)
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(tmp_path / "blender"))
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([sys.executable, "-S", str(script), str(zips[0]),
                           str(clips["arctic_a0009"][0])],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    line = [x for x in proc.stdout.splitlines() if x.startswith("BAKED")][-1].split()
    assert int(line[1]) >= 1 and float(line[2]) > 1e-3      # keys made, and the face moved
    line = [x for x in proc.stdout.splitlines() if x.startswith("RETARGETED")][-1].split()
    assert int(line[1]) < 4706 and line[2] == "True"


def bpy_site() -> str:
    """The venv's site-packages (bpy.__file__ points into Blender's own scripts folder)."""
    import numpy
    return str(Path(numpy.__file__).resolve().parents[1])
