"""Where each vertex of one mesh lies on another: closest triangles with agreeing facing, kept
on the right island and on the right lip.

``build_map(fitted, tris, target, target_nrm, scale)`` gives every target vertex a template
triangle and barycentric weights, so per-vertex motion of the template carries over as a
sparse (N, V) product. Used by the retarget map (``core/retarget.py``) and by the capture
import (``train/captures.py``), which maps the other way.

Lips that touch (or nearly) are the hard case: an inner-lip vertex can lie closer to the other
lip's surface than to its own after registration, and would then take the other lip's motion
(a 14 mm error where the mouth opens). With the template's lip sides (``lip_sides``) and the
target's own triangles, each target vertex's side is voted by its mesh neighbours, and a vertex
whose closest triangle is on the other side is mapped again onto its own side.
"""
from __future__ import annotations

import numpy as np

MAP_REACH_MM = 0.5        # among candidate triangles, a facing mismatch costs like this much
                          # distance (1 - cos scaled): breaks near-ties where a lip folds
SIDE_MARGIN_MM = 2.0      # template vertices this close to both lips' seeds belong to neither
MIN_COS_TIERS = (0.3, 0.0, None)  # closest triangle facing within ~72 degrees first, then any
                                  # facing the vertex, then any (0.65, ~50 degrees, sent
                                  # vertices at a sharp lip edge 1-2 mm along: man_long 1.49 ->
                                  # 1.24 mm); the other lip is kept out by the lip sides


def lip_sides(head) -> np.ndarray:
    """(V,) int8 of the head: +1 on the upper lip's side of the mouth, -1 on the lower lip's, 0
    elsewhere (outside the mouth region, near the mouth corners, eyes, teeth). A vertex of the
    mouth region belongs to the lip whose inner edge (``lip_upper``/``lip_lower`` landmarks,
    corners left out) it is nearer to along the surface, by more than SIDE_MARGIN_MM."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import dijkstra

    v = head.vertices.astype(np.float64)
    region = np.maximum(head.masks["mouth"], head.masks["lips"]) > 0.5
    tris = head.triangles().astype(np.int64)
    tris = tris[np.all(region[tris], axis=1)]
    e = np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]])
    w = np.linalg.norm(v[e[:, 0]] - v[e[:, 1]], axis=1) * 1000.0
    g = coo_matrix((w, (e[:, 0], e[:, 1])), shape=(len(v), len(v))).tocsr()
    corners = set(np.asarray(head.landmarks["mouth_corners"]).tolist())
    dist = []
    for name in ("lip_upper", "lip_lower"):
        seeds = [int(i) for i in head.landmarks[name] if int(i) not in corners]
        dist.append(dijkstra(g, directed=False, indices=seeds, min_only=True))
    up, lo = dist
    sides = np.where(up + SIDE_MARGIN_MM < lo, 1, np.where(lo + SIDE_MARGIN_MM < up, -1, 0))
    sides[~region | ~np.isfinite(np.minimum(up, lo))] = 0
    return sides.astype(np.int8)


def components(n: int, tris: np.ndarray) -> np.ndarray:
    """Connected component (island) of each of n vertices over triangles: (n,) int."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    e = np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]]])
    g = coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n))
    return connected_components(g, directed=False)[1]


def _closest_on_triangles(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray):
    """Closest points of points p (M, 3) on triangles (a, b, c) (M, 3) each: barycentric (M, 3)
    and distances (M,). The region tests of Ericson, Real-Time Collision Detection (5.1.5),
    vectorised: every region is computed, then assigned from the last test to the first so the
    first that holds wins, as in the sequential version."""
    ab, ac = b - a, c - a
    ap, bp, cp = p - a, p - b, p - c
    d1, d2 = (ab * ap).sum(1), (ac * ap).sum(1)
    d3, d4 = (ab * bp).sum(1), (ac * bp).sum(1)
    d5, d6 = (ab * cp).sum(1), (ac * cp).sum(1)
    va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2

    def safe(x):
        return np.where(np.abs(x) > 1e-30, x, 1e-30)

    denom = safe(va + vb + vc)
    v, w = vb / denom, vc / denom
    bary = np.stack([1 - v - w, v, w], 1)                                    # inside
    z = np.zeros(len(p))
    t = np.clip((d4 - d3) / safe((d4 - d3) + (d5 - d6)), 0, 1)               # edge BC
    regions = [((va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0), np.stack([z, 1 - t, t], 1))]
    t = np.clip(d2 / safe(d2 - d6), 0, 1)                                    # edge AC
    regions.append(((vb <= 0) & (d2 >= 0) & (d6 <= 0), np.stack([1 - t, z, t], 1)))
    regions.append(((d6 >= 0) & (d5 <= d6), np.stack([z, z, z + 1], 1)))     # vertex C
    t = np.clip(d1 / safe(d1 - d3), 0, 1)                                    # edge AB
    regions.append(((vc <= 0) & (d1 >= 0) & (d3 <= 0), np.stack([1 - t, t, z], 1)))
    regions.append(((d3 >= 0) & (d4 <= d3), np.stack([z, z + 1, z], 1)))     # vertex B
    regions.append(((d1 <= 0) & (d2 <= 0), np.stack([z + 1, z, z], 1)))      # vertex A
    for mask, value in regions:
        bary[mask] = value[mask]
    q = bary[:, :1] * a + bary[:, 1:2] * b + bary[:, 2:] * c
    return bary, np.linalg.norm(p - q, axis=1)


def build_map(fitted: np.ndarray, tris: np.ndarray, target: np.ndarray, target_nrm: np.ndarray,
              scale: float, k: int = 10, target_tris: np.ndarray | None = None,
              sides: np.ndarray | None = None):
    """Each target vertex -> the closest of the k nearest registered template triangles whose
    facing agrees (so an upper-lip vertex never takes the lower lip's motion). With the
    target's triangles given, each target island (a separate piece: teeth, an eyeball) maps
    onto the one template island most of it lies closest to (so teeth never take the lips'),
    and with the template's ``sides`` (``lip_sides``) too, each lip vertex stays on the lip
    its mesh neighbours are on (``_keep_lip_sides``).
    Among candidate triangles a facing mismatch counts as distance (``MAP_REACH_MM``), so of
    two within a fraction of a millimetre the one facing like the vertex wins.
    fitted (V, 3), tris (F, 3) template; target (N, 3), target_nrm (N, 3); scale: target units
    per metre. -> (index (N, 3), barycentric (N, 3), distance (N,))."""
    from scipy.spatial import cKDTree

    n = len(target)
    reach = MAP_REACH_MM / 1000 * scale
    t_comp = components(len(fitted), tris)
    if target_tris is not None and len(target_tris):
        # each target island goes to the template island it lies closest to on average
        trees = {c: cKDTree(fitted[t_comp == c]) for c in np.unique(t_comp[tris[:, 0]])}
        isl = components(n, target_tris)
        choice = np.zeros(n, np.int64)
        for i in np.unique(isl):
            m = np.flatnonzero(isl == i)
            sample = m[:: max(1, len(m) // 200)]
            mean_d = {c: tree.query(target[sample], k=1)[0].mean() for c, tree in trees.items()}
            choice[m] = min(mean_d, key=mean_d.get)
    else:
        choice = np.full(n, -1)
    tri_comp = t_comp[tris[:, 0]]
    index = np.zeros((n, 3), np.int32)
    bary_out = np.zeros((n, 3), np.float32)
    dist = np.full(n, np.inf)
    for c in np.unique(choice):
        who = np.flatnonzero(choice == c)
        sub = np.flatnonzero(tri_comp == c) if c >= 0 else np.arange(len(tris))
        i, b, d = _map_onto(fitted, tris[sub], target[who], target_nrm[who], k, reach)
        index[who], bary_out[who], dist[who] = i, b, d
    if sides is not None and target_tris is not None and len(target_tris):
        _keep_lip_sides(fitted, tris, tri_comp, target, target_nrm, target_tris, sides, k,
                        index, bary_out, dist, reach)
    return index, bary_out, dist


def _keep_lip_sides(fitted, tris, tri_comp, target, target_nrm, target_tris, sides, k, index,
                    bary, dist, reach):
    """Map again, in place, the target vertices whose triangle lies on the other lip than the
    one their mesh neighbours are mapped to. Each vertex's side is the sign of its triangle's
    barycentric mix of ``sides``; the vote is its own side plus its neighbours' (twice, so a
    lone wrong vertex inside a ring of right ones flips)."""
    from scipy.sparse import coo_matrix

    n = len(target)
    mapped = np.sign((bary * sides[index]).sum(1))
    if not mapped.any():
        return
    e = np.concatenate([target_tris[:, [0, 1]], target_tris[:, [1, 2]], target_tris[:, [2, 0]]])
    adj = coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n))
    adj = ((adj + adj.T) > 0).astype(np.float64).tocsr()
    side = mapped.copy()
    for _ in range(2):
        side = np.where(mapped != 0, np.sign(adj @ side + side), 0)
    for want in (1, -1):
        who = np.flatnonzero((side == want) & (mapped == -want))
        if not len(who):
            continue
        island = tri_comp[np.flatnonzero(np.any(sides[tris] == want, axis=1))[:1]]
        allowed = np.flatnonzero(~np.any(sides[tris] == -want, axis=1) & np.isin(tri_comp, island))
        i, b, d = _map_onto(fitted, tris[allowed], target[who], target_nrm[who], k, reach)
        index[who], bary[who], dist[who] = i, b, d


def _map_onto(fitted, tris, target, target_nrm, k, reach: float):
    from scipy.spatial import cKDTree

    cen = fitted[tris].mean(1)
    fn = np.cross(fitted[tris[:, 1]] - fitted[tris[:, 0]], fitted[tris[:, 2]] - fitted[tris[:, 0]])
    fn /= np.maximum(np.linalg.norm(fn, axis=1, keepdims=True), 1e-20)
    _, cand = cKDTree(cen).query(target, k=min(k, len(tris)))
    cand = cand.reshape(len(target), -1)
    n = len(target)
    best_d = np.full(n, np.inf)
    best_score = np.full(n, np.inf)
    best_bary = np.zeros((n, 3))
    best_tri = np.zeros(n, np.int64)
    # triangles facing the same way first (MIN_COS_TIERS), then any that faces it, then any
    for min_cos in MIN_COS_TIERS:
        todo = ~np.isfinite(best_d)
        for col in range(cand.shape[1]):
            t = cand[:, col]
            bary, d = _closest_on_triangles(target, fitted[tris[t, 0]], fitted[tris[t, 1]],
                                            fitted[tris[t, 2]])
            cos = (fn[t] * target_nrm).sum(1)
            if min_cos is not None:
                d = np.where(cos > min_cos, d, np.inf)
            score = np.sqrt(d ** 2 + np.maximum(1.0 - cos, 0.0) * reach ** 2)
            better = todo & (score < best_score)
            best_score[better] = score[better]
            best_d[better], best_bary[better], best_tri[better] = d[better], bary[better], t[better]
        if np.isfinite(best_d).all():
            break
    return tris[best_tri].astype(np.int32), best_bary.astype(np.float32), best_d


