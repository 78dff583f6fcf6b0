"""Dense retargeting: the default head's motion onto a face mesh of any topology.

``retarget(vertices, faces)`` finds the face on the user's mesh (a head, or a whole body:
upright, facing -Y roughly; any scale, position and topology), aligns the default head to it
(similarity ICP from a nose-tip and crown guess, or from landmarks the user placed), bends it
to the face's proportions (MakeHuman face shapes, ``fit_shape``), registers it non-rigidly
(per-vertex displacements, Laplacian-smooth, closest points on the target's surface), and
returns a ``RetargetMap``: each target vertex takes the motion of the closest point of the
registered head's surface (a triangle, barycentric weights; on the same piece and the same lip,
``core/surface_map.py``), faded to zero between ``FADE_MM`` millimetres from that surface, so
the rest of a body never moves.

Offsets carry over as ``map.transfer(offsets)``: (..., V, 3) template metres -> (..., N, 3) in
the target's units, rotated and scaled with the alignment. The map is a sparse (N, V) matrix, so
a whole animation's basis carries over in one product.

Units: the template in metres; the target in its own units (``scale`` = target units per metre).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from .surface_map import build_map, components, lip_sides

SKIN_PART = "body:head"
FADE_MM = (2.5, 8.0)          # full motion within 2.5 mm of the registered head, none beyond 8 mm
STIFFNESS = (40.0, 15.0, 6.0, 2.5, 1.0, 0.5)   # non-rigid steps, from stiff to loose
ICP_STEPS = 25
NORMAL_REACH_MM = 3.0         # registration: a facing mismatch costs like this much distance
MAP_VERSION = "5"             # maps cached before a change of method are built again
SHAPE_PRIOR_MM = (1.5, 0.6, 0.3)  # face-shape fit: one standard deviation of a MakeHuman face
                              # shape costs as much as this misfit per coordinate of each vertex;
                              # fitted until settled at each, from stiff to loose
SHAPE_STEPS = 100             # at most this many turns of shape and similarity per prior ...
SHAPE_TOL = 1e-3              # ... fewer once no weight moves by this many s.d. in a turn
# (session 13, 160 components: a loose prior fits the mouth's own shapes, which the
# registration, moving only along the facing, no longer corrects by sliding; started loose
# (0.3 mm) the fit settled in a wrong place on some meshes, woman_old decimated 1.9 mm;
# before: one prior of 1.5 mm, 80 components, chosen on 8 random MakeHuman faces: lip error p95
# 0.33 mm on average, 0.55 mm at 3 mm and 10 steps, 0.99 mm without the shape step)
SHAPE_PLANE_WEIGHT = 3.0      # weight of the misfit along the mesh's facing beside the full
# 3-D misfit. Chosen on 24 random MakeHuman faces x 4 re-meshings (none a test identity) by the
# cases above 1 mm, then the mean lip error p95: with 80 shape components 2 cases and 0.43 mm at
# weight 1, 2 and 0.40 mm at 3; with 40, 7 and 0.53 mm without the term, 3 and 0.49 mm at 1,
# 4 and 0.47 mm at 3, 5 and 0.49 mm at 10 (20 turns each); turned until settled, 80
# components: 2 cases and 0.32 mm at 1, 2 and 0.31 mm at 3. With 160 components and the loose
# prior, weight 10 left man_young triangulated 1.75 mm (0.51 at 3)
FACE_RESIDUAL_MM = 3.0        # median fit distance of the aligned face above which it is no face
SHARP_GAIN = 3.0              # NORMAL_REACH_MM times 1 + this on the lips and eyelids, where
                              # motion turns fast


# the landmarks a user can place by hand: name -> default-head vertex (character's left is +X)
MARKERS = {"nose_tip": 297, "chin": 1517, "mouth_corner.R": 1310, "mouth_corner.L": 3378,
           "eye_outer.R": 1027, "eye_inner.R": 1041, "eye_inner.L": 3109, "eye_outer.L": 3095}


class RetargetError(ValueError):
    """The mesh cannot be retargeted; the message says why and what to do."""


@dataclass
class RetargetMap:
    """index (N, 3) int32 template vertices and weight (N, 3) float32 per target vertex
    (barycentric times the fade; all zero: the vertex does not move); rotation (3, 3) and scale
    (target units per template metre) of the alignment; n_template: V; key: what the map was
    built from (``mesh_key``); fitted (V, 3) the registered template in target units and
    distance (N,) from each target vertex to it (target units), when just built."""
    index: np.ndarray
    weight: np.ndarray
    rotation: np.ndarray
    scale: float
    n_template: int
    key: str
    fitted: np.ndarray | None = None
    distance: np.ndarray | None = None
    translation: np.ndarray | None = None     # (3,): fitted ~ scale * rotation @ template + t

    def arrays(self) -> dict:
        """What a cache needs to rebuild the map: name -> flat list or scalar."""
        markers = marker_positions(self.fitted) if self.fitted is not None else {}
        return {"key": self.key, "markers": markers, "index": self.index.ravel().tolist(),
                "weight": self.weight.ravel().tolist(), "rotation": self.rotation.ravel().tolist(),
                "scale": float(self.scale), "n_template": int(self.n_template),
                "translation": [float(x) for x in (self.translation if self.translation is not None
                                                   else np.zeros(3))]}

    @classmethod
    def from_arrays(cls, d) -> "RetargetMap":
        return cls(np.asarray(d["index"], np.int32).reshape(-1, 3),
                   np.asarray(d["weight"], np.float32).reshape(-1, 3),
                   np.asarray(d["rotation"], np.float64).reshape(3, 3), float(d["scale"]),
                   int(d["n_template"]), str(d["key"]),
                   translation=np.asarray(d.get("translation", np.zeros(3)), np.float64))

    @property
    def n_target(self) -> int:
        return len(self.index)

    def matrix(self):
        """The map as a scipy.sparse CSR matrix (N, V)."""
        from scipy.sparse import csr_matrix
        n, v = len(self.index), self.n_template
        rows = np.repeat(np.arange(n), 3)
        return csr_matrix((self.weight.ravel(), (rows, self.index.ravel())), shape=(n, v))

    def transfer(self, offsets: np.ndarray) -> np.ndarray:
        """Template offsets (..., V, 3) metres -> target offsets (..., N, 3) target units."""
        off = np.asarray(offsets, np.float32)
        lead = off.shape[:-2]
        flat = off.reshape(-1, off.shape[-2], 3)                       # (B, V, 3)
        m = self.matrix().astype(np.float32)
        out = np.stack([m @ f for f in flat])                          # (B, N, 3)
        out = out @ (self.scale * self.rotation.T).astype(np.float32)
        return out.reshape(*lead, self.n_target, 3).astype(np.float32)

    def transfer_animation(self, anim):
        """A ``core.pipeline.Animation`` carried over whole: (coeffs (T, K), basis (K, N*3),
        bias (N*3,)) in target units, so offsets[t] = coeffs[t] @ basis + bias on the target;
        only K + 1 shapes are transferred, however long the animation."""
        v = self.n_template
        shapes = np.concatenate([anim.basis.reshape(-1, v, 3), anim.bias.reshape(1, v, 3)])
        moved = self.transfer(shapes).reshape(len(shapes), -1)
        return anim.coeffs, moved[:-1], moved[-1]

    def moving(self) -> np.ndarray:
        """(N,) bool: target vertices the animation can move."""
        return self.weight.sum(1) > 0


def skin_vertices(head) -> np.ndarray:
    """(V,) bool: the head's vertices on its skin (not the eyes, teeth or tongue)."""
    skin = np.zeros(head.n_vertices, bool)
    skin[np.unique(head.faces[head.face_part == head.part_names.index(SKIN_PART)])] = True
    return skin


def mesh_key(vertices: np.ndarray, faces, landmarks=None) -> str:
    """A hash of a mesh's rest shape, topology and landmarks, and of the map's method
    (``MAP_VERSION``): a cached map is valid while it matches."""
    h = hashlib.sha256(MAP_VERSION.encode())
    h.update(np.ascontiguousarray(vertices, np.float32).tobytes())
    for f in faces:
        h.update(np.asarray(f, np.int64).tobytes())
    for i, p in landmarks or ():
        h.update(np.asarray([i, *p], np.float64).tobytes())
    return h.hexdigest()[:32]


def triangulate(faces) -> np.ndarray:
    """Polygons (a list of index sequences, or an (F, k) array) -> triangles (T, 3), fans."""
    if isinstance(faces, np.ndarray) and faces.ndim == 2:
        k = faces.shape[1]
        tris = [faces[:, [0, i, i + 1]] for i in range(1, k - 1)]
        tris = np.concatenate(tris)
        return tris[(tris[:, 0] != tris[:, 1]) & (tris[:, 1] != tris[:, 2]) & (tris[:, 0] != tris[:, 2])]
    out = [(f[0], f[i], f[i + 1]) for f in faces for i in range(1, len(f) - 1)]
    return np.asarray(out, np.int64).reshape(-1, 3)


def vertex_normals(v: np.ndarray, tris: np.ndarray) -> np.ndarray:
    fn = np.cross(v[tris[:, 1]] - v[tris[:, 0]], v[tris[:, 2]] - v[tris[:, 0]])   # area-weighted
    n = np.zeros_like(v)
    for k in range(3):
        np.add.at(n, tris[:, k], fn)
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)


def surface_samples(v: np.ndarray, tris: np.ndarray, spacing: float):
    """Points on a triangle mesh at most ~spacing apart (vertices, plus a barycentric grid on
    larger triangles) with their normals: (P, 3), (P, 3)."""
    fn = np.cross(v[tris[:, 1]] - v[tris[:, 0]], v[tris[:, 2]] - v[tris[:, 0]])
    area2 = np.linalg.norm(fn, axis=1)
    fn = fn / np.maximum(area2[:, None], 1e-20)
    vn = vertex_normals(v, tris)
    edge = np.max(np.linalg.norm(v[tris] - v[tris[:, [1, 2, 0]]], axis=2), axis=1)
    pts, nrm = [v], [vn]
    levels = np.clip(np.ceil(edge / spacing).astype(int), 1, 12)
    for n in np.unique(levels[levels > 1]):
        sel = np.flatnonzero(levels == n)
        a, b = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
        keep = (a + b <= n) & ~(((a == 0) & (b == 0)) | ((a == n) & (b == 0)) | ((a == 0) & (b == n)))
        w1, w2 = a[keep] / n, b[keep] / n
        w0 = 1 - w1 - w2
        t = v[tris[sel]]                                                  # (S, 3, 3)
        p = (w0[None, :, None] * t[:, None, 0] + w1[None, :, None] * t[:, None, 1]
             + w2[None, :, None] * t[:, None, 2])
        pts.append(p.reshape(-1, 3))
        nrm.append(np.repeat(fn[sel], len(w0), axis=0))
    return np.concatenate(pts), np.concatenate(nrm)


def _similarity(src: np.ndarray, dst: np.ndarray, w: np.ndarray):
    """Weighted Umeyama: s, R, t minimising sum w |s R src + t - dst|^2."""
    w = w / w.sum()
    mu_s, mu_d = w @ src, w @ dst
    a, b = src - mu_s, dst - mu_d
    cov = (b * w[:, None]).T @ a
    u, sig, vt = np.linalg.svd(cov)
    d = np.sign(np.linalg.det(u @ vt))
    fix = np.diag([1.0, 1.0, d])
    r = u @ fix @ vt
    var = (w * (a ** 2).sum(1)).sum()
    s = float((sig * np.diag(fix)).sum() / max(var, 1e-20))
    return s, r, mu_d - s * r @ mu_s


def landmark_region(v: np.ndarray, template: np.ndarray, landmarks):
    """With landmarks placed by hand (any orientation): (head mask, nose point, crown height)
    in the frame those landmarks set; refuses markers that no rotation matches, e.g. left and
    right swapped."""
    if len(landmarks) < 4:
        raise RetargetError("place at least 4 landmark markers (nose tip, chin, both mouth corners)")
    idx = np.array([i for i, _ in landmarks])
    dst = np.array([p for _, p in landmarks], np.float64)
    s, r, t = _similarity(template[idx], dst, np.ones(len(idx)))
    rms = np.sqrt(np.mean(np.sum((s * template[idx] @ r.T + t - dst) ** 2, 1)))
    span = s * np.ptp(template[idx], axis=0).max()
    if not s > 0 or rms > 0.12 * span:
        raise RetargetError(f"the landmark markers do not fit a face ({rms / max(span, 1e-12):.0%} "
                            "off): check that left and right are not swapped and each marker is "
                            "on its place")
    fitted = s * template @ r.T + t
    centre = fitted.mean(0)
    radius = 1.3 * np.linalg.norm(fitted - centre, axis=1).max()
    mask = np.linalg.norm(v - centre, axis=1) <= radius
    nose = fitted[np.argmin(template[:, 1])]
    return mask, nose, float(nose[2] + s * (template[:, 2].max() - template[np.argmin(template[:, 1]), 2]))


def marker_positions(fitted: np.ndarray) -> dict:
    """Where the markers sit on a fitted head: name -> (3,) target units."""
    return {name: fitted[i].tolist() for name, i in MARKERS.items()}


def find_face(vertices: np.ndarray):
    """Guess where the face is on an upright mesh facing -Y: (head vertex mask (N,), nose tip
    (3,), crown height). A tall mesh (a body) is cut to its top ~15 %."""
    v = np.asarray(vertices, np.float64)
    lo, hi = v.min(0), v.max(0)
    size = hi - lo
    if not np.all(np.isfinite(size)) or size.max() <= 0:
        raise RetargetError("the mesh has no extent (all vertices at one point)")
    head = np.ones(len(v), bool)
    if size[2] > 2.5 * max(size[0], size[1]):                        # a standing body
        head = v[:, 2] >= hi[2] - 0.16 * size[2]
        centre = np.median(v[head, :2], axis=0)
        width = 0.07 * size[2]                                        # about a head's half width
        head &= np.all(np.abs(v[:, :2] - centre) <= 1.6 * width, axis=1)
    vh = v[head]
    top = vh[:, 2].max()
    span = top - vh[:, 2].min()
    mid_x = np.median(vh[:, 0])
    band = (vh[:, 2] < top - 0.35 * span) & (vh[:, 2] > top - 0.85 * span) & \
           (np.abs(vh[:, 0] - mid_x) < 0.25 * max(np.ptp(vh[:, 0]), 1e-12))
    if not band.any():
        raise RetargetError("no face found: the mesh must be upright (+Z) and face -Y")
    nose = vh[band][np.argmin(vh[band][:, 1])]
    return head, nose, float(top)


def align(template: np.ndarray, skin: np.ndarray, target_pts: np.ndarray, target_nrm: np.ndarray,
          head_mask: np.ndarray, nose: np.ndarray, crown: float, landmarks=None):
    """Similarity (s, R, t) taking the template onto the target (nose tip and crown guess, or
    the user's landmark pairs [(template vertex, target point)], then ICP on the skin)."""
    from scipy.spatial import cKDTree

    t_nose = template[np.argmin(template[:, 1])]
    t_crown = template[:, 2].max()
    if landmarks:
        idx = np.array([i for i, _ in landmarks])
        dst = np.array([p for _, p in landmarks], np.float64)
        if len(idx) >= 3:
            s, r, t = _similarity(template[idx], dst, np.ones(len(idx)))
        else:
            s = (crown - dst[0][2]) / max(t_crown - template[idx[0], 2], 1e-9)
            r, t = np.eye(3), dst[0] - s * template[idx[0]]
    else:
        s = (crown - nose[2]) / max(t_crown - t_nose[2], 1e-9)
        r, t = np.eye(3), nose - s * t_nose
    tree = cKDTree(target_pts)
    src = template[skin]
    src_n = None
    for step in range(ICP_STEPS):
        cur = s * src @ r.T + t
        d, j = tree.query(cur, k=1)
        limit = s * (0.03 if step < 8 else 0.012)
        keep = d < limit
        if src_n is not None:
            keep &= (np.einsum("ij,ij->i", src_n @ r.T, target_nrm[j]) > 0.3)
        if keep.sum() < 30:
            raise RetargetError("the template does not find the face on this mesh: place the "
                                "landmark markers (nose tip, chin, eye and mouth corners) and retry")
        s, r, t = _similarity(src[keep], target_pts[j[keep]], np.ones(keep.sum()))
        src_n = _skin_normals(template, skin)
    return s, r, t


_SKIN_NORMALS = {}


def _skin_normals(template, skin):
    key = (id(template), len(skin))
    if key not in _SKIN_NORMALS:
        from .assets import load_default_head
        head = load_default_head()
        _SKIN_NORMALS[key] = vertex_normals(template.astype(np.float64), head.triangles())[skin]
    return _SKIN_NORMALS[key]


def _facing_matches(tree, cur: np.ndarray, nrm: np.ndarray, target_nrm: np.ndarray, reach,
                    limit: float):
    """Each point's match among its 8 nearest target points: the one that is near AND faces
    the same way (a facing mismatch costs like ``reach`` of distance: a scalar, or (n, 1) per
    point); where the surface turns fast (the lip line, eyelids) this keeps features on
    features. cur, nrm (n, 3); tree over the target points. -> (target index (n,), ok (n,):
    within ``limit`` and facing within 60 degrees)."""
    dk, jk = tree.query(cur, k=8)
    cos = np.einsum("ikj,ij->ik", target_nrm[jk], nrm)
    pick = np.argmin(dk ** 2 + (1.0 - cos) * np.square(reach), axis=1)
    rows = np.arange(len(cur))
    return jk[rows, pick], (dk[rows, pick] < limit) & (cos[rows, pick] > 0.5)


def fit_shape(template: np.ndarray, tris: np.ndarray, skin: np.ndarray, components: np.ndarray,
              s: float, r: np.ndarray, t: np.ndarray, target_pts, target_nrm, keep_pose: bool):
    """The face-shape step between the alignment and the non-rigid registration: the head's
    face bent by MakeHuman's shape components (``face_shapes.npz``) towards the mesh, and the
    similarity fitted again to the bent head, in turns until the weights settle (closest points
    as ``register`` picks them; ridge: each component's standard deviation costs each of
    SHAPE_PRIOR_MM in turn per coordinate, so the large shapes settle before the small ones).
    The registration moves vertices only along the facing, so this step alone puts the
    features in place: from the plain head they slid 1-2 mm along the lips of a narrower or
    longer mouth.

    template (V, 3) m; tris (F, 3); skin (V,) bool: the vertices fitted; components (S, V, 3) m;
    (s, r, t): the alignment (fitted = s * template @ r.T + t); target_pts/nrm (M, 3) the mesh's
    samples; keep_pose: the landmarks placed by hand own the similarity.
    -> (shaped template (V, 3) m, s, r, t)."""
    from scipy.spatial import cKDTree

    tree = cKDTree(target_pts)
    a = components[:, skin].reshape(len(components), -1).T.astype(np.float64)   # (3n, S)
    a3 = a.reshape(-1, 3, len(components))
    ata = a.T @ a                     # the point-to-point rows' normal matrix when all match
    flat = components.reshape(len(components), -1).astype(np.float64)           # (S, 3V)
    priors = [(mm / 1000) ** 2 * np.eye(len(components)) for mm in SHAPE_PRIOR_MM]
    w = np.zeros(len(components))
    shaped = template
    level, turns = 0, 0
    while level < len(priors):
        placed = s * shaped @ r.T + t
        j, ok = _facing_matches(tree, placed[skin], vertex_normals(placed, tris)[skin],
                                target_nrm, NORMAL_REACH_MM / 1000 * s, 0.01 * s)
        if ok.sum() < 20:
            break
        if not keep_pose:
            s, r, t = _similarity(shaped[skin][ok], target_pts[j[ok]], np.ones(ok.sum()))
        back = (target_pts[j] - t) @ r / s - template[skin]          # template frame, metres
        # point-to-point rows (each coordinate) and point-to-plane rows (along the mesh's
        # facing, SHAPE_PLANE_WEIGHT): the closest point's tangential offset is half chance
        # (where on the surface the sample lies), the distance along the normal is the misfit
        use = np.repeat(ok, 3)
        nt = target_nrm[j[ok]] @ r                                  # facing, template frame
        along = np.matmul(nt[:, None, :], a3[ok])[:, 0]              # (m, S) plane rows
        unused = a[~use]
        lhs = ata - unused.T @ unused + SHAPE_PLANE_WEIGHT * along.T @ along + priors[level]
        rhs = (a.T @ np.where(use, back.reshape(-1), 0.0)
               + SHAPE_PLANE_WEIGHT * along.T @ np.einsum("nd,nd->n", nt, back[ok]))
        w, last = np.linalg.solve(lhs, rhs), w
        shaped = template + (w @ flat).reshape(template.shape)
        turns += 1
        if np.abs(w - last).max() < SHAPE_TOL or turns == SHAPE_STEPS:
            level, turns = level + 1, 0          # settled: loosen the prior
    return shaped, s, r, t


def _laplacian(n: int, tris: np.ndarray):
    from scipy.sparse import coo_matrix, diags
    e = np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]])
    e = np.unique(np.sort(e, axis=1), axis=0)
    a = coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n))
    a = ((a + a.T) > 0).astype(np.float64)
    return diags(np.asarray(a.sum(1)).ravel()) - a


def register(fitted: np.ndarray, tris: np.ndarray, free: np.ndarray, target_pts, target_nrm,
             scale: float, sharp=None) -> np.ndarray:
    """Non-rigid ICP: per-vertex displacements of the ``free`` template vertices (the skin)
    along the shaped head's facing, onto the tangent plane of their closest target point that
    faces the same way, Laplacian-smooth, stiff to loose. Only along the facing: the face-shape
    step has put the features in place, and pulling vertices across the surface towards
    closest points slid the lips towards wherever a re-meshed surface has its vertices.
    fitted (V, 3) the aligned template, target units -> (V, 3) registered."""
    from scipy.sparse import diags
    from scipy.sparse.linalg import factorized
    from scipy.spatial import cKDTree

    tree = cKDTree(target_pts)
    v = fitted.copy()
    free_idx = np.flatnonzero(free)
    sub_tris = tris[np.all(free[tris], axis=1)]
    remap = -np.ones(len(v), np.int64)
    remap[free_idx] = np.arange(len(free_idx))
    lap = _laplacian(len(free_idx), remap[sub_tris])
    lap2 = lap.T @ lap
    reach = NORMAL_REACH_MM / 1000 * scale * (1.0 if sharp is None else 1.0 + SHARP_GAIN * sharp[free])[:, None]
    n0 = vertex_normals(v, tris)[free_idx]          # the shaped head's facing, kept throughout
    for alpha in STIFFNESS:
        for _ in range(3):
            cur = v[free_idx]
            j, ok = _facing_matches(tree, cur, vertex_normals(v, tris)[free_idx], target_nrm,
                                    reach, 0.01 * scale)
            w = ok.astype(np.float64)
            # distance along the facing to the match's tangent plane (point-to-plane, so where
            # the samples fall on the surface does not matter)
            m = target_nrm[j]
            depth = (np.einsum("ij,ij->i", target_pts[j] - cur, m)
                     / np.maximum(np.einsum("ij,ij->i", n0, m), 0.5))
            solve = factorized((diags(w) + alpha * lap2).tocsc())
            v[free_idx] = cur + solve(w * depth)[:, None] * n0
    # the hidden parts (teeth, tongue, eyes) move rigidly: each island first by the mean
    # displacement of the skin nearest to it, then onto the target's own matching piece if it
    # has one (translation ICP that must end close, or it is not a match)
    disp = v[free_idx] - fitted[free_idx]
    skin_tree = cKDTree(fitted[free_idx])
    comp = components(len(v), tris)
    for c in np.unique(comp[~free]):
        members = np.flatnonzero((comp == c) & ~free)
        _, near = skin_tree.query(fitted[members], k=min(30, len(free_idx)))
        moved = fitted[members] + disp[np.unique(near)].mean(0)
        shift = np.zeros(3)
        for _ in range(10):
            d, j = tree.query(moved + shift, k=1)
            ok = d < 0.004 * scale
            if ok.sum() < 0.5 * len(members):
                break
            shift += (target_pts[j[ok]] - (moved + shift)[ok]).mean(0)
        d, _ = tree.query(moved + shift, k=1)
        if (d < 0.004 * scale).mean() > 0.8 and np.median(d) < 0.0007 * scale:
            moved = moved + shift
        v[members] = moved
    return v


def retarget(vertices: np.ndarray, faces, head=None, landmarks=None, progress=None) -> RetargetMap:
    """Build the map from the default head (``head``, ``core.assets.load_default_head()`` if
    None) onto a mesh: vertices (N, 3) in its own units, faces: polygons (lists of indices or
    an (F, k) array). landmarks: optional [(template vertex index, target point (3,))]."""
    from .assets import load_default_head

    head = head or load_default_head()
    v = np.asarray(vertices, np.float64)
    if v.ndim != 2 or v.shape[1] != 3 or len(v) < 4:
        raise RetargetError("the mesh needs at least 4 vertices")
    if not np.all(np.isfinite(v)):
        raise RetargetError("the mesh has vertices at infinite or NaN positions: fix them first")
    tris = triangulate(faces)
    if len(tris) == 0:
        raise RetargetError("the mesh has no faces")
    a = np.cross(v[tris[:, 1]] - v[tris[:, 0]], v[tris[:, 2]] - v[tris[:, 0]])
    tris = tris[np.linalg.norm(a, axis=1) > 1e-14 * max(np.ptp(v), 1e-12) ** 2]  # drop degenerate
    if len(tris) == 0:
        raise RetargetError("every face of the mesh has zero area")
    key = mesh_key(vertices, faces, landmarks)
    t_tris = head.triangles().astype(np.int64)
    template = head.vertices.astype(np.float64)
    skin = skin_vertices(head)
    if landmarks:
        head_mask, nose, crown = landmark_region(v, template, landmarks)
    else:
        head_mask, nose, crown = find_face(v)
    used = np.unique(tris)
    region = np.zeros(len(v), bool)
    region[used] = True
    sub = tris[np.all(head_mask[tris], axis=1)]
    if len(sub) < 20:
        raise RetargetError("no face found on this mesh (too few faces near its top): it must "
                            "be upright (+Z up) and face -Y")
    scale_guess = (crown - nose[2]) / max(template[:, 2].max() - template[np.argmin(template[:, 1]), 2], 1e-9)
    if landmarks:
        scale_guess = _similarity(template[[i for i, _ in landmarks]],
                                  np.array([p for _, p in landmarks], np.float64),
                                  np.ones(len(landmarks)))[0]
    pts, nrm = surface_samples(v, sub, spacing=0.002 * scale_guess)
    if progress:
        progress(0.1)
    s, r, t = align(template, np.flatnonzero(skin), pts, nrm, head_mask, nose, crown, landmarks)
    fitted = s * template @ r.T + t
    from scipy.spatial import cKDTree
    face = skin & ((head.masks["mouth"] > 0.5) | (head.masks["upper_face"] > 0.5))
    residual = float(np.median(cKDTree(pts).query(fitted[face], k=1)[0])) / s * 1000
    if residual > FACE_RESIDUAL_MM:
        raise RetargetError(f"no face recognised on this mesh (the best fit of the Speechface head "
                            f"is {residual:.0f} mm off): it must be a face, upright (+Z up) and "
                            "facing -Y; turn it, or place the landmark markers")
    if progress:
        progress(0.3)
    if head.shape_components is not None:
        shaped, s, r, t = fit_shape(template, t_tris, skin, head.shape_components, s, r, t, pts,
                                    nrm, keep_pose=bool(landmarks))
        fitted = s * shaped @ r.T + t
    sharp = np.maximum(head.masks["lips"], head.masks["eyelids"])
    fitted = register(fitted, t_tris, skin, pts, nrm, s, sharp)
    if progress:
        progress(0.7)
    tn = vertex_normals(v, tris)
    index = np.zeros((len(v), 3), np.int32)
    bary = np.zeros((len(v), 3), np.float32)
    dist = np.full(len(v), np.inf)
    near = head_mask & region
    if near.any():
        remap = -np.ones(len(v), np.int64)
        remap[near] = np.arange(near.sum())
        near_tris = remap[tris[np.all(near[tris], axis=1)]]
        index[near], bary[near], dist[near] = build_map(fitted, t_tris, v[near], tn[near], s,
                                                        target_tris=near_tris,
                                                        sides=lip_sides(head))
    lo, hi = FADE_MM[0] / 1000 * s, FADE_MM[1] / 1000 * s
    fade = np.clip((hi - dist) / (hi - lo), 0.0, 1.0)
    if progress:
        progress(1.0)
    return RetargetMap(index, (bary * fade[:, None]).astype(np.float32), r, float(s),
                       len(template), key, fitted.astype(np.float32), dist.astype(np.float32),
                       np.asarray(t, np.float64))
