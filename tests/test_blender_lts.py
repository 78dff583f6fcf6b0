"""The extension's Blender tests again on Blender 4.5 LTS (the venv's bpy is 5.0.1).

build.py installs bpy 4.5.15 into .cache/bpy-4.5.15; the Blender test files run in a child
pytest with it first on the path, so the same tests check both animation APIs."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LTS = "4.5.15"
LTS_DIR = REPO / ".cache" / f"bpy-{LTS}"
FILES = ("test_addon.py", "test_batch.py", "test_build.py", "test_rig_drive.py")


@pytest.mark.skipif(os.environ.get("SPEECHFACE_BPY_EXPECTED") is not None,
                    reason="already the child run")
def test_blender_tests_pass_on_lts(tmp_path):
    if not (LTS_DIR / ".installed").exists():
        pytest.skip(f"bpy {LTS} not installed (python3 build.py test installs it)")
    env = dict(os.environ, PYTHONPATH=str(LTS_DIR), SPEECHFACE_BPY_EXPECTED=LTS,
               BLENDER_USER_RESOURCES=str(tmp_path / "blender"))
    proc = subprocess.run([sys.executable, "-m", "pytest", "--rootdir", str(REPO / "tests"), "-q",
                           "-p", "no:cacheprovider", *[str(REPO / "tests" / f) for f in FILES]],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    summary = [line for line in proc.stdout.splitlines() if " passed" in line]
    assert summary and "failed" not in summary[-1] and "skipped" not in summary[-1], proc.stdout[-2000:]
