"""Multiface / MeshTalk-style datasets: one mesh file per frame.

Default layout (every path is a pattern with `{subject}` and `{sentence}` and can be changed):

    ROOT/<subject>/tracked_mesh/<sentence>/<frame>.obj | <frame>.bin   mesh_dir
    ROOT/<subject>/audio/<sentence>.wav (.flac/.ogg/.mp3 also tried)    audio
    ROOT/<subject>/template.obj                                          template

`<frame>` is any name containing a number (e.g. 021897.obj); frames are sorted by the last
number in the name and frame i is taken to show audio time i / fps (default 30 fps). A `.bin`
frame is raw little-endian float32, V*3 values (x, y, z per vertex); an `.obj` frame contributes
its `v` lines only. Sentence folders without audio (Multiface's EXP_* expression takes) are
skipped. Units: Multiface meshes are in millimetres, hence the default scale=0.001 (metres per
stored unit). Without a template file, `template_fallback='first_frame'` uses each sequence's
first frame as the neutral face (with a warning); the default raises.
"""
from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path

import numpy as np

from .sequence import Sequence, SequenceDataset

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
TEMPLATE_CANDIDATES = ("{subject}/template.obj", "{subject}/neutral.obj",
                       "{subject}/{subject}.obj", "templates/{subject}.obj")


def read_obj(path: str | Path, with_faces: bool = False):
    """Read a Wavefront OBJ. Returns vertices float64 (V, 3) (units as stored), and with
    `with_faces` also faces int32 (F, 3): 0-based, polygons fan-triangulated, `v/vt/vn` and
    negative (relative) indices resolved. Raises ValueError naming the file if it has no vertices."""
    lines = Path(path).read_bytes().splitlines()
    vlines = [ln.split()[1:4] for ln in lines if ln.startswith(b"v ")]
    if not vlines or any(len(v) != 3 for v in vlines):
        raise ValueError(f"{path}: no usable 'v x y z' lines")
    verts = np.array(vlines, dtype=np.float64)
    if not with_faces:
        return verts
    faces = []
    for ln in lines:
        if not ln.startswith(b"f "):
            continue
        idx = [int(tok.split(b"/")[0]) for tok in ln.split()[1:]]
        idx = [i - 1 if i > 0 else len(verts) + i for i in idx]
        faces.extend((idx[0], idx[k], idx[k + 1]) for k in range(1, len(idx) - 1))
    faces_arr = np.array(faces, dtype=np.int32).reshape(-1, 3)
    if faces_arr.size and (faces_arr.min() < 0 or faces_arr.max() >= len(verts)):
        raise ValueError(f"{path}: face index out of range (mesh has {len(verts)} vertices)")
    return verts, faces_arr


def read_frame(path: Path) -> np.ndarray:
    """One frame file (.obj or .bin float32) -> float64 (V, 3) as stored."""
    if path.suffix.lower() == ".bin":
        flat = np.fromfile(path, dtype="<f4")
        if flat.size % 3:
            raise ValueError(f"{path}: {flat.size} floats, not a multiple of 3")
        return flat.reshape(-1, 3).astype(np.float64)
    return read_obj(path)


def _frame_number(path: Path) -> int:
    digits = re.findall(r"\d+", path.stem)
    return int(digits[-1]) if digits else -1


def _pattern_regex(pattern: str) -> re.Pattern:
    """'{subject}/tracked_mesh/{sentence}' -> regex with named groups over '/'-joined paths
    (a placeholder used twice must match the same text both times)."""
    body, seen = "", set()
    for part in re.split(r"(\{subject\}|\{sentence\})", pattern):
        name = part[1:-1]
        if part in ("{subject}", "{sentence}"):
            body += f"(?P={name})" if name in seen else f"(?P<{name}>[^/]+)"
            seen.add(name)
        else:
            body += re.escape(part)
    return re.compile(body)


class MultifaceDataset(SequenceDataset):
    """Sequences of a per-frame-mesh dataset, read lazily: `len(ds)`, `ds[i]`, `for s in ds`.

    root: dataset folder. mesh_dir / audio / template: path patterns under root (see module
    docstring; `audio` may omit the suffix). fps: capture rate. scale: metres per stored unit.
    target_fps: resample motion. subjects: keep only these. skip_invalid: log and skip bad
    sequences while iterating. max_mismatch_s/frac: allowed audio vs motion duration gap.
    """

    def __init__(self, root: str | Path, *, mesh_dir: str = "{subject}/tracked_mesh/{sentence}",
                 audio: str = "{subject}/audio/{sentence}", template: str | None = None,
                 fps: float = 30.0, scale: float = 0.001, target_fps: float | None = None,
                 subjects: list[str] | None = None, template_fallback: str | None = None,
                 skip_invalid: bool = False, max_mismatch_s: float = 0.5,
                 max_mismatch_frac: float = 0.05):
        if "{sentence}" not in mesh_dir:
            raise ValueError(f"mesh_dir pattern {mesh_dir!r} needs a {{sentence}} placeholder")
        if template_fallback not in (None, "first_frame"):
            raise ValueError("template_fallback must be None or 'first_frame'")
        self.root = Path(root)
        self.audio_pattern, self.template_pattern = audio, template
        self.fps, self.scale, self.target_fps = float(fps), float(scale), target_fps
        self.template_fallback, self.skip_invalid = template_fallback, skip_invalid
        self.mismatch = (max_mismatch_s, max_mismatch_frac)
        self._templates: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
        regex = _pattern_regex(mesh_dir)
        glob = mesh_dir.replace("{subject}", "*").replace("{sentence}", "*")
        self.items = []  # (subject, sentence, mesh folder, audio path)
        for folder in sorted(p for p in self.root.glob(glob) if p.is_dir()):
            m = regex.fullmatch(folder.relative_to(self.root).as_posix())
            if not m:
                continue
            names = m.groupdict()
            subject, sentence = names.get("subject", self.root.name), names["sentence"]
            if subjects is not None and subject not in subjects:
                continue
            audio_path = self._find_audio(subject, sentence)
            if audio_path is None:
                log.info("%s: no audio for sentence %r, skipped", folder, sentence)
                continue
            self.items.append((subject, sentence, folder, audio_path))

    def _find_audio(self, subject: str, sentence: str) -> Path | None:
        base = self.root / self.audio_pattern.format(subject=subject, sentence=sentence)
        if base.suffix.lower() in AUDIO_SUFFIXES:
            return base if base.is_file() else None
        for suffix in AUDIO_SUFFIXES:
            if base.with_name(base.name + suffix).is_file():
                return base.with_name(base.name + suffix)
        return None

    def _template_patterns(self) -> list[str]:
        return ([self.template_pattern] if self.template_pattern else []) + list(TEMPLATE_CANDIDATES)

    def template_of(self, subject: str) -> tuple[np.ndarray, np.ndarray] | None:
        """Subject's neutral mesh: (vertices float32 (V, 3) metres, faces int32 (F, 3)), or None
        when no template file exists (first pattern given, then TEMPLATE_CANDIDATES)."""
        if subject not in self._templates:
            found = None
            for pattern in self._template_patterns():
                path = self.root / pattern.format(subject=subject)
                if path.is_file():
                    verts, faces = read_obj(path, with_faces=True)
                    found = ((verts * self.scale).astype(np.float32), faces)
                    break
            self._templates[subject] = found
        return self._templates[subject]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Sequence:
        subject, sentence, folder, audio_path = self.items[index]
        frames = [p for p in folder.iterdir() if p.suffix.lower() in (".obj", ".bin")]
        by_number: dict[int, Path] = {}
        for p in sorted(frames, key=lambda q: q.suffix.lower() != ".bin"):  # prefer .bin
            by_number.setdefault(_frame_number(p), p)
        numbers = sorted(by_number)
        if not numbers:
            raise ValueError(f"{folder}: no .obj or .bin frame files")
        if numbers[-1] - numbers[0] + 1 != len(numbers):
            warnings.warn(f"{folder}: frame numbers {numbers[0]}..{numbers[-1]} have gaps; "
                          f"frames are used in order at {self.fps:g} fps", stacklevel=2)
        positions = []
        for n in numbers:
            verts = read_frame(by_number[n])
            if positions and verts.shape != positions[0].shape:
                raise ValueError(f"{by_number[n]}: {len(verts)} vertices, but "
                                 f"{by_number[numbers[0]]} has {len(positions[0])}")
            positions.append(verts)
        motion = np.stack(positions) * self.scale  # (T, V, 3) metres
        tmpl = self.template_of(subject)
        if tmpl is None:
            if self.template_fallback != "first_frame":
                tried = self._template_patterns()
                raise FileNotFoundError(
                    f"{self.root}: no template mesh for subject {subject!r} (tried "
                    f"{', '.join(t.format(subject=subject) for t in tried)}); pass "
                    f"template=... or template_fallback='first_frame'")
            warnings.warn(f"{folder}: no template for {subject!r}; using the first frame", stacklevel=2)
            tmpl = (motion[0].astype(np.float32), None)
        template, faces = tmpl
        if motion.shape[1] != len(template):
            raise ValueError(f"{by_number[numbers[0]]}: {motion.shape[1]} vertices, but the "
                             f"template of {subject!r} has {len(template)}")
        return self.finish(audio_path, motion - template, template, subject, sentence,
                           str(folder), faces)
