"""Retargeting onto other topologies (core/retarget.py), checked the way the issue asks: the
default head and other identities re-meshed in Blender (decimate, subdivide, triangulate,
mirror-split, remesh), moved, turned and scaled, then the transferred motion compared with the true
motion re-projected onto the new mesh."""
from __future__ import annotations

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")

from core.assets import load_default_head  # noqa: E402
from core.retarget import (RetargetError, RetargetMap, _similarity, build_map,  # noqa: E402
                           retarget, skin_vertices, triangulate, vertex_normals)
from core.surface_map import lip_sides  # noqa: E402

HEAD = load_default_head()
ANGLE = np.radians(8.0)
ROT = np.array([[np.cos(ANGLE), -np.sin(ANGLE), 0], [np.sin(ANGLE), np.cos(ANGLE), 0], [0, 0, 1]])
SCALE, SHIFT = 1.7, np.array([0.3, -0.2, 1.1])


MOTION_CLIPS = ("arctic_a0009", "librivox_0870")     # 3.1 s + 7.1 s of read speech


@pytest.fixture(scope="module")
def motion(clips):
    """The model's motion on the default head from two real recordings, one after the other
    (306 frames): (T, V, 3) m."""
    import soundfile as sf

    from core.pipeline import animate
    out = []
    for name in MOTION_CLIPS:
        x, rate = sf.read(str(clips[name][0]), dtype="float32")
        out.append(animate(x, rate, fps=30.0, seed=0).offsets())
    return np.concatenate(out)


def remeshed(kind: str, vertices=None):
    """The head (or an identity) with its topology changed by a Blender modifier:
    (vertices (N, 3) m, polygons)."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    if kind == "remesh":
        return remeshed_skin(HEAD.vertices if vertices is None else vertices)
    mesh = bpy.data.meshes.new("head")
    mesh.from_pydata((HEAD.vertices if vertices is None else vertices).tolist(), [],
                     HEAD.faces.tolist())
    obj = bpy.data.objects.new("head", mesh)
    bpy.context.scene.collection.objects.link(obj)
    if kind == "decimate":
        obj.modifiers.new("m", "DECIMATE").ratio = 0.4
    elif kind == "subdivide":
        m = obj.modifiers.new("m", "SUBSURF")
        m.levels, m.subdivision_type = 1, "SIMPLE"
    elif kind == "triangulate":
        obj.modifiers.new("m", "TRIANGULATE")
    elif kind == "mirror-split":                 # cut at x = 0, mirrored back without merging
        m = obj.modifiers.new("m", "MIRROR")
        m.use_bisect_axis[0], m.use_mirror_merge = True, False
    return evaluated(obj)


def evaluated(obj):
    """An object's mesh with its modifiers applied: (vertices (N, 3) m, polygons)."""
    ev = obj.evaluated_get(bpy.context.evaluated_depsgraph_get())
    me = ev.to_mesh()
    v = np.array([x.co for x in me.vertices], np.float64)
    faces = [list(p.vertices) for p in me.polygons]
    ev.to_mesh_clear()
    return v, faces


def remeshed_skin(vertices):
    """The skin re-meshed as a sculptor would: its holes (neck, eye sockets) filled, then
    Blender's Remesh modifier (octree, depth 9: ~0.5 mm cells, fine enough to keep the lips
    2.5 mm apart as two surfaces; coarser ones fuse them into one sheet, which no map can
    open); the eyes, teeth and tongue stay separate pieces as they were.
    -> (vertices (N, 3) m, polygons), ~840 k vertices."""
    import bmesh

    from core.surface_map import components
    comp = components(HEAD.n_vertices, HEAD.triangles().astype(np.int64))
    skin = comp == np.bincount(comp).argmax()
    order = np.cumsum(skin) - 1
    mesh = bpy.data.meshes.new("skin")
    mesh.from_pydata(vertices[skin].tolist(), [],
                     [order[f].tolist() for f in HEAD.faces if skin[f].all()])
    bm = bmesh.new()
    bm.from_mesh(mesh)
    bmesh.ops.holes_fill(bm, edges=[e for e in bm.edges if e.is_boundary], sides=0)
    bm.to_mesh(mesh)
    bm.free()
    obj = bpy.data.objects.new("skin", mesh)
    bpy.context.scene.collection.objects.link(obj)
    m = obj.modifiers.new("m", "REMESH")
    m.mode, m.octree_depth, m.use_remove_disconnected = "SHARP", 9, False
    v, faces = evaluated(obj)
    rest = np.flatnonzero(~skin)
    moved = np.full(HEAD.n_vertices, -1)
    moved[rest] = len(v) + np.arange(len(rest))
    faces += [moved[f].tolist() for f in HEAD.faces if not skin[f].any()]
    return np.concatenate([v, vertices[rest]]), faces


def true_map(v, faces, source):
    """Where the source head's motion lands on the new mesh: a vertex the re-meshing kept takes
    its own motion, any other the motion of the closest point of the source surface (the same
    island, the same lip): (source vertices (N, 3), barycentric weights (N, 3))."""
    from scipy.spatial import cKDTree

    tris = triangulate(faces)
    idx, bary, _ = build_map(source.astype(np.float64), HEAD.triangles().astype(np.int64), v,
                             vertex_normals(v, tris), 1.0, target_tris=tris, sides=lip_sides(HEAD))
    d, same = cKDTree(source).query(v, k=1)
    kept = d < 1e-9
    idx[kept], bary[kept] = same[kept, None], np.array([1.0, 0.0, 0.0])
    return idx, bary


def rows(m, sel):
    """The map restricted to some target vertices (an 800 k-vertex mesh's every frame would
    not fit in memory)."""
    return RetargetMap(m.index[sel], m.weight[sel], m.rotation, m.scale, m.n_template, m.key)


def lip_error_mm(v, faces, source, motion):
    """Per frame, the largest lip-vertex error (mm) of the transfer onto the moved, turned,
    scaled mesh; and the largest motion of vertices that must stay.

    The map carries motion with its alignment's rotation and scale, and that scale includes the
    face's size relative to the default head (a face 10 % smaller moves 10 % less, as in the
    corpus). So the error is measured back in the default head's frame (undoing the map's own
    rotation and scale), and ``test_other_identities`` checks that scale separately."""
    idx, bary = true_map(v, faces, source)
    placed = SCALE * v @ ROT.T + SHIFT
    m = retarget(placed, faces)
    tris = triangulate(faces)
    near, _, _ = build_map(source.astype(np.float64), HEAD.triangles().astype(np.int64), v,
                           vertex_normals(v, tris), 1.0, target_tris=tris)
    lips = np.flatnonzero((HEAD.masks["lips"] > 0.5)[near].any(1))
    truth = np.einsum("nk,tnkd->tnd", bary[lips], motion[:, idx[lips]])
    got = rows(m, lips).transfer(motion) @ m.rotation / m.scale    # the head's frame, metres
    err = np.linalg.norm(got - truth, axis=2).max(1) * 1000
    amplitude = np.abs(motion).max((0, 2))                             # (V,) per source vertex
    still = np.flatnonzero((amplitude[idx] * (bary > 0)).max(1) < 1e-7)
    stay = rows(m, still)
    still_mm = max(float(np.abs(stay.transfer(motion[t:t + 32])).max(initial=0.0))
                   for t in range(0, len(motion), 32)) * 1000
    return err, still_mm, m


@pytest.mark.parametrize("kind", ["triangulate", "subdivide", "decimate", "mirror-split", "remesh"])
def test_default_head_any_topology(kind, motion):
    v, faces = remeshed(kind)
    err, still_mm, m = lip_error_mm(v, faces, HEAD.vertices, motion)
    assert abs(m.scale - SCALE) < 0.01 * SCALE
    assert np.percentile(err, 95) < 1.0, np.percentile(err, 95)
    assert still_mm <= 0.1


KINDS = ("triangulate", "decimate", "subdivide", "mirror-split")
# Lip error p95 with the motion of both clips (306 frames), since session 13 (160 face-shape
# components fitted from a stiff prior to a loose one, registration only along the facing, the
# map breaking near-ties by facing): the 32 identity x topology cases mean 0.29 mm, worst 0.89
# (man_young subdivided; his shape folds the upper lip's inner edge to 0.12 mm); the default
# head 0.00-0.20 mm re-meshed by a modifier, 0.22 mm remeshed (838 k vertices). Before
# (session 12): mean 0.53 mm and five cases above 1 mm (man_old decimated 1.35, man_young
# triangulated 1.84 and decimated 1.05, girl decimated 2.18, the remesh 1.20), the registration
# sliding the lips along the surface where the 80-component shape fit had left them off.
# arctic_a0009 alone (93 frames) flattered every method: its 95th percentile is its fifth-worst
# frame, and librivox_0870 has the frames of smaller lip motion where errors show.
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("identity", HEAD.identity_names[1:])
def test_other_identities(kind, identity, motion):
    source = HEAD.identity(identity)
    v, faces = remeshed(kind, source)
    err, still_mm, m = lip_error_mm(v, faces, source, motion)
    skin = skin_vertices(HEAD)
    size = _similarity(HEAD.vertices[skin].astype(np.float64), source[skin].astype(np.float64),
                       np.ones(skin.sum()))[0]
    assert abs(m.scale / SCALE - size) < 0.05 * size, (m.scale / SCALE, size)
    assert np.percentile(err, 95) < 1.0, np.percentile(err, 95)
    assert still_mm <= 0.1


def test_body_below_the_head_never_moves(motion):
    """A whole character: the head on a tall box body; nothing below the face moves."""
    v, faces = remeshed("triangulate")
    box = np.array([[x, y, z] for x in (-0.25, 0.25) for y in (-0.15, 0.15) for z in (-1.0, 0.55)])
    n = len(v)
    quads = [[0, 1, 3, 2], [4, 6, 7, 5], [0, 4, 5, 1], [2, 3, 7, 6], [0, 2, 6, 4], [1, 5, 7, 3]]
    body_faces = faces + [[n + i for i in q] for q in quads]
    m = retarget(np.concatenate([v, box]), body_faces)
    moved = np.abs(m.transfer(motion)).max((0, 2))
    assert moved[n:].max() == 0.0
    assert moved[:n].max() > 5e-3


def test_no_face_is_refused():
    u, w = np.meshgrid(np.linspace(0.05, np.pi - 0.05, 30), np.linspace(0, 2 * np.pi, 60,
                                                                        endpoint=False), indexing="ij")
    sphere = 0.1 * np.stack([np.sin(u) * np.cos(w), np.sin(u) * np.sin(w), np.cos(u)], -1).reshape(-1, 3)
    faces = [[i * 60 + j, i * 60 + (j + 1) % 60, (i + 1) * 60 + (j + 1) % 60, (i + 1) * 60 + j]
             for i in range(29) for j in range(60)]
    with pytest.raises(RetargetError, match="no face"):
        retarget(sphere, faces)
    cube = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], float)
    with pytest.raises(RetargetError):
        retarget(cube, [[0, 1, 3, 2], [4, 6, 7, 5], [0, 4, 5, 1], [2, 3, 7, 6], [0, 2, 6, 4], [1, 5, 7, 3]])
    g = np.stack(np.meshgrid(np.linspace(-0.1, 0.1, 30), np.linspace(0, 0.25, 30)), -1).reshape(-1, 2)
    plane = np.column_stack([g[:, 0], np.zeros(len(g)), g[:, 1]])        # upright, facing -Y
    quads = [[i * 30 + j, i * 30 + j + 1, (i + 1) * 30 + j + 1, (i + 1) * 30 + j]
             for i in range(29) for j in range(29)]
    with pytest.raises(RetargetError, match="face"):
        retarget(plane, quads)
    turned = HEAD.vertices * [1, -1, 1]                      # facing +Y
    with pytest.raises(RetargetError, match="no face"):
        retarget(turned, HEAD.faces[:, ::-1])


def test_bad_meshes_get_a_message():
    with pytest.raises(RetargetError, match="NaN"):
        retarget(np.full((10, 3), np.nan), [[0, 1, 2]])
    with pytest.raises(RetargetError, match="zero area"):
        retarget(np.zeros((4, 3)), [[0, 1, 2], [1, 2, 3]])
    with pytest.raises(RetargetError, match="no faces"):
        retarget(np.random.default_rng(0).normal(size=(10, 3)), [])


def test_map_survives_its_cache_form(motion):
    m = retarget(HEAD.vertices * 2.0, HEAD.faces)
    again = type(m).from_arrays(m.arrays())
    np.testing.assert_array_equal(again.transfer(motion[:3]), m.transfer(motion[:3]))


def test_animation_transfers_through_its_basis(clips):
    """Exact mode carries K + 1 shapes, not every frame: the same offsets either way."""
    import soundfile as sf

    from core.pipeline import animate
    x, rate = sf.read(str(clips["arctic_a0009"][0]), dtype="float32")
    anim = animate(x[: 2 * rate], rate, fps=30.0)
    m = retarget(*remeshed("subdivide"))
    coeffs, basis, bias = m.transfer_animation(anim)
    frames = (coeffs @ basis + bias).reshape(anim.n_frames, m.n_target, 3)
    np.testing.assert_allclose(frames, m.transfer(anim.offsets()), atol=2e-7)


def test_landmarks_placed_by_hand_rescue_a_turned_head(motion):
    """A head facing +X is no face to the automatic guess; eight markers fix it."""
    from core.retarget import MARKERS
    v, faces = remeshed("triangulate")
    quarter = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])      # -Y -> +X
    turned = v @ quarter.T
    with pytest.raises(RetargetError, match="no face"):
        retarget(turned, faces)
    marks = [(i, HEAD.vertices[i] @ quarter.T) for i in MARKERS.values()]
    m = retarget(turned, faces, landmarks=marks)
    got = m.transfer(motion) @ quarter                                   # back to facing -Y
    lips = HEAD.masks["lips"] > 0.5
    err = np.linalg.norm(got - motion, axis=2)[:, lips].max(1) * 1000
    assert np.percentile(err, 95) < 1.0

    swapped = dict(MARKERS)
    swapped["mouth_corner.L"], swapped["mouth_corner.R"] = MARKERS["mouth_corner.R"], MARKERS["mouth_corner.L"]
    swapped["eye_outer.L"], swapped["eye_outer.R"] = MARKERS["eye_outer.R"], MARKERS["eye_outer.L"]
    bad = [(MARKERS[n], HEAD.vertices[swapped[n]] @ quarter.T) for n in MARKERS]
    with pytest.raises(RetargetError, match="left and right"):
        retarget(turned, faces, landmarks=bad)


def test_map_breaks_near_ties_by_facing():
    """Where a lip folds, two template triangles lie a fraction of a millimetre apart and face
    60 degrees apart: a vertex takes the one facing like it, not the one 0.15 mm closer
    (man_young mirror-split took the closer one: 1.75 mm); a clearly closer one still wins."""
    p = np.array([0.002, -0.0002, 0.002])                 # the vertex, facing -Y
    n_a, n_b = np.array([0.0, -1.0, 0.0]), np.array([0.0, -0.5, np.sqrt(0.75)])
    a_pts = np.array([[0, 0, 0], [0.01, 0, 0], [0, 0, 0.01]])           # y = 0, 0.2 mm away
    e1, e2 = np.array([1.0, 0, 0]), np.cross(n_b, [1.0, 0, 0])
    centre = p - 0.00005 * n_b                                          # 0.05 mm away
    b_pts = centre + 0.003 * np.array([e1, -e1 / 2 + 0.866 * e2, -e1 / 2 - 0.866 * e2])
    fitted = np.vstack([a_pts, b_pts]).astype(np.float64)
    tris = np.array([[0, 1, 2], [3, 4, 5]])
    normals = vertex_normals(fitted, tris)        # each vertex is on one triangle only
    if normals[0] @ n_a < 0:
        tris[0] = tris[0, ::-1]
    if normals[3] @ n_b < 0:
        tris[1] = tris[1, ::-1]
    idx, _, dist = build_map(fitted, tris, p[None], n_a[None], 1.0)
    assert set(idx[0]) == {0, 1, 2} and abs(dist[0] - 0.0002) < 1e-9
    farther = p + [0.0, -0.0008, 0.0]                    # 1 mm from A, 0.45 mm from B
    idx, _, dist = build_map(fitted, tris, farther[None], n_a[None], 1.0)
    assert set(idx[0]) == {3, 4, 5} and abs(dist[0] - 0.00045) < 1e-6
