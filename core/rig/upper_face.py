"""Upper-face motion that is not a function of the phones: blinks, brows, squints.

Everything here is driven by a seeded random generator and, loosely, by the loudness envelope
(brow raises land near some loudness peaks, as pitch accents do). Phone identity never enters,
so a model cannot predict this part from the audio's content: that is what the expression
branch and the prior of the model are for.
"""
from __future__ import annotations

import numpy as np

from ..arkit import ARKIT_INDEX, ARKIT_NAMES

BLINK_MIN_S, BLINK_MAX_S = 0.10, 0.40


def _smooth_noise(rng, n, fps, period_s):
    """Zero-mean noise of unit std, low-passed to about ``period_s``. (n,) float64."""
    if n == 0:
        return np.zeros(0)
    width = max(1, int(round(period_s * fps)))
    raw = rng.standard_normal(n + 4 * width)
    kernel = np.hanning(2 * width + 1)
    out = np.convolve(raw, kernel / kernel.sum(), mode="same")[2 * width: 2 * width + n]
    return (out - out.mean()) / (out.std() + 1e-9)


def blink_events(rng, duration_s) -> list:
    """Blink (start_s, length_s) pairs: gaps ~ gamma (mean ~3.5 s), lengths 100-400 ms."""
    events, t = [], rng.uniform(0.2, 2.5)
    while t < duration_s:
        length = float(np.clip(rng.gamma(6.0, 0.03), BLINK_MIN_S, BLINK_MAX_S))
        events.append((t, length))
        t += length + rng.gamma(2.5, 1.4)
    return events


def _blink_curve(times, events):
    """Eyelid closure 0..1: fast close (35 % of the blink), slower reopening."""
    out = np.zeros(len(times))
    for start, length in events:
        u = (times - start) / length
        close = np.clip(u / 0.35, 0, 1)
        reopen = np.clip((1 - u) / 0.65, 0, 1)
        out = np.maximum(out, np.where((u >= 0) & (u <= 1), np.minimum(close, reopen) ** 0.7, 0))
    return out


def _peaks(env, fps, min_gap_s):
    """Indices of local maxima of ``env`` at least ``min_gap_s`` apart, strongest first."""
    if len(env) < 3:
        return np.zeros(0, int)
    cand = np.where((env[1:-1] > env[:-2]) & (env[1:-1] >= env[2:]))[0] + 1
    cand = cand[np.argsort(-env[cand])]
    kept = []
    for c in cand:
        if all(abs(c - k) >= min_gap_s * fps for k in kept):
            kept.append(c)
    return np.array(sorted(kept), int)


def _bump(times, centre, rise, fall):
    d = times - centre
    return np.where(d < 0, np.exp(-0.5 * (d / rise) ** 2), np.exp(-0.5 * (d / fall) ** 2))


def upper_face_weights(n_frames: int, fps: float, seed: int, loudness=None) -> np.ndarray:
    """Seeded upper-face ARKit weights (T, 52) float32; only brow/eye/cheek/nose channels move.

    loudness: optional (T,) per-frame loudness (any unit, e.g. RMS dB); brow raises are placed
    near a random subset of its peaks, frowns at random times.
    """
    rng = np.random.default_rng(seed)
    times = np.arange(n_frames) / float(fps)
    w = np.zeros((n_frames, len(ARKIT_NAMES)), np.float64)
    set_ = lambda name, value: w.__setitem__((slice(None), ARKIT_INDEX[name]), value)  # noqa

    blink = _blink_curve(times, blink_events(rng, n_frames / fps))
    lag = rng.integers(0, 2)  # the eyes close within a frame of each other
    set_("eyeBlinkLeft", blink)
    set_("eyeBlinkRight", np.roll(blink, lag) if lag else blink)

    raise_ = np.zeros(n_frames)
    if loudness is not None and len(loudness) == n_frames and n_frames > 2:
        env = np.asarray(loudness, np.float64)
        env = (env - env.min()) / (np.ptp(env) + 1e-9)
        for p in _peaks(env, fps, 0.6):
            if rng.random() < 0.35:
                centre = times[p] + rng.uniform(-0.15, 0.1)
                raise_ = np.maximum(raise_, rng.uniform(0.3, 0.8) * _bump(times, centre, 0.12, 0.35))
    frown = np.zeros(n_frames)
    for _ in range(rng.poisson(n_frames / fps / 8.0)):
        centre = rng.uniform(0, n_frames / fps)
        frown = np.maximum(frown, rng.uniform(0.2, 0.6) * _bump(times, centre, 0.25, 0.6))
    inner_bias = rng.uniform(0.4, 1.0)
    set_("browInnerUp", np.clip(raise_ * inner_bias + 0.05 * _smooth_noise(rng, n_frames, fps, 1.5), 0, 1))
    for side in ("Left", "Right"):
        outer = raise_ * rng.uniform(0.6, 1.0)
        set_(f"browOuterUp{side}", outer)
        set_(f"browDown{side}", frown * rng.uniform(0.8, 1.0))
        squint = np.clip(0.12 + 0.08 * _smooth_noise(rng, n_frames, fps, 2.0), 0, 1)
        set_(f"eyeSquint{side}", squint * (1 - blink))
        set_(f"cheekSquint{side}", np.clip(0.08 + 0.06 * _smooth_noise(rng, n_frames, fps, 2.5), 0, 1))
        set_(f"eyeWide{side}", np.clip(0.6 * raise_ - 0.1, 0, 1) * (1 - blink))
        set_(f"noseSneer{side}", np.clip(0.05 * _smooth_noise(rng, n_frames, fps, 3.0), 0, 1))
    return w.astype(np.float32)
