"""Articulation rig: a phone timeline -> per-frame ARKit-52 weights -> vertex offsets.

This is how the synthetic corpus gets its face motion and how real recordings get pseudo ground
truth after forced alignment. Typical use::

    head = load_default_head()
    template = head.identity("woman_old")
    w = rig_weights(phones, fps=30, n_frames=T, seed=7, template=template)   # (T, 52)
    offsets = rig_offsets(w, template)                                        # (T, V, 3) m

Phones are canonical (``core.rig.phones.PHONES``), times in seconds; frame k shows t = k / fps.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..arkit import ARKIT_INDEX, ARKIT_NAMES
from ..assets import load_default_head
from .coarticulation import (blend_groups, check_timeline, frame_times, seal_bilabials,
                             tuck_labiodentals)
from .upper_face import upper_face_weights

LOWER_FACE = tuple(i for i, n in enumerate(ARKIT_NAMES) if n.startswith(("jaw", "mouth", "tongue")))


@dataclass(frozen=True)
class Style:
    """Per-sequence speaking style: gains on the articulation and a slight asymmetry."""
    jaw_gain: float = 1.0
    lip_gain: float = 1.0
    asymmetry: float = 0.0        # >0: the character's left side moves more

    @classmethod
    def sample(cls, rng: np.random.Generator) -> "Style":
        return cls(jaw_gain=float(rng.uniform(0.8, 1.2)), lip_gain=float(rng.uniform(0.8, 1.2)),
                   asymmetry=float(rng.uniform(-0.08, 0.08)))


def identity_scale(template: np.ndarray) -> float:
    """Size of a face relative to the default head (mean of mouth-width and eye-span ratios),
    used to scale the face units, which were authored on the default head."""
    head = load_default_head()
    lm = head.landmarks

    def size(v):
        return np.array([np.ptp(v[lm["mouth_corners"], 0]), np.ptp(v[lm["eye_corners"], 0])])

    return float(np.mean(size(np.asarray(template, np.float64)) / size(head.vertices)))


def lip_gap(points: np.ndarray) -> np.ndarray:
    """Mouth opening (m) per frame: mean vertical distance of the inner-lip pairs.
    points: (T, V, 3) or (V, 3) positions in metres -> (T,) or scalar, signed (upper - lower)."""
    pairs = load_default_head().landmarks["lip_pairs"]
    return (points[..., pairs[:, 0], 2] - points[..., pairs[:, 1], 2]).mean(axis=-1)


def lip_gap_model(template: np.ndarray) -> tuple:
    """(gap0, per_channel): this identity's neutral inner-lip gap (m) and the gap change per
    unit of each ARKit channel, (52,) m. The gap is linear in the weights, so the rig can solve
    for the mouthClose that seals the lips exactly."""
    units = load_default_head().units
    probe = np.eye(len(ARKIT_NAMES), dtype=np.float32)
    per_channel = lip_gap(units.offsets_from_weights(probe, identity_scale(template)))
    return float(lip_gap(np.asarray(template, np.float64))), per_channel.astype(np.float64)


def lower_face_weights(phones, fps: float, n_frames: int, gap_model: tuple,
                       style: Style = Style()) -> np.ndarray:
    """Lower-face ARKit weights (T, 52) float32 for a canonical timeline (seconds).
    gap_model: ``lip_gap_model(template)`` of the identity the weights are for."""
    phones = check_timeline(phones)
    times = frame_times(n_frames, fps)
    w = blend_groups(phones, times).astype(np.float64)
    w[:, ARKIT_INDEX["jawOpen"]] *= style.jaw_gain
    lips = [i for i in LOWER_FACE if i != ARKIT_INDEX["jawOpen"]]
    w[:, lips] *= style.lip_gain
    for name in ARKIT_NAMES:
        if name.startswith("mouth") and name.endswith(("Left", "Right")):
            w[:, ARKIT_INDEX[name]] *= 1 + (style.asymmetry if name.endswith("Left") else -style.asymmetry)
    w = seal_bilabials(w, phones, times, fps, *gap_model)
    w = tuck_labiodentals(w, phones, times, fps)
    return np.clip(w, 0.0, 1.0).astype(np.float32)


def rig_weights(phones, fps: float, n_frames: int, seed: int, template=None,
                loudness=None, upper_face: bool = True) -> np.ndarray:
    """Full-face ARKit weights (T, 52) float32: coarticulated lower face from the phones with a
    style drawn from ``seed``, plus seeded upper-face motion (blinks, brows, squints).
    template: (V, 3) identity the weights are for (sets the bilabial closure); default head if None.
    loudness: optional (T,) loudness envelope that brow raises loosely follow."""
    template = load_default_head().vertices if template is None else template
    rng = np.random.default_rng(seed)
    style = Style.sample(rng)
    w = lower_face_weights(phones, fps, n_frames, lip_gap_model(template), style)
    if upper_face:
        upper = upper_face_weights(n_frames, fps, int(rng.integers(2**31)), loudness)
        w = np.maximum(w, upper)   # disjoint channels: max == sum
    return w


def rig_offsets(weights: np.ndarray, template: np.ndarray) -> np.ndarray:
    """ARKit weights (T, 52) -> vertex offsets (T, V, 3) float32 metres on an identity with the
    default head's topology (face units scaled to that face's size)."""
    return load_default_head().units.offsets_from_weights(weights, identity_scale(template))
