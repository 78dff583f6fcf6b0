"""Drive the shape keys a character already has (pure numpy).

- ``detect(names)``: which known convention a mesh's shape keys follow (ARKit's 52 names,
  Oculus/Meta visemes, VRM/VRoid vowels, Preston Blair / Rhubarb mouth shapes), tolerant of the
  usual prefixes and letter case -> a ``RigMapping`` (canonical name -> the mesh's key name).
  Mappings are plain JSON (``to_json`` / ``from_json``), so users can share presets.
- ARKit keys are keyed from the model's ARKit head directly (``arkit_weights``).
- Any other keys are fitted: per frame, the weights in [lo, hi] whose blend of the keys' deltas
  is closest (least squares over all vertices) to the animation's offsets on that mesh
  (``fit_weights``, projected gradient on the K x K normal equations, all frames at once; the
  animation enters through its low-rank basis, never as (T, N, 3)).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import numpy as np

from .arkit import ARKIT_NAMES

CONVENTIONS = {
    "arkit": ARKIT_NAMES,
    "oculus": ("sil", "PP", "FF", "TH", "DD", "kk", "CH", "SS", "nn", "RR", "aa", "E", "ih",
               "oh", "ou"),
    "vrm": ("A", "I", "U", "E", "O"),
    "preston_blair": ("A", "B", "C", "D", "E", "F", "G", "H", "X"),
}
# prefixes seen in the wild, stripped before matching (case-insensitive)
PREFIXES = ("viseme_", "viseme", "vrc.v_", "v_", "fcl_mth_", "mth_", "mouth_", "blendshape1.",
            "blendshape.", "arkit_", "arkit.", "shape_")
# VRM names that spell the vowels out
VRM_ALIASES = {"aa": "A", "ih": "I", "ou": "U", "ee": "E", "oh": "O"}


def _canon(name: str) -> str:
    low = name.lower()
    for p in PREFIXES:
        if low.startswith(p) and len(low) > len(p):
            low = low[len(p):]
            break
    return re.sub(r"[\s\-_.]", "", low)


@dataclass
class RigMapping:
    """convention: a key of CONVENTIONS or "custom"; keys: canonical name -> the mesh's key
    name (for "custom", the key names themselves)."""
    convention: str
    keys: dict = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"convention": self.convention, "keys": self.keys}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> "RigMapping":
        d = json.loads(text)
        if not isinstance(d, dict) or not isinstance(d.get("keys"), dict):
            raise ValueError("a mapping preset is a JSON object with \"convention\" and \"keys\"")
        return cls(str(d.get("convention", "custom")), {str(k): str(v) for k, v in d["keys"].items()})


def detect(names) -> RigMapping | None:
    """The convention most of a mesh's shape keys follow (ARKit needs 10+ of its names, the
    others all but one or two of theirs), or None."""
    names = [n for n in names]
    canon = {}
    for n in names:
        canon.setdefault(_canon(n), n)
    best = None
    for conv, wanted in CONVENTIONS.items():
        found = {}
        for w in wanted:
            c = _canon(w)
            if c in canon:
                found[w] = canon[c]
            elif conv == "vrm":
                for alias, vowel in VRM_ALIASES.items():
                    if vowel == w and alias in canon:
                        found[w] = canon[alias]
        need = 10 if conv == "arkit" else len(wanted) - (2 if len(wanted) > 6 else 0)
        score = (len(found) / len(wanted), len(found))       # full sets first, then bigger ones
        if len(found) >= need and (best is None or score > best[0]):
            best = (score, RigMapping(conv, found))
    return best[1] if best else None


def fit_weights(coeffs: np.ndarray, basis: np.ndarray, bias: np.ndarray, deltas: np.ndarray,
                lo: float = 0.0, hi: float = 1.0, iters: int = 300) -> np.ndarray:
    """Bounded least squares for every frame at once.

    coeffs (T, R), basis (R, D), bias (D,): the animation, offsets[t] = coeffs[t] @ basis + bias
    (D = N*3, any units); deltas (K, D): the character's keys, same units. Returns weights
    (T, K) in [lo, hi] minimising |weights[t] @ deltas - offsets[t]|^2 for each t."""
    d = np.asarray(deltas, np.float64)
    gram = d @ d.T                                                      # (K, K)
    rhs = np.asarray(coeffs, np.float64) @ (np.asarray(basis, np.float64) @ d.T) + \
        np.asarray(bias, np.float64) @ d.T                              # (T, K)
    step = 1.0 / max(float(np.linalg.eigvalsh(gram).max()), 1e-30)
    w = np.clip(np.linalg.lstsq(gram + 1e-9 * np.trace(gram) * np.eye(len(gram)), rhs.T,
                                rcond=None)[0].T, lo, hi)
    # accelerated projected gradient (FISTA) from the clipped unconstrained solution
    y, t = w.copy(), 1.0
    for _ in range(iters):
        w_next = np.clip(y - step * (y @ gram - rhs), lo, hi)
        t_next = 0.5 * (1 + np.sqrt(1 + 4 * t * t))
        y = w_next + ((t - 1) / t_next) * (w_next - w)
        w, t = w_next, t_next
    return w.astype(np.float32)


def arkit_columns(mapping: RigMapping) -> tuple[list, list]:
    """For an ARKit mapping: (column indices into the model's (T, 52) weights, key names)."""
    cols = [i for i, n in enumerate(ARKIT_NAMES) if n in mapping.keys]
    return cols, [mapping.keys[ARKIT_NAMES[i]] for i in cols]
