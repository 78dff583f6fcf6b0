"""VOCASET / BIWI in the layout FaceFormer-style repositories use.

    ROOT/wav/<stem>.wav               speech, any rate/channels (resampled to 16 kHz mono)
    ROOT/vertices_npy/<stem>.npy      absolute vertex positions, (T, V*3) or (T, V, 3), float
    ROOT/templates.pkl                pickle: dict subject -> neutral face (V, 3) (or (V*3,))

`<stem>` is `<subject>_<sentence>`: `FaceTalk_170725_00137_TA_sentence01` -> subject
`FaceTalk_170725_00137_TA`, sentence `sentence01`; `F2_e01` -> `F2`, `e01`; otherwise the last
`_` token is the sentence (or pass `pattern`, a regex with groups `subject` and `sentence`).

Presets (every value can be overridden by a keyword):
- 'vocaset': 60 fps capture (FaceFormer keeps every 2nd frame: pass target_fps=30), metres
  (scale 1.0), FLAME topology of 5023 vertices.
- 'biwi': 25 fps, 23370 vertices. ASSUMPTION on units: the BIWI files FaceFormer distributes are
  not millimetres but centred, size-normalised coordinates (raw BIWI .vl scans are in mm; people
  who re-aligned the raw scans to FaceFormer's templates report per-subject factors of 174-201,
  FaceFormer issue #45), so 1 unit ~ 0.186 m is the default `scale`. If your .npy files come
  straight from the raw .vl scans, pass scale=0.001. A warning is given when the scaled
  template's extent is not head-sized (0.05-1 m).

Pickle safety: templates.pkl is only read when a dataset is opened on that folder, with a
warning, through `SafeUnpickler`, which rebuilds numpy arrays and builtin containers and
refuses every other global (so `os.system` & co. raise instead of running).
"""
from __future__ import annotations

import importlib
import io
import logging
import pickle
import re
import warnings
from pathlib import Path

import numpy as np

from .sequence import Sequence, SequenceDataset

log = logging.getLogger(__name__)

PRESETS = {
    "vocaset": {"fps": 60.0, "scale": 1.0, "n_vertices": 5023},
    "biwi": {"fps": 25.0, "scale": 0.186, "n_vertices": 23370},
}

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy", "ndarray"), ("numpy", "dtype"),
    ("_codecs", "encode"), ("collections", "OrderedDict"),
} | {("builtins", n) for n in ("dict", "list", "tuple", "set", "frozenset", "int", "float",
                                 "complex", "bool", "str", "bytes", "bytearray")}


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for something other than numpy arrays and builtin containers."""


class SafeUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals in `_ALLOWED_GLOBALS` (numpy 1.x and 2.x module
    spellings, Python 2 `__builtin__`); anything else raises UnsafePickleError
    before it can be called."""

    def find_class(self, module: str, name: str):
        if module == "__builtin__":  # Python 2 pickles (fix_imports is bypassed by overriding)
            module = "builtins"
        canonical = module.replace("numpy._core", "numpy.core")
        if (canonical, name) not in _ALLOWED_GLOBALS:
            raise UnsafePickleError(
                f"refusing to load global {module}.{name}: only numpy arrays and builtin "
                f"containers are allowed in a templates pickle")
        for candidate in (module, canonical, canonical.replace("numpy.core", "numpy._core")):
            try:
                return getattr(importlib.import_module(candidate), name)
            except (ImportError, AttributeError):
                continue
        raise UnsafePickleError(f"cannot resolve {module}.{name}")


def safe_load_pickle(data: bytes, what: str = "pickle"):
    """Unpickle bytes with SafeUnpickler (latin1 for Python 2 pickles); errors name `what`."""
    try:
        return SafeUnpickler(io.BytesIO(data), encoding="latin1").load()
    except UnsafePickleError as exc:
        raise UnsafePickleError(f"{what}: {exc}") from None


def load_templates(path: str | Path, scale: float = 1.0) -> dict[str, np.ndarray]:
    """Read templates.pkl -> {subject: float32 (V, 3) in metres (= stored values * scale)}."""
    path = Path(path)
    warnings.warn(f"{path}: reading a pickle file. Pickles can execute code when loaded; a "
                  f"restricted unpickler that only rebuilds numpy arrays is used.", stacklevel=2)
    raw = safe_load_pickle(path.read_bytes(), str(path))
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a dict subject -> (V, 3) array, got {type(raw).__name__}")
    out = {}
    for subject, verts in raw.items():
        arr = np.asarray(verts, dtype=np.float64)
        if arr.size % 3:
            raise ValueError(f"{path}: template {subject!r} has {arr.size} values, not a multiple of 3")
        out[str(subject)] = (arr.reshape(-1, 3) * scale).astype(np.float32)
    return out


def split_stem(stem: str, pattern: str | None = None) -> tuple[str, str]:
    """File stem -> (subject, sentence); see the module docstring for the rules."""
    if pattern:
        m = re.fullmatch(pattern, stem)
        if not m:
            raise ValueError(f"file stem {stem!r} does not match pattern {pattern!r}")
        return m.group("subject"), m.group("sentence")
    if "_sentence" in stem:
        i = stem.rindex("_sentence")
        return stem[:i], stem[i + 1:]
    m = re.fullmatch(r"(.+)_(e\d+)", stem)
    if m:
        return m.group(1), m.group(2)
    if "_" in stem:
        subject, sentence = stem.rsplit("_", 1)
        return subject, sentence
    raise ValueError(f"cannot tell subject from sentence in file stem {stem!r} (no '_')")


class VocasetDataset(SequenceDataset):
    """Sequences of a VOCASET/BIWI folder, read lazily: `len(ds)`, `ds[i]`, `for seq in ds`.

    root: the dataset folder. preset: 'vocaset' or 'biwi'. fps: capture rate of the .npy files.
    scale: metres per stored unit (applied to motion and templates). target_fps: resample motion
    to this rate (every k-th frame for integer ratios). subjects: keep only these. skip_invalid:
    log and skip bad sequences while iterating instead of raising. max_mismatch_s/frac: allowed
    audio vs motion duration difference (the larger of the two applies).
    """

    def __init__(self, root: str | Path, preset: str = "vocaset", *, fps: float | None = None,
                 scale: float | None = None, target_fps: float | None = None,
                 subjects: list[str] | None = None, pattern: str | None = None,
                 wav_dir: str = "wav", vertices_dir: str = "vertices_npy",
                 templates: str = "templates.pkl", skip_invalid: bool = False,
                 max_mismatch_s: float = 0.5, max_mismatch_frac: float = 0.05):
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
        self.root = Path(root)
        self.preset = preset
        self.fps = float(fps if fps is not None else PRESETS[preset]["fps"])
        self.scale = float(scale if scale is not None else PRESETS[preset]["scale"])
        self.target_fps = target_fps
        self.skip_invalid = skip_invalid
        self.mismatch = (max_mismatch_s, max_mismatch_frac)
        wav_root, npy_root = self.root / wav_dir, self.root / vertices_dir
        for folder in (wav_root, npy_root):
            if not folder.is_dir():
                raise FileNotFoundError(f"{folder}: missing (expected {wav_dir}/ and {vertices_dir}/)")
        self.templates = load_templates(self.root / templates, self.scale)
        self._check_template_size()
        wavs = {p.stem: p for p in wav_root.iterdir() if p.suffix.lower() in (".wav", ".flac", ".ogg")}
        npys = {p.stem: p for p in npy_root.glob("*.npy")}
        unpaired = sorted(set(wavs) ^ set(npys))
        if unpaired:
            log.warning("%s: %d files without audio or motion partner skipped (e.g. %s)",
                        self.root, len(unpaired), unpaired[:3])
        self.items = []  # (subject, sentence, wav path, npy path)
        for stem in sorted(set(wavs) & set(npys)):
            subject, sentence = split_stem(stem, pattern)
            if subjects is None or subject in subjects:
                self.items.append((subject, sentence, wavs[stem], npys[stem]))

    def _check_template_size(self) -> None:
        for subject, verts in self.templates.items():
            extent = float(np.max(np.ptp(verts, axis=0))) if len(verts) else 0.0
            if not 0.05 <= extent <= 1.0:
                warnings.warn(f"{self.root}: template {subject!r} spans {extent:.3g} m after "
                              f"scale={self.scale:g}; a head is ~0.2 m. Wrong `scale`?", stacklevel=3)
                return

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Sequence:
        subject, sentence, wav, npy = self.items[index]
        if subject not in self.templates:
            raise KeyError(f"{npy}: subject {subject!r} has no entry in templates.pkl "
                           f"(it has {sorted(self.templates)[:8]})")
        template = self.templates[subject]
        verts = np.load(npy, allow_pickle=False)
        if verts.ndim == 2 and verts.shape[1] % 3 == 0:
            verts = verts.reshape(len(verts), -1, 3)
        if verts.ndim != 3 or verts.shape[1:] != template.shape:
            per_frame = int(np.prod(verts.shape[1:])) if verts.ndim > 1 else 0
            raise ValueError(f"{npy}: {per_frame} values per frame ({verts.shape}), but the "
                             f"template of {subject!r} has {len(template)} vertices "
                             f"({3 * len(template)} values)")
        offsets = verts.astype(np.float64) * self.scale - template
        return self.finish(wav, offsets, template, subject, sentence, str(npy))
