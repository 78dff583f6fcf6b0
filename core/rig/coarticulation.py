"""Phone timeline -> lower-face ARKit weights by dominance-function coarticulation.

After Cohen & Massaro's model: every phone segment i exerts, per articulator group g, a
dominance ``D_ig(t) = alpha_ig * exp(-d_i(t) / tau_g)`` where ``d_i(t)`` is the distance (s)
from t to the segment's core (its middle 40 %, zero inside) and ``tau_g`` is longer before the
segment than after it (anticipation). The group's channels at time t are the dominance-weighted
mean of all segments' targets. Bilabials then get a hard closure and labiodentals a tucked lower
lip, since averaging alone cannot guarantee contact.
"""
from __future__ import annotations

import numpy as np

from ..arkit import ARKIT_INDEX, ARKIT_NAMES
from .phones import PHONES
from .visemes import (BILABIALS, GROUPS, LABIODENTALS, TAU_AFTER, TAU_BEFORE, VISEMES,
                      expand_diphthongs)

CORE_FRACTION = 0.4      # the middle part of a segment where its dominance is at full strength
CLOSURE_RAMP_S = 0.035   # time for the lips to meet before / part after a bilabial closure
OPENING_CHANNELS = ("mouthFunnel", "mouthUpperUpLeft", "mouthUpperUpRight",
                    "mouthLowerDownLeft", "mouthLowerDownRight", "mouthShrugUpper", "tongueOut")


def frame_times(n_frames: int, fps: float) -> np.ndarray:
    """Time (s) shown by each frame: frame k shows t = k / fps. (T,) float64."""
    return np.arange(n_frames, dtype=np.float64) / float(fps)


def check_timeline(phones) -> list:
    """Validate [(phone, start_s, end_s)]: canonical labels, finite, non-decreasing times."""
    out = []
    for i, item in enumerate(phones):
        try:
            phone, start, end = item
            start, end = float(start), float(end)
        except (TypeError, ValueError):
            raise ValueError(f"timeline entry {i} is not (phone, start, end): {item!r}") from None
        if phone not in PHONES:
            raise ValueError(f"timeline entry {i}: unknown phone {phone!r}; normalise it with "
                             "core.rig.phones first")
        if not (np.isfinite(start) and np.isfinite(end)) or end < start:
            raise ValueError(f"timeline entry {i}: bad times {start!r}..{end!r}")
        out.append((phone, start, end))
    return out


def blend_groups(phones, times: np.ndarray) -> np.ndarray:
    """Dominance-weighted blend of viseme targets. phones: canonical timeline; times (T,) s.
    Returns (T, 52) float32 ARKit weights of the lower face (0 where no phone speaks)."""
    segs = expand_diphthongs(phones)
    weights = np.zeros((len(times), len(ARKIT_NAMES)), np.float64)
    if not segs:
        return weights.astype(np.float32)
    start = np.array([s for _, s, _ in segs])
    end = np.array([e for _, _, e in segs])
    mid = 0.5 * (start + end)
    # a pause holds the rest pose over its whole length; phones over their middle part
    core = np.array([1.0 if p == "SIL" else CORE_FRACTION for p, _, _ in segs])
    half_core = 0.5 * core * (end - start)
    t = times[:, None]                                   # (T, 1) against (N,) segments
    before = np.maximum(mid - half_core - t, 0.0)        # (T, N) s until the core starts
    after = np.maximum(t - mid - half_core, 0.0)         # (T, N) s since the core ended
    for group, channels in GROUPS.items():
        alpha = np.array([VISEMES[p][1][group] for p, _, _ in segs])
        dom = alpha * np.exp(-before / TAU_BEFORE[group] - after / TAU_AFTER[group])  # (T, N)
        norm = dom.sum(axis=1, keepdims=True) + 1e-9
        for ch in channels:
            target = np.array([VISEMES[p][0][group][ch] for p, _, _ in segs])
            weights[:, ARKIT_INDEX[ch]] = (dom @ target) / norm[:, 0]
    return weights.astype(np.float32)


def _plateau(times, intervals, fps, ramp_s):
    """1 inside each interval (widened to hold the frame nearest its centre), raised-cosine
    ramps of ``ramp_s`` on both sides, 0 elsewhere. (T,) float64."""
    out = np.zeros(len(times))
    for start, end in intervals:
        centre = 0.5 * (start + end)
        nearest = round(centre * fps) / fps
        lo, hi = min(start, nearest), max(end, nearest)
        d = np.maximum(np.maximum(lo - times, times - hi), 0.0)
        out = np.maximum(out, np.where(d < ramp_s, 0.5 + 0.5 * np.cos(np.pi * d / ramp_s), 0.0))
    return out


PRESS_WEIGHT = 0.35
SEAL_TARGET_GAP_M = 0.0002   # lips touch with 0.2 mm to spare at a bilabial closure


def seal_bilabials(weights, phones, times, fps, gap0, gap_per_channel):
    """Close the lips at every /p b m/. Lip-opening channels fade out, /p b/ press the lips,
    then mouthClose is solved per frame so the inner-lip gap, which is linear in the weights
    (``gap0 + weights @ gap_per_channel``, metres), lands on SEAL_TARGET_GAP_M.
    Modifies and returns weights (T, 52)."""
    closure = _plateau(times, [(s, e) for p, s, e in phones if p in BILABIALS], fps,
                       CLOSURE_RAMP_S)
    press = _plateau(times, [(s, e) for p, s, e in phones if p in ("P", "B")], fps,
                     CLOSURE_RAMP_S)
    for ch in OPENING_CHANNELS:
        weights[:, ARKIT_INDEX[ch]] *= (1 - closure)
    for ch in ("mouthPressLeft", "mouthPressRight"):
        weights[:, ARKIT_INDEX[ch]] = np.maximum(weights[:, ARKIT_INDEX[ch]], PRESS_WEIGHT * press)
    close = ARKIT_INDEX["mouthClose"]
    others = weights.copy()
    others[:, close] = 0.0
    needed = (SEAL_TARGET_GAP_M - gap0 - others @ gap_per_channel) / gap_per_channel[close]
    weights[:, close] = (1 - closure) * weights[:, close] + closure * np.clip(needed, 0.0, 1.0)
    return weights


def tuck_labiodentals(weights, phones, times, fps):
    """Raise the lower lip to the upper teeth at every /f v/. Modifies and returns (T, 52)."""
    tuck = _plateau(times, [(s, e) for p, s, e in phones if p in LABIODENTALS], fps, 0.03)
    roll = ARKIT_INDEX["mouthRollLower"]
    weights[:, roll] = np.maximum(weights[:, roll], 0.75 * tuck)
    for ch in ("mouthLowerDownLeft", "mouthLowerDownRight", "mouthFunnel"):
        weights[:, ARKIT_INDEX[ch]] *= (1 - tuck)
    jaw = ARKIT_INDEX["jawOpen"]
    weights[:, jaw] = np.minimum(weights[:, jaw], 0.08 + (1 - tuck))
    return weights
