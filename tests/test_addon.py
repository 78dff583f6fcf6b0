"""The extension in real Blender (bpy module): register, panels, operators, both output modes,
timing, the user's data left alone, save/reload, cancel, bad input."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

bpy = pytest.importorskip("bpy")

from blender_env import add_speech, evaluated_vertices, fresh_scene, snapshot  # noqa: E402


@pytest.fixture
def ext():
    return fresh_scene()


@pytest.fixture(scope="module")
def speech(tmp_path_factory, clips):
    """4 s of real speech (ARCTIC a0009), 16-bit wav."""
    x, rate = sf.read(str(clips["arctic_a0009"][0]), dtype="float32")
    path = tmp_path_factory.mktemp("speech") / "a0009.wav"
    sf.write(path, x[: 4 * rate], rate, subtype="PCM_16")
    return path


def head_scene(speech, frame_start=1):
    bpy.ops.speechface.add_head()
    scene = bpy.context.scene
    strip = add_speech(scene, speech, frame_start)
    return scene, scene.speechface.target, strip


def reference_offsets(speech, strip_start_s, n_frames, fps, template, seed=0, options=None):
    """What the pipeline itself gives for the visible part of the strip: (n, V, 3) m."""
    from core.assets import load_default_head
    from core.pipeline import animate
    from core.shapes import BakeOptions, shape_animation

    x, rate = sf.read(str(speech), dtype="float32")
    a = int(round(strip_start_s * rate))
    n = int(round(n_frames / fps * rate))
    part = x[a:a + n]
    anim = animate(part, rate, fps=fps, template=template, seed=seed)
    anim = shape_animation(anim, load_default_head().masks, options or BakeOptions())
    return anim.offsets()[:n_frames]


def test_register_and_unregister(ext):
    import addon_utils
    for op in ("bake", "clear", "add_head"):
        assert getattr(bpy.ops.speechface, op).get_rna_type().identifier
    assert hasattr(bpy.types.Scene, "speechface")
    assert "SPEECHFACE_PT_sequencer" in dir(bpy.types) and "SPEECHFACE_PT_view3d" in dir(bpy.types)
    addon_utils.disable(ext.__name__, default_set=False)
    assert not hasattr(bpy.types.Scene, "speechface")
    assert "SPEECHFACE_PT_sequencer" not in dir(bpy.types)


def test_bake_is_one_undo_step_operator(ext):
    # undo itself needs a window (not in the bpy module); the operator must register for it
    assert {"REGISTER", "UNDO"} <= set(ext.addon.ops.SPEECHFACE_OT_bake.bl_options)
    assert {"REGISTER", "UNDO"} <= set(ext.addon.ops.SPEECHFACE_OT_clear.bl_options)


def test_add_head(ext):
    from core.assets import load_default_head
    bpy.ops.speechface.add_head()
    obj = bpy.context.scene.speechface.target
    assert obj is not None and obj.type == "MESH"
    assert len(obj.data.vertices) == load_default_head().n_vertices


def test_compact_bake_matches_pipeline_with_trim_and_offset(ext, speech):
    scene, obj, strip = head_scene(speech, frame_start=11)
    strip.frame_offset_start = 15                      # trim the first half second
    fps = scene.render.fps / scene.render.fps_base
    first, n = strip.frame_final_start, strip.frame_final_end - strip.frame_final_start
    assert first == 26
    bpy.ops.speechface.bake()
    key = obj.data.shape_keys
    ours = [kb for kb in key.key_blocks if kb.name.startswith("speechface.")]
    assert 1 <= len(ours) <= 33 and all(kb.slider_min == -1 for kb in ours)
    rest = key.reference_key
    template = np.array([v.co for v in rest.data], np.float32)
    ref = reference_offsets(speech, 15 / fps, n, fps, template)
    for k in (0, 10, n // 2, n - 1):
        got = evaluated_vertices(obj, first + k) - template
        assert np.abs(got - ref[k]).max() < 1.5e-4, k     # compact keys: within 0.1 mm + float
    assert np.abs(ref).max() > 2e-3                       # the face really moves
    before = evaluated_vertices(obj, first - 5) - template
    assert np.abs(before - ref[0]).max() < 1.5e-4         # holds the first frame before the strip


def test_exact_bake_and_fractional_fps(ext, speech):
    scene, obj, strip = head_scene(speech)
    scene.render.fps, scene.render.fps_base = 30000, 1001.0     # 29.97
    strip.frame_final_duration = 45
    bpy.ops.speechface.bake(output_mode="EXACT", seed=3)
    key = obj.data.shape_keys
    assert sum(kb.name.startswith("speechface.frame.") for kb in key.key_blocks) == 45
    template = np.array([v.co for v in key.reference_key.data], np.float32)
    ref = reference_offsets(speech, 0.0, 45, 30000 / 1001, template, seed=3)
    for k in (0, 7, 44):
        got = evaluated_vertices(obj, 1 + k) - template
        assert np.abs(got - ref[k]).max() < 2e-6, k


def test_options_shape_the_motion(ext, speech):
    from core.assets import load_default_head
    masks = load_default_head().masks
    scene, obj, strip = head_scene(speech)
    strip.frame_final_duration = 60
    template = np.array([v.co for v in obj.data.vertices], np.float32)

    def motion(**opts):
        bpy.ops.speechface.bake(**opts)
        return np.stack([evaluated_vertices(obj, f) - template for f in range(1, 61, 3)])

    base = motion(seed=1)
    mouth, upper = masks["mouth"] > 0.99, (masks["upper_face"] > 0.99) & (masks["mouth"] < 0.01)
    still = motion(seed=1, lip_intensity=0.0)
    # zero motion, up to the compact keys' tolerance (0.1 mm)
    assert np.abs(still[:, mouth]).max() < 1e-4 < np.abs(base[:, mouth]).max()
    no_upper = motion(seed=1, upper_face=False)
    assert np.abs(no_upper[:, upper]).max() < 1e-4 < np.abs(base[:, upper]).max()
    np.testing.assert_allclose(no_upper[:, mouth], base[:, mouth], atol=2e-4)
    doubled = motion(seed=1, lip_intensity=2.0)
    np.testing.assert_allclose(doubled[:, mouth], 2 * base[:, mouth], atol=3e-4)
    smooth = motion(seed=1, smoothing=3.0)
    jerk = lambda m: np.abs(np.diff(m[:, mouth], 2, axis=0)).mean()  # noqa: E731
    assert jerk(smooth) < 0.7 * jerk(base)


def test_user_keys_and_action_stay_and_bake_goes_on_nla(ext, speech):
    scene, obj, strip = head_scene(speech)
    strip.frame_final_duration = 30
    obj.shape_key_add(name="Basis", from_mix=False)
    smile = obj.shape_key_add(name="Smile", from_mix=False)
    co = np.empty(len(smile.data) * 3, np.float32)
    smile.data.foreach_get("co", co)
    smile.data.foreach_set("co", co + 0.001)
    smile.value = 0.3
    smile.keyframe_insert("value", frame=1)
    smile.value = 0.8
    smile.keyframe_insert("value", frame=20)
    user_action = obj.data.shape_keys.animation_data.action
    before = snapshot(bpy)

    bpy.ops.speechface.bake()
    ad = obj.data.shape_keys.animation_data
    assert ad.action == user_action
    assert [t.name for t in ad.nla_tracks] == ["Speechface"]
    n_keys = len(obj.data.shape_keys.key_blocks)
    scene.frame_set(20)
    assert abs(obj.data.shape_keys.key_blocks["Smile"].value - 0.8) < 1e-6

    bpy.ops.speechface.bake(seed=5)                       # re-bake replaces only ours
    names = [kb.name for kb in obj.data.shape_keys.key_blocks]
    assert [n for n in names if not n.startswith("speechface.")] == ["Basis", "Smile"]
    assert n_keys > 2 and len(names) > 2
    assert [t.name for t in ad.nla_tracks] == ["Speechface"]
    assert sum(a.get("speechface") is not None for a in bpy.data.actions) == 1

    bpy.ops.speechface.clear()
    after = snapshot(bpy)
    assert after == before


def test_clear_returns_mesh_to_how_it_was(ext, speech):
    scene, obj, strip = head_scene(speech)
    strip.frame_final_duration = 20
    before = snapshot(bpy)
    bpy.ops.speechface.bake()
    assert obj.data.shape_keys is not None
    bpy.ops.speechface.clear()
    assert obj.data.shape_keys is None
    assert snapshot(bpy) == before


def test_save_reload_relative_and_packed(ext, speech, tmp_path):
    import shutil
    wav = tmp_path / "line.wav"
    shutil.copy(speech, wav)
    scene, obj, strip = head_scene(wav)
    strip.frame_final_duration = 30
    blend = tmp_path / "shot.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend), relative_remap=True)
    assert bpy.data.sounds[0].filepath.startswith("//")       # relative after save
    bpy.ops.speechface.bake()
    got = evaluated_vertices(obj, 12)
    bpy.ops.wm.save_mainfile()
    bpy.ops.wm.open_mainfile(filepath=str(blend))
    obj = bpy.data.objects["Speechface Head"]
    np.testing.assert_allclose(evaluated_vertices(obj, 12), got, atol=1e-7)

    bpy.data.sounds[0].pack()
    wav.unlink()                                               # only the packed copy is left
    bpy.ops.speechface.bake()
    np.testing.assert_allclose(evaluated_vertices(obj, 12), got, atol=1e-7)


def test_panel_bake_session_progress_cancel_and_finish(ext, speech):
    """What the modal operator does between timer events: progress while the worker runs,
    Esc leaves the scene as it was, a finished bake is written on the main thread."""
    import importlib
    import time
    ops = ext.addon.ops
    scene, obj, strip = head_scene(speech)
    before = snapshot(bpy)
    options = ext.addon.bake.options_of(scene.speechface)
    session = ops.BakeSession(ext.addon.bake.prepare(scene, obj, "", options))
    session.cancel()
    while session.poll() is not None:
        time.sleep(0.01)
    assert session.finish(scene) == ("WARNING", "Speechface: bake cancelled, nothing changed")
    Cancelled = importlib.import_module(ext.__name__ + ".core.pipeline").Cancelled   # its own
    assert isinstance(session.job.error, Cancelled)
    assert snapshot(bpy) == before

    session = ops.BakeSession(ext.addon.bake.prepare(scene, obj, "", options))
    seen = []
    while (p := session.poll()) is not None:
        seen.append(p)
        assert ops.panel_problem(scene) == "A bake is running: wait for it or press Esc"
        time.sleep(0.005)
    level, message = session.finish(scene)
    assert level == "INFO" and "baked" in message and ext.addon.writers.has_bake(obj)
    assert all(0 <= p <= 1 for p in seen)
    assert ops.panel_problem(scene) is None


def test_panel_greys_bake_with_a_reason(ext, speech):
    problem = ext.addon.ops.panel_problem
    scene = bpy.context.scene
    assert problem(scene) == "Add a sound strip with the speech in the Video Sequencer"
    add_speech(scene, speech)
    add_speech(scene, speech, channel=2, name="second")
    scene.sequence_editor.active_strip = None
    assert problem(scene) == "Pick the sound strip in the Speechface panel"
    scene.speechface.strip = "second"
    assert problem(scene).startswith("Pick the face mesh")
    bpy.ops.speechface.add_head()
    assert problem(scene) is None


def _fails(match, **kwargs):
    before = snapshot(bpy)
    with pytest.raises(RuntimeError, match=match):
        bpy.ops.speechface.bake(**kwargs)
    assert snapshot(bpy) == before


def test_bad_input_gets_one_line_and_no_change(ext, speech, tmp_path):
    bpy.ops.speechface.add_head()
    scene = bpy.context.scene
    _fails("no sound strip")
    strip = add_speech(scene, speech)
    strip.mute = True
    _fails("muted")
    strip.mute = False
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(16000, np.float32), 16000)
    add_speech(scene, silent, channel=2, name="quiet")
    _fails("silent", strip="quiet")
    gone = tmp_path / "gone.wav"
    sf.write(gone, np.zeros(16000, np.float32), 16000)
    add_speech(scene, gone, channel=3, name="gone")
    gone.unlink()
    _fails("missing", strip="gone")
    _fails("No sound strip named", strip="nope")
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"not a checkpoint")
    _fails("checkpoint", strip="speech", model_source="FILE", checkpoint=str(bad))
    cam = bpy.data.objects.new("Cam", bpy.data.cameras.new("Cam"))
    scene.collection.objects.link(cam)
    _fails("not a mesh", strip="speech", target="Cam")
    verts = bpy.data.meshes.new("Points")
    verts.from_pydata([(0, 0, 0), (1, 0, 0)], [], [])
    pts = bpy.data.objects.new("Points", verts)
    scene.collection.objects.link(pts)
    _fails("no faces", strip="speech", target="Points")
    bpy.ops.mesh.primitive_uv_sphere_add()
    _fails("no face", strip="speech", target=bpy.context.active_object.name)
    head = scene.speechface.target
    bpy.context.view_layer.objects.active = head
    bpy.ops.object.mode_set(mode="EDIT")
    _fails("Edit Mode", strip="speech")
    bpy.ops.object.mode_set(mode="OBJECT")


def test_linked_mesh_is_refused(ext, speech, tmp_path):
    bpy.ops.speechface.add_head()
    lib = tmp_path / "lib.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(lib))
    fresh_scene()
    with bpy.data.libraries.load(str(lib), link=True) as (src, dst):
        dst.objects = ["Speechface Head"]
    scene = bpy.context.scene
    scene.collection.objects.link(dst.objects[0])
    add_speech(scene, speech)
    _fails("linked", target="Speechface Head")


def test_mesh_with_modifier_bakes_under_it(ext, speech):
    scene, obj, strip = head_scene(speech)
    strip.frame_final_duration = 20
    obj.modifiers.new("Subdivision", "SUBSURF").levels = 1
    bpy.ops.speechface.bake()
    assert obj.modifiers[0].name == "Subdivision"
    assert len(evaluated_vertices(obj, 10)) > len(obj.data.vertices)    # modifier still on top


def test_runs_on_the_blender_it_was_asked_for():
    import os
    expected = os.environ.get("SPEECHFACE_BPY_EXPECTED")
    if expected is None:
        assert bpy.app.version[:2] >= (4, 5)
    else:
        assert bpy.app.version_string.startswith(expected), bpy.app.version_string


def test_identity_in_centimetres_on_a_moved_object(ext, speech):
    """Any identity on the head's topology, modelled in cm (object scale 0.01), placed anywhere."""
    from core.assets import load_default_head
    scene, obj, strip = head_scene(speech)
    strip.frame_final_duration = 40
    identity = load_default_head().identity("man_old")
    obj.data.vertices.foreach_set("co", (identity * 100 + [0, 0, 150]).ravel())   # cm, raised
    obj.scale = (0.01, 0.01, 0.01)
    obj.location, obj.rotation_euler = (2.0, -1.0, 0.5), (0.0, 0.0, 0.4)
    bpy.ops.speechface.bake(seed=4)
    rest = identity * 100 + [0, 0, 150]
    ref = reference_offsets(speech, 0.0, 40, scene.render.fps / scene.render.fps_base, identity, seed=4)
    for k in (5, 20, 39):
        got = evaluated_vertices(obj, 1 + k) - rest                       # local units: cm
        assert np.abs(got - 100 * ref[k]).max() < 1.5e-2, k               # 0.1 mm + float


def _decimated_head(scene, name="Character"):
    """A character mesh of its own topology: the head decimated, in cm, moved and turned."""
    from core.assets import load_default_head
    head = load_default_head()
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata((head.vertices * 100).tolist(), [], head.faces.tolist())
    obj = bpy.data.objects.new(name, mesh)
    scene.collection.objects.link(obj)
    obj.modifiers.new("Decimate", "DECIMATE").ratio = 0.5
    bpy.context.view_layer.objects.active = obj
    bpy.ops.object.modifier_apply(modifier="Decimate")
    obj.scale = (0.01, 0.01, 0.01)
    obj.location, obj.rotation_euler = (0.5, 0.2, 0.1), (0.0, 0.0, 0.1)
    return obj


def test_bake_onto_another_topology_uses_and_caches_the_map(ext, speech):
    import importlib
    import time
    retarget_mod = importlib.import_module(ext.__name__ + ".core.retarget")
    scene = bpy.context.scene
    strip = add_speech(scene, speech)
    strip.frame_final_duration = 40
    obj = _decimated_head(scene)
    n = len(obj.data.vertices)
    assert n < 4706
    bpy.ops.speechface.bake(target=obj.name, seed=2)
    assert "speechface_map" in obj
    rest = np.array([v.co for v in obj.data.vertices], np.float32)

    # what it must show: the pipeline's motion through the same map, in local units (cm)
    m = np.array(obj.matrix_world)
    world = rest.astype(np.float64) @ m[:3, :3].T + m[:3, 3]
    faces = [list(p.vertices) for p in obj.data.polygons]
    rmap = retarget_mod.retarget(world, faces)
    ref = reference_offsets(speech, 0.0, 40, scene.render.fps / scene.render.fps_base,
                            load_head_vertices(), seed=2)
    local = rmap.transfer(ref) @ np.linalg.inv(m[:3, :3]).T
    for k in (3, 20, 39):
        got = evaluated_vertices(obj, 1 + k) - rest
        assert np.abs(got - local[k]).max() < 2e-2, k       # cm: 0.1 mm of compact error + float
    assert np.abs(local).max() > 0.3                          # the mouth moves millimetres

    bake = ext.addon.bake
    req = bake.prepare(scene, obj, "", bake.options_of(scene.speechface, {"seed": 2}))
    assert req.retarget.cached is not None                   # the next bake finds the map
    t0 = time.perf_counter()
    bpy.ops.speechface.bake(target=obj.name, seed=2)         # the cached map: same bake
    cached = time.perf_counter() - t0
    np.testing.assert_allclose(evaluated_vertices(obj, 21) - rest, local[20], atol=2e-2)
    assert cached < 5.0

    assert obj["speechface_map"]["key"] == rmap.key
    obj.data.shape_keys.reference_key.data[0].co.x += 1.0    # the rest shape changed (as Edit
    obj.data.vertices[0].co.x += 1.0                         # Mode does, both): map rebuilt
    bpy.ops.speechface.bake(target=obj.name, seed=2)
    assert obj["speechface_map"]["key"] != rmap.key
    bpy.ops.speechface.clear(target=obj.name)
    assert "speechface_map" not in obj and obj.data.shape_keys is None


def load_head_vertices():
    from core.assets import load_default_head
    return load_default_head().vertices


def test_landmark_markers_from_the_panel(ext, speech):
    """Markers appear where the fit put them (or in a default layout when there is no fit),
    the user moves them, the bake follows them; Remove takes them away."""
    from core.assets import load_default_head
    from core.retarget import MARKERS
    head = load_default_head()
    scene = bpy.context.scene
    strip = add_speech(scene, speech)
    strip.frame_final_duration = 20
    obj = _decimated_head(scene)
    scene.speechface.target = obj
    bpy.ops.speechface.place_markers()
    marks = {n: bpy.data.objects[f"SF {obj.name} {n}"] for n in MARKERS}
    m = np.array(obj.matrix_world)
    for name, i in MARKERS.items():                       # on the face, within a few mm
        want = (head.vertices[i] * 100) @ m[:3, :3].T + m[:3, 3]
        assert np.linalg.norm(np.array(marks[name].matrix_world.translation) - want) < 4e-3, name
    bpy.ops.speechface.bake()
    key_with = obj["speechface_map"]["key"]
    bpy.ops.speechface.add_arkit_keys()                     # the same map: markers and cache
    assert obj["speechface_map"]["key"] == key_with
    marks["chin"].location.z += 0.002                      # the user corrects a marker: new map
    bpy.ops.speechface.bake()
    assert obj["speechface_map"]["key"] != key_with
    marks["mouth_corner.L"].location, marks["mouth_corner.R"].location = \
        marks["mouth_corner.R"].location.copy(), marks["mouth_corner.L"].location.copy()
    marks["eye_outer.L"].location, marks["eye_outer.R"].location = \
        marks["eye_outer.R"].location.copy(), marks["eye_outer.L"].location.copy()
    with pytest.raises(RuntimeError, match="left and right"):
        bpy.ops.speechface.bake()
    bpy.ops.speechface.remove_markers()
    assert not any(o.name.startswith(f"SF {obj.name} ") for o in bpy.data.objects)


def test_markers_get_a_default_layout_when_there_is_no_face_to_find(ext):
    scene = bpy.context.scene
    bpy.ops.mesh.primitive_uv_sphere_add(radius=0.1)
    sphere = bpy.context.active_object
    scene.speechface.target = sphere
    bpy.ops.speechface.place_markers()
    placed = [o for o in bpy.data.objects if o.name.startswith(f"SF {sphere.name} ")]
    assert len(placed) == 8


def test_separate_teeth_follow_the_jaw(ext, speech):
    """Lower teeth kept as their own object (parented to the head, with their own animation)
    move with the jaw; Clear gives them back their transforms."""
    from core.assets import load_default_head
    from core.jaw import lower_teeth
    head = load_default_head()
    scene, obj, strip = head_scene(speech)
    strip.frame_final_duration = 45
    idx = lower_teeth(head)
    mesh = bpy.data.meshes.new("Teeth")
    mesh.from_pydata(head.vertices[idx].tolist(), [], [])         # the teeth points, as a mesh
    teeth = bpy.data.objects.new("Teeth", mesh)
    coll = bpy.data.collections.new("Mouth parts")
    scene.collection.children.link(coll)
    coll.objects.link(teeth)
    teeth.parent = obj
    teeth.keyframe_insert("location", frame=1)                    # the user's own animation
    scene.speechface.jaw_objects = coll
    before = snapshot(bpy)
    bpy.ops.speechface.bake(seed=3)
    ad = teeth.animation_data
    assert [t.name for t in ad.nla_tracks] == ["Speechface"] and ad.action is not None
    template = np.array([v.co for v in obj.data.shape_keys.reference_key.data], np.float32)
    ref = reference_offsets(speech, 0.0, 45, scene.render.fps / scene.render.fps_base, template, seed=3)
    opened = int(np.argmax(ref[:, idx, 2].mean(1) * -1))           # the frame the jaw is lowest
    assert ref[opened, idx, 2].mean() < -2e-3
    for k in (opened, 10):
        scene.frame_set(1 + k)
        pts = np.array([teeth.matrix_world @ v.co for v in teeth.data.vertices])
        want = head.vertices[idx] + ref[k, idx]
        assert np.abs(pts.mean(0) - want.mean(0)).max() < 1e-4, k     # the centroid exactly
        assert np.linalg.norm(pts - want, axis=1).max() < 1e-3, k      # rigid: within 1 mm
    bpy.ops.speechface.clear()
    assert snapshot(bpy) == before
    assert tuple(teeth.delta_location) == (0.0, 0.0, 0.0)
    assert teeth.animation_data.action is not None and not teeth.animation_data.nla_tracks
