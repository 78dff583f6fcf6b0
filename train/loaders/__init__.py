"""Loaders for face-motion datasets users already have; each yields `Sequence` records.

    ds = open_dataset("/data/vocaset", target_fps=30)    # layout detected
    for seq in ds: seq.audio (N,) 16 kHz, seq.offsets (T, V, 3) m, seq.template (V, 3) m

Layouts: 'vocaset' and 'biwi' (wav/ + vertices_npy/ + templates.pkl; see loaders.vocaset) and
'multiface' (per-frame meshes under <subject>/tracked_mesh/<sentence>/; see loaders.multiface).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .multiface import MultifaceDataset, read_obj
from .sequence import SAMPLE_RATE, Sequence, check_sequence, read_audio
from .vocaset import PRESETS, SafeUnpickler, UnsafePickleError, VocasetDataset, load_templates

__all__ = ["open_dataset", "detect_layout", "Sequence", "VocasetDataset", "MultifaceDataset",
           "SafeUnpickler", "UnsafePickleError", "load_templates", "read_obj", "read_audio",
           "check_sequence", "SAMPLE_RATE", "LAYOUTS"]

LAYOUTS = ("vocaset", "biwi", "multiface")


def detect_layout(path: str | Path) -> str:
    """Guess the layout of a dataset folder without unpickling anything.

    wav/ + vertices_npy/ + templates.pkl -> 'biwi' when the first .npy holds 23370 vertices per
    frame (read from its header), else 'vocaset'; a tracked_mesh/ folder in `path` or one level
    below -> 'multiface'. Raises ValueError describing what was expected otherwise.
    """
    root = Path(path)
    if (root / "wav").is_dir() and (root / "vertices_npy").is_dir() and (root / "templates.pkl").is_file():
        first = next(iter(sorted((root / "vertices_npy").glob("*.npy"))), None)
        if first is not None:
            shape = np.load(first, mmap_mode="r", allow_pickle=False).shape
            if int(np.prod(shape[1:])) == 3 * PRESETS["biwi"]["n_vertices"]:
                return "biwi"
        return "vocaset"
    if (root / "tracked_mesh").is_dir() or any(root.glob("*/tracked_mesh")):
        return "multiface"
    raise ValueError(f"{root}: unknown dataset layout; expected wav/ + vertices_npy/ + "
                     f"templates.pkl (VOCASET/BIWI) or <subject>/tracked_mesh/<sentence>/ "
                     f"(Multiface). Pass layout=... and path options to override.")


def open_dataset(path: str | Path, layout: str | None = None, **options):
    """Open a dataset folder -> VocasetDataset or MultifaceDataset (iterable of Sequence,
    with len() and indexing). `layout` is detected when None; `options` go to the dataset
    class (fps, scale, target_fps, subjects, skip_invalid, path patterns, ...).

    A folder that is itself one Multiface subject (it holds tracked_mesh/) is opened as that
    single subject.
    """
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a folder")
    layout = layout or detect_layout(root)
    if layout in ("vocaset", "biwi"):
        return VocasetDataset(root, preset=layout, **options)
    if layout == "multiface":
        if (root / "tracked_mesh").is_dir() and "mesh_dir" not in options:
            options.setdefault("subjects", [root.name])
            return MultifaceDataset(root.parent, **options)
        return MultifaceDataset(root, **options)
    raise ValueError(f"unknown layout {layout!r}; choose one of {LAYOUTS}")
