"""The jaw as a rigid motion, for teeth and tongue kept as separate objects (pure numpy).

``jaw_motion(anim, head)``: per frame, the rotation and translation that best carry the default
head's lower teeth from rest to where the animation puts them (Kabsch, least squares over the
68 lower-teeth vertices): (R (T, 3, 3), t (T, 3)) in template metres, x -> R x + t.
``world_jaw(R, t, s, Ra, Ta)``: the same motion for a head placed by the similarity
X = s Ra x + Ta: (T, 4, 4) world matrices J with X' = J X.
"""
from __future__ import annotations

import numpy as np

LOWER_TEETH = "helper-lower-teeth"


def lower_teeth(head) -> np.ndarray:
    """Vertex indices of the default head's lower teeth."""
    return np.unique(head.faces[head.face_part == head.part_names.index(LOWER_TEETH)])


def jaw_motion(anim, head):
    idx = lower_teeth(head)
    cols = (idx[:, None] * 3 + np.arange(3)).ravel()
    rest = anim.template[idx].astype(np.float64)                       # (M, 3)
    off = (anim.coeffs.astype(np.float64) @ anim.basis[:, cols] + anim.bias[cols])
    moved = rest[None] + off.reshape(len(off), len(idx), 3)            # (T, M, 3)
    c0 = rest.mean(0)
    c1 = moved.mean(1)                                                  # (T, 3)
    cov = np.einsum("tmi,mj->tij", moved - c1[:, None], rest - c0)     # (T, 3, 3)
    u, _, vt = np.linalg.svd(cov)
    d = np.sign(np.linalg.det(u @ vt))
    fix = np.tile(np.eye(3), (len(cov), 1, 1))
    fix[:, 2, 2] = d
    r = u @ fix @ vt
    t = c1 - np.einsum("tij,j->ti", r, c0)
    return r, t


def world_jaw(r: np.ndarray, t: np.ndarray, s: float, ra: np.ndarray, ta: np.ndarray) -> np.ndarray:
    """(T, 4, 4): X' = Rw X + (Ta - Rw Ta + s Ra t), Rw = Ra R Ra^T."""
    rw = np.einsum("ij,tjk,lk->til", ra, r, ra)
    out = np.tile(np.eye(4), (len(r), 1, 1))
    out[:, :3, :3] = rw
    out[:, :3, 3] = ta - np.einsum("tij,j->ti", rw, ta) + s * np.einsum("ij,tj->ti", ra, t)
    return out
