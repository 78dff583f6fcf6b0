"""python3 -m train fit-identity: a character whose mouth moves wider than the default model's,
fitted from two minutes of takes; the held-out takes show the fit beats the default."""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from core.arkit import ARKIT_NAMES

MOUTH = [i for i, n in enumerate(ARKIT_NAMES) if n.startswith(("jaw", "mouth"))]


@pytest.fixture(scope="module")
def takes(tmp_path_factory):
    return make_takes(tmp_path_factory.mktemp("identity"))


def make_takes(root):
    """Two minutes of a character (identity man_long) that opens its mouth 1.5x as wide as the
    rig: NAME.npz (vertices, fps) + NAME.wav, from a small synthetic corpus."""
    from core.assets import load_default_head
    from train.corpus import Corpus
    from core.rig import identity_scale
    from train.synth import generate

    corpus = root / "corpus"
    generate(corpus, hours=0.045, seed=11, progress=False)
    c = Corpus(corpus)
    head = load_default_head()
    face = head.identity("man_long")
    scale = identity_scale(face)
    out = root / "takes"
    out.mkdir()
    total = 0.0
    for seq_id in c.ids("train") + c.ids("val") + c.ids("test"):
        seq = c.load(seq_id)
        w = seq.arkit.copy()
        w[:, MOUTH] = np.clip(1.5 * w[:, MOUTH], 0, 1)
        verts = face[None] + head.units.offsets_from_weights(w, scale)
        np.savez(out / f"{seq_id}.npz", vertices=verts.astype(np.float32), fps=c.fps)
        sf.write(out / f"{seq_id}.wav", seq.audio, seq.sample_rate)
        total += len(seq.audio) / seq.sample_rate
        if total > 130:
            break
    np.save(root / "neutral.npy", face)
    return root


def test_fit_identity_beats_the_default_on_held_out_takes(takes, tmp_path):
    from core.pipeline import animate, get_model
    from train.fit_identity import main_fit_identity

    out = tmp_path / "man_long.safetensors"
    rc = main_fit_identity([str(takes / "neutral.npy"), "--motion", str(takes / "takes"), "--name", "man_long",
                            "--out", str(out), "--minutes", "1.5", "--quiet"])
    assert rc == 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["held_out"] and not set(report["held_out"]) & set(report["takes"][:-len(report["held_out"])])
    assert report["fitted"]["lve_mm"] < 0.85 * report["default"]["lve_mm"], report
    # measured (session-10 model): LVE 3.70 -> 2.69 mm; closure 0.91 -> 0.91 of 43 closed
    # frames (session 9's model: 0.81 -> 0.84, a tie over 4-fold cross-validation,
    # core/closure_fit.py), with the gap terms of the fit and the seal's guard relative to the
    # clip's opening (without them, with session 5's model, 0.74 -> 0.58); frames the takes hold
    # open that the model closes: 5.8 % -> 3.3 % with the tuned closure head (session 9's model:
    # 6.9 % -> 3.5 %, and 6.9 % with the basis tuned alone)
    assert report["fitted"]["closure"] >= report["default"]["closure"] - 0.1, report
    assert report["closure_head"]["steps"] > 0 and report["closure_head"]["closed_frames"] > 50
    assert report["fitted"]["false_closure"] < 0.75 * report["default"]["false_closure"], report
    # the checkpoint animates with its own face when given none
    net, prior, meta = get_model(out)
    np.testing.assert_array_equal(net.identity_template, np.load(takes / "neutral.npy").astype(np.float32))
    anim = animate(np.zeros(8000, np.float32) + 0.01 * np.sin(np.arange(8000) / 7), 16000,
                   model=(net, prior, meta))
    np.testing.assert_array_equal(anim.template, net.identity_template)
    assert meta["data"]["identity"]["identity"] == "man_long"
    default = get_model(None)[0]          # the tuned closure head is in the checkpoint
    assert not torch.equal(net.closure[0].weight, default.closure[0].weight)
    assert torch.equal(net.audio.norm.weight, default.audio.norm.weight)


def test_the_closure_head_learns_where_the_takes_lips_are_closed(takes):
    """tune_closure on the character's frames: the cross-entropy on them falls and closed
    frames' logits rise against open ones'; with too few closed frames it leaves the head."""
    import copy

    from core.assets import load_default_head
    from core.closure_fit import MIN_CLOSED, tune_closure
    from core.identity import Fitter, character_lip_gap
    from core.pipeline import get_model
    from train.fit_identity import load_takes

    head = load_default_head()
    neutral = np.load(takes / "neutral.npy")
    some = load_takes(takes / "takes", neutral)[:8]
    net, prior, meta = get_model(None)
    f = Fitter((net, prior, meta), neutral, some, None, head)
    closed = f.closed(character_lip_gap(neutral, None, head))
    label = torch.from_numpy(np.concatenate(closed).astype(np.float32))

    def score(h):
        with torch.no_grad():
            logit = torch.cat([h(x)[..., 0].amax(0) for x in f.hearings])
        bce = torch.nn.functional.binary_cross_entropy_with_logits(logit, label).item()
        return bce, (logit[label > 0].mean() - logit[label == 0].mean()).item()

    tuned = copy.deepcopy(net)
    info = tune_closure(tuned, f.hearings, closed)
    assert info["steps"] > 0 and info["closed_frames"] == int(label.sum()) >= MIN_CLOSED
    (bce0, margin0), (bce1, margin1) = score(net.closure), score(tuned.closure)
    assert bce1 < 0.9 * bce0 and margin1 > margin0, (bce0, bce1, margin0, margin1)
    untouched = copy.deepcopy(net)
    few = [np.zeros(len(c), bool) for c in closed]
    few[0][:MIN_CLOSED - 1] = True
    info = tune_closure(untouched, f.hearings, few)
    assert info["steps"] == 0 and "not tuned" in info["note"]
    assert all(torch.equal(a, b) for a, b in zip(untouched.closure.parameters(), net.closure.parameters()))


def test_no_motion_adapts_to_the_shape_and_says_so(takes, tmp_path, capsys):
    from core.pipeline import get_model
    from train.fit_identity import main_fit_identity

    out = tmp_path / "shape_only.safetensors"
    assert main_fit_identity([str(takes / "neutral.npy"), "--out", str(out), "--quiet"]) == 0
    assert "adapted to the new neutral shape only" in capsys.readouterr().out
    net, _, _ = get_model(out)
    assert net.identity_template.shape == (4706, 3)


def test_another_topology_goes_through_the_retarget_map(takes, tmp_path):
    """A neutral of its own topology (no motion): the registered head becomes the template."""
    from core.assets import load_default_head
    from core.pipeline import get_model
    from train.fit_identity import main_fit_identity
    head = load_default_head()
    tris = head.triangles()
    v = np.load(takes / "neutral.npy") * 1.2                      # another size, triangles
    np.savez(tmp_path / "tri.npz", vertices=v, faces=tris)
    out = tmp_path / "tri.safetensors"
    assert main_fit_identity([str(tmp_path / "tri.npz"), "--out", str(out), "--quiet"]) == 0
    net, _, _ = get_model(out)
    # back in the head's frame and size, the registered head lies on the neutral's surface
    # (1.2x undone; its vertices slide along the surface, so: distance to the nearest vertex,
    # measured median 2.0 mm, 90th percentile 5.8 mm; left at 1.2x it would be ~10x more)
    from scipy.spatial import cKDTree
    err, _ = cKDTree(v / 1.2).query(net.identity_template)
    assert np.median(err) < 3e-3 and np.percentile(err, 90) < 8e-3, np.percentile(err, [50, 90, 100])


@pytest.mark.parametrize("problem,match", [
    ("count", "vertices per frame"), ("nan", "NaN"), ("length", "s of audio"),
    ("fps", "not a frame rate"), ("noaudio", "no audio"), ("units", "do not sit on the neutral"),
])
def test_bad_takes_name_the_file_and_write_nothing(takes, tmp_path, capsys, problem, match):
    from train.fit_identity import main_fit_identity
    src = sorted((takes / "takes").glob("*.npz"))[0]
    bad = tmp_path / "takes"
    bad.mkdir()
    with np.load(src) as d:
        verts, fps = d["vertices"].copy(), float(d["fps"])
    x, rate = sf.read(src.with_suffix(".wav"))
    if problem == "count":
        verts = verts[:, :-5]
    elif problem == "nan":
        verts[3, 7, 1] = np.nan
    elif problem == "length":
        x = x[: len(x) // 2]
    elif problem == "fps":
        fps = 1000.0
    elif problem == "units":
        verts = verts * 100.0
    np.savez(bad / "take1.npz", vertices=verts, fps=fps)
    if problem != "noaudio":
        sf.write(bad / "take1.wav", x, rate)
    out = tmp_path / "out.safetensors"
    rc = main_fit_identity([str(takes / "neutral.npy"), "--motion", str(bad), "--out", str(out), "--quiet"])
    said = capsys.readouterr().out
    assert rc == 2 and match in said and "take1" in said
    assert not out.exists()


def test_fit_to_this_character_in_blender(takes, tmp_path):
    """The panel's operator: a mesh whose own shape-key animation plays under the strip is
    fitted, lands in the user folder and becomes the model of the next bake."""
    bpy = pytest.importorskip("bpy")
    from blender_env import add_speech, fresh_scene
    ext = fresh_scene()
    scene = bpy.context.scene
    scene.render.fps = 30
    src = sorted((takes / "takes").glob("*.npz"))
    with np.load(src[0]) as d:
        verts = d["vertices"]
    add_speech(scene, src[0].with_suffix(".wav"))
    neutral = np.load(takes / "neutral.npy")
    bpy.ops.speechface.add_head()
    obj = scene.speechface.target
    obj.data.vertices.foreach_set("co", neutral.astype(np.float32).ravel())
    obj.shape_key_add(name="Basis", from_mix=False)
    # the character's own animation: one key per frame, as a capture baked to shape keys
    n = min(len(verts), 60)
    for k in range(n):
        kb = obj.shape_key_add(name=f"take.{k:03d}", from_mix=False)
        kb.data.foreach_set("co", verts[k].ravel())
        for f, v in ((k, 0.0), (k + 1, 1.0), (k + 2, 0.0)):
            kb.value = v
            kb.keyframe_insert("value", frame=f)
    scene.sequence_editor.strips_all[0].frame_final_duration = n
    bpy.ops.speechface.fit_character(name="capture test", minutes=0.2)
    s = scene.speechface
    assert s.model_source == "IDENTITY" and s.identity == "capture_test"
    assert "capture_test" in ext.addon.identity_ops.fitted_identities()
    from core.checkpoint import read_checkpoint
    _, meta = read_checkpoint(ext.addon.identity_ops.identity_path("capture_test"))
    report = meta["data"]["identity"]
    assert report["takes"] == ["speech"] and "fitted" in report
    bpy.ops.speechface.bake(target=obj.name)
    assert any(kb.name.startswith("speechface.") for kb in obj.data.shape_keys.key_blocks)


def _write_pc2(path, frames: np.ndarray, fps: float) -> None:
    """A Point Cache 2 file (what Blender's Mesh Cache modifier reads): (T, N, 3) float32."""
    import struct
    with open(path, "wb") as fh:
        fh.write(b"POINTCACHE2\0" + struct.pack("<iiffi", 1, frames.shape[1], 0.0, 1.0, len(frames)))
        fh.write(np.ascontiguousarray(frames, "<f4").tobytes())


def test_fit_to_this_character_from_a_mesh_cache(takes, tmp_path):
    """A capture on a Mesh Cache modifier is the take too."""
    bpy = pytest.importorskip("bpy")
    from blender_env import add_speech, fresh_scene
    ext = fresh_scene()
    scene = bpy.context.scene
    scene.render.fps = 30
    src = sorted((takes / "takes").glob("*.npz"))[1]
    with np.load(src) as d:
        verts = d["vertices"].astype(np.float32)
    n = min(len(verts), 60)
    add_speech(scene, src.with_suffix(".wav")).frame_final_duration = n
    neutral = np.load(takes / "neutral.npy").astype(np.float32)
    bpy.ops.speechface.add_head()
    obj = scene.speechface.target
    obj.data.vertices.foreach_set("co", neutral.ravel())
    cache = tmp_path / "capture.pc2"
    _write_pc2(cache, verts[:n], 30.0)
    mod = obj.modifiers.new("Capture", "MESH_CACHE")
    mod.cache_format, mod.filepath = "PC2", str(cache)
    mod.frame_start = 1.0
    take = ext.addon.identity_ops.character_take(scene, obj, "")
    assert take is not None and len(take.offsets) == n
    np.testing.assert_allclose(take.offsets[5], verts[5] - neutral, atol=1e-5)   # the cache's frames
    bpy.ops.speechface.fit_character(name="cached", minutes=0.1)
    assert scene.speechface.identity == "cached"


def test_another_topology_fits_its_motion_and_keeps_sealing(takes, tmp_path):
    """The same character re-ordered, triangulated and in centimetres, with its takes: the fit
    goes through the retarget map, the inner-lip gap terms included (on the character's
    vertices that carry the head's lip pairs), and the held-out report has closure too."""
    import shutil

    from core.assets import load_default_head
    from train.fit_identity import main_fit_identity
    head = load_default_head()
    perm = np.random.default_rng(3).permutation(head.n_vertices)
    inverse = np.argsort(perm)
    faces = inverse[head.triangles()]
    motion = tmp_path / "takes"
    motion.mkdir()
    for f in sorted((takes / "takes").glob("*.npz")):
        with np.load(f) as d:
            np.savez(motion / f.name, vertices=100.0 * d["vertices"][:, perm], fps=d["fps"])
        shutil.copy(f.with_suffix(".wav"), motion / f.with_suffix(".wav").name)
    np.savez(tmp_path / "cm.npz", vertices=100.0 * np.load(takes / "neutral.npy")[perm], faces=faces)
    out = tmp_path / "cm.safetensors"
    assert main_fit_identity([str(tmp_path / "cm.npz"), "--motion", str(motion), "--out", str(out),
                              "--minutes", "1.5", "--quiet"]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert "retargeted" in report["topology"]
    assert report["default"]["closed_frames"] > 20, report
    # measured (session-10 model): LVE 3.68 -> 2.72 mm (at the head's size, the centimetres
    # undone), closure 0.91 -> 0.91 (session 5's model: 0.74 -> 0.67 while the gap terms were
    # left out here), false closures 6.4 % -> 3.0 % (the closure head tuned through the map)
    assert report["fitted"]["lve_mm"] < 0.9 * report["default"]["lve_mm"], report
    assert report["fitted"]["closure"] >= report["default"]["closure"] - 0.05, report
    assert report["fitted"]["false_closure"] < 0.75 * report["default"]["false_closure"], report
