"""Region masks and landmarks of the default head, derived from its labels and face units.

All positions are metres in Blender axes (Z up, face looking -Y, the character's left at +X).
Masks are per-vertex weights 0..1; landmarks are vertex indices into the head cut.
"""
from __future__ import annotations

import numpy as np

from core.arkit import ARKIT_INDEX

MOUTH_UNITS = ("jawOpen", "jawForward", "jawLeft", "jawRight", "cheekPuff", "tongueOut") + tuple(
    n for n in ARKIT_INDEX if n.startswith("mouth"))
UPPER_UNITS = tuple(n for n in ARKIT_INDEX if n.startswith(("brow", "eye", "cheekSquint", "noseSneer")))
EYELID_UNITS = ("eyeBlinkLeft", "eyeBlinkRight")


def unit_motion(names, n_vertices, unit_index, unit_delta, unit_offsets) -> np.ndarray:
    """Largest displacement (m) of every vertex over the face units ``names``: (V,)."""
    out = np.zeros(n_vertices)
    for name in names:
        k = ARKIT_INDEX[name]
        sl = slice(unit_offsets[k], unit_offsets[k + 1])
        np.maximum.at(out, unit_index[sl], np.linalg.norm(unit_delta[sl], axis=1))
    return out


def unit_dense(name, n_vertices, unit_index, unit_delta, unit_offsets) -> np.ndarray:
    """Dense (V, 3) delta of one face unit, metres."""
    k = ARKIT_INDEX[name]
    sl = slice(unit_offsets[k], unit_offsets[k + 1])
    out = np.zeros((n_vertices, 3))
    out[unit_index[sl]] = unit_delta[sl]
    return out


def ramp(x, lo, hi):
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0)


def part_vertices(faces, face_part, part_names, prefix) -> np.ndarray:
    """Sorted vertex indices used by faces whose part name starts with ``prefix``."""
    ids = [i for i, p in enumerate(part_names) if p.startswith(prefix)]
    return np.unique(faces[np.isin(face_part, ids)])


def boundary(faces, face_part, part_names, a, b) -> np.ndarray:
    """Vertices shared by faces of part ``a`` and faces of part(s) starting with ``b``."""
    return np.intersect1d(part_vertices(faces, face_part, part_names, a),
                          part_vertices(faces, face_part, part_names, b))


def inner_lip_split(vertices, faces, face_part, part_names, *units):
    """Inner-lip loop split into (upper, lower) vertex index arrays: below or above the height
    of the mouth corners (the loop's extreme-x vertices, which belong to neither); checked
    against jawOpen, which must drop every lower-lip vertex more than any upper-lip one."""
    loop = boundary(faces, face_part, part_names, "body:head", "body:mouth_cavity")
    v = vertices
    corners = loop[[np.argmin(v[loop, 0]), np.argmax(v[loop, 0])]]
    corner_z = v[corners, 2].mean()
    upper = loop[v[loop, 2] > corner_z + 0.0002]
    lower = loop[v[loop, 2] < corner_z - 0.0002]
    jaw = unit_dense("jawOpen", len(v), *units)
    if -jaw[lower, 2].min() <= -jaw[upper, 2].max():
        raise RuntimeError("inner-lip split disagrees with jawOpen; check the head cut")
    return upper, lower


def derive_landmarks(vertices, faces, face_part, part_names, unit_index, unit_delta, unit_offsets):
    """Landmark vertex indices: lip_pairs (K, 2) upper/lower, mouth_corners (2,) [right, left],
    eye_corners (4,) [right outer, right inner, left inner, left outer], nose_tip, chin."""
    units = (unit_index, unit_delta, unit_offsets)
    v = vertices.astype(np.float64)
    upper, lower = inner_lip_split(v, faces, face_part, part_names, *units)
    loop = np.concatenate([upper, lower])
    corners = np.array([loop[np.argmin(v[loop, 0])], loop[np.argmax(v[loop, 0])]])
    half_width = 0.5 * (v[corners[1], 0] - v[corners[0], 0])
    pairs = []
    for u in upper[np.abs(v[upper, 0]) < 0.6 * half_width]:
        lo = lower[np.argmin(np.abs(v[lower, 0] - v[u, 0]) + 0.2 * np.abs(v[lower, 1] - v[u, 1]))]
        if abs(v[lo, 0] - v[u, 0]) < 0.002:
            pairs.append((u, lo))
    pairs = np.array(sorted(pairs, key=lambda p: v[p[0], 0]), np.int64)

    eyes = []
    for side in ("eye_cavity.R", "eye_cavity.L"):
        ring = boundary(faces, face_part, part_names, "body:head", "body:" + side)
        eyes += [ring[np.argmin(v[ring, 0])], ring[np.argmax(v[ring, 0])]]
    skin = part_vertices(faces, face_part, part_names, "body:head")
    mouth_z = v[corners, 2].mean()
    eye_z = v[eyes, 2].mean()
    mid = skin[np.abs(v[skin, 0]) < 0.004]
    nose_band = mid[(v[mid, 2] > mouth_z) & (v[mid, 2] < eye_z)]
    nose_tip = nose_band[np.argmin(v[nose_band, 1])]
    chin_band = mid[(v[mid, 2] < mouth_z - 0.02) & (v[mid, 2] > mouth_z - 0.07)]
    chin = chin_band[np.argmin(v[chin_band, 1])]
    return dict(lip_pairs=pairs, mouth_corners=corners, eye_corners=np.array(eyes),
                nose_tip=np.array([nose_tip]), chin=np.array([chin]),
                lip_upper=np.sort(upper), lip_lower=np.sort(lower))


def derive_masks(vertices, faces, face_part, part_names, unit_index, unit_delta, unit_offsets):
    """Per-vertex weights 0..1 (V,): mouth (lower face driven by speech, incl. teeth and
    tongue), lips, eyelids, upper_face (everything above the mouth region that expressions move)."""
    units = (unit_index, unit_delta, unit_offsets)
    v = vertices.astype(np.float64)
    n = len(v)
    mouth = ramp(unit_motion(MOUTH_UNITS, n, *units), 0.0005, 0.002)
    for part in ("helper-upper-teeth", "helper-lower-teeth", "helper-tongue", "body:mouth_cavity"):
        mouth[part_vertices(faces, face_part, part_names, part)] = 1.0
    eyelids = ramp(unit_motion(EYELID_UNITS, n, *units), 0.0005, 0.002)
    # the face-unit pack also nudges a few hidden vertices in the nasal cavity: keep the
    # eyelid mask to what lies around the eyes
    near_eye = np.zeros(n, bool)
    for side in ("eye_cavity.R", "eye_cavity.L"):
        ring = boundary(faces, face_part, part_names, "body:head", "body:" + side)
        near_eye |= np.linalg.norm(v - v[ring].mean(axis=0), axis=1) < 0.03
    eyelids *= near_eye
    upper_motion = ramp(unit_motion(UPPER_UNITS, n, *units), 0.0002, 0.001)
    upper = np.maximum(upper_motion, eyelids) * (1.0 - mouth)
    for part in ("helper-l-eye", "helper-r-eye", "body:eye_cavity"):
        upper[part_vertices(faces, face_part, part_names, part)] = 1.0

    upper_lip, lower_lip = inner_lip_split(v, faces, face_part, part_names, *units)
    loop = np.concatenate([upper_lip, lower_lip])
    skin = part_vertices(faces, face_part, part_names, "body:head")
    dist = np.full(n, np.inf)
    for i in skin:
        dist[i] = np.min(np.linalg.norm(v[loop] - v[i], axis=1))
    front = v[:, 1] < v[loop, 1].max() + 0.002
    lips = (1.0 - ramp(dist, 0.006, 0.012)) * front
    return dict(mouth=mouth, lips=lips, eyelids=eyelids, upper_face=upper)
