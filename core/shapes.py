"""From an ``Animation`` to what a bake writes as shape keys (pure numpy; no Blender here).

- ``BakeOptions`` and ``shape_animation``: the animator's controls applied to an animation:
  lip intensity (mouth region), upper-face motion on/off and strength, temporal smoothing.
  All of them keep the animation low-rank (a per-vertex scaling of the basis, a filter over
  the coefficients), so nothing here materialises (T, V, 3) offsets.
- ``compact_keys``: the fewest shape keys (principal directions of the offsets) that
  reproduce every frame with every vertex within a tolerance (0.1 mm by default), with values
  in -1..1 per frame.
- ``fit_template`` / ``to_local``: the same head in any object scale or placement, in the
  model's metres and back.

Units: metres, frames at the animation's fps.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .pipeline import Animation

COMPACT_TOLERANCE_M = 1e-4     # 0.1 mm: the largest vertex error the compact keys may make


@dataclass(frozen=True)
class BakeOptions:
    """lip_intensity: scale of the mouth region's motion (1 = as predicted, 0..3);
    upper_face: keep the upper face's motion (blinks, brows) at all; upper_strength: its scale
    (0..3); smoothing: Gaussian sigma in frames over time (0 = none, up to 10)."""
    lip_intensity: float = 1.0
    upper_face: bool = True
    upper_strength: float = 1.0
    smoothing: float = 0.0

    def check(self) -> "BakeOptions":
        for name, lo, hi in (("lip_intensity", 0, 3), ("upper_strength", 0, 3), ("smoothing", 0, 10)):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and lo <= v <= hi):
                raise ValueError(f"{name} must be between {lo} and {hi}, got {v!r}")
        return self


def region_weights(masks: dict, options: BakeOptions) -> np.ndarray:
    """Per-vertex motion scale (V,): lip_intensity on the mouth mask, the upper-face strength
    (0 when upper_face is off) on the upper-face mask outside the mouth, 1 elsewhere; the soft
    mask edges blend between them."""
    mouth = np.asarray(masks["mouth"], np.float64)
    upper = np.asarray(masks["upper_face"], np.float64) * (1.0 - mouth)
    up = options.upper_strength if options.upper_face else 0.0
    return (1.0 + (options.lip_intensity - 1.0) * mouth + (up - 1.0) * upper).astype(np.float32)


def smooth_frames(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian filter (sigma in frames) along axis 0 of (T, D), edges reflected; sigma 0: x."""
    if sigma <= 0 or len(x) < 2:
        return x
    r = int(np.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    pad = np.pad(x.astype(np.float64), ((r, r), (0, 0)), mode="reflect" if len(x) > r else "edge")
    out = np.zeros(x.shape, np.float64)
    for i, w in enumerate(k):
        out += w * pad[i:i + len(x)]
    return out.astype(np.float32)


def shape_animation(anim: Animation, masks: dict, options: BakeOptions) -> Animation:
    """The animation with the options applied (a new Animation; ``anim`` is not changed).
    Region scaling multiplies the basis and bias per vertex; smoothing filters the coefficients
    (the mouth's rest at silence stays exact: a constant is unchanged by the filter)."""
    options.check()
    w = np.repeat(region_weights(masks, options), 3)                     # (V*3,)
    return replace(anim, coeffs=smooth_frames(anim.coeffs, options.smoothing),
                   basis=(anim.basis * w).astype(np.float32), bias=(anim.bias * w).astype(np.float32))


@dataclass
class CompactKeys:
    """deltas (R, V, 3) float32 m: one shape key each; values (T, R) float32 in -1..1: key r's
    value at frame t, so offsets[t] ~= values[t] @ deltas; max_error_m: the largest vertex error
    of that reconstruction over all frames (measured, or the bound that made a check needless)."""
    deltas: np.ndarray
    values: np.ndarray
    max_error_m: float


def _max_vertex_error(anim: Animation, values: np.ndarray, deltas: np.ndarray, chunk: int = 512) -> float:
    worst = 0.0
    for s, off in anim.iter_offsets(chunk):
        err = off.reshape(len(off), -1) - values[s:s + len(off)] @ deltas
        worst = max(worst, float(np.sqrt((err.reshape(len(off), -1, 3) ** 2).sum(-1)).max()))
    return worst


def compact_keys(anim: Animation, tolerance_m: float = COMPACT_TOLERANCE_M) -> CompactKeys:
    """Principal directions of the animation's offsets, as few as keep every vertex of every
    frame within ``tolerance_m`` (the offsets live in the span of the basis and the bias, so
    there are at most R + 1 and the SVD never touches (T, V*3) at once)."""
    t = anim.n_frames
    c = np.concatenate([anim.coeffs, np.ones((t, 1), np.float32)], 1).astype(np.float64)   # (T, R+1)
    b = np.concatenate([anim.basis, anim.bias[None]], 0).astype(np.float64)               # (R+1, V*3)
    u_b, s_b, vt_b = np.linalg.svd(b, full_matrices=False)
    keep = s_b > s_b[0] * 1e-9 if s_b[0] > 0 else np.zeros_like(s_b, bool)
    m = c @ (u_b[:, keep] * s_b[keep])                                  # (T, r): offsets = m @ vt_b
    p, s, wt = np.linalg.svd(m, full_matrices=False)
    dirs = wt @ vt_b[keep]                                              # (r, V*3) orthonormal rows
    weights = p * s                                                     # (T, r)
    n_vertices = anim.basis.shape[1] // 3

    def keys(rank):
        w = weights[:, :rank]
        scale = np.abs(w).max(0) if t else np.ones(rank)
        scale = np.where(scale > 0, scale, 1.0)
        return (w / scale).astype(np.float32), (dirs[:rank] * scale[:, None]).astype(np.float32)

    # a frame's residual norm bounds each of its vertex errors: the smallest rank whose residual
    # norms are all within tolerance is surely enough; search below it with exact errors
    tail = np.sqrt(np.cumsum((weights ** 2)[:, ::-1], 1)[:, ::-1]) if t else np.zeros((0, len(s)))
    tail_max = np.append(tail.max(0) if t else np.zeros(len(s)), 0.0)  # rank r leaves tail[:, r]
    hi = int(np.argmax(tail_max <= tolerance_m))
    best = (hi, keys(hi), float(tail_max[hi]))      # (rank, (values, deltas), error bound)
    lo, step = 0, 1
    while best[0] - step >= lo:                      # gallop down: models use most directions
        rank = best[0] - step
        values, deltas = keys(rank)
        err = _max_vertex_error(anim, values, deltas)
        if err > tolerance_m:
            lo = rank + 1
            break
        best, step = (rank, (values, deltas), err), step * 2
    while lo < best[0]:                              # then bisect what is left
        mid = (lo + best[0]) // 2
        values, deltas = keys(mid)
        err = _max_vertex_error(anim, values, deltas)
        if err <= tolerance_m:
            best = (mid, (values, deltas), err)
        else:
            lo = mid + 1
    rank, (values, deltas), err = best
    return CompactKeys(deltas.reshape(rank, n_vertices, 3), values, err)


def fit_template(local: np.ndarray, reference: np.ndarray, scale: float):
    """A mesh's rest vertices (V, 3) in its own units -> (template (V, 3) m for the model,
    metres per local unit). ``scale``: the object's uniform scale (metres per local unit times
    the scene's unit scale); the placement is moved onto the reference head's centre so an
    offset object animates like the default one."""
    m = np.asarray(local, np.float64) * scale
    m += np.asarray(reference, np.float64).mean(0) - m.mean(0)
    return m.astype(np.float32), float(scale)


def to_local(offsets_m: np.ndarray, scale: float) -> np.ndarray:
    """Offsets in metres -> the mesh's local units."""
    return (offsets_m / scale).astype(np.float32)
