"""Write a bake into Blender as shape keys with keyframed values, and take it out again.

What Speechface makes, and only that, is marked so re-baking and Clear never touch the user's
own data:
- shape keys whose names start with ``KEY_PREFIX``;
- one Action per mesh with the custom property ``speechface`` (the object's name);
- if the shape keys already had an Action of the user's, an NLA track named ``NLA_TRACK``;
- a Basis key it had to add to a mesh without shape keys (``BASIS_MARK`` on the Key), removed
  again by Clear when no other key is left;
- on a mesh of another topology, the retarget map cached on the object (``MAP_PROP``);
- when it keys the character's own shape keys, their values from before (``RIG_VALUES`` on
  the Key), which Clear puts back.

Keyframes use the slotted (layered) Action API, which Blender 4.4+ and 5.0 share.
"""
from __future__ import annotations

import bpy
import numpy as np

KEY_PREFIX = "speechface."
NLA_TRACK = "Speechface"
ACTION_MARK = "speechface"
BASIS_MARK = "speechface_made_basis"
RIG_VALUES = "speechface_rig_values"   # on the Key: the driven keys' own values, put back by Clear
MAP_PROP = "speechface_map"    # on the object: the cached retarget map (core.retarget.RetargetMap)
LINEAR = 1                     # Keyframe.interpolation enum value of 'LINEAR'


def is_ours(name: str) -> bool:
    return name.startswith(KEY_PREFIX)


def _ensure_basis(obj):
    mesh = obj.data
    if mesh.shape_keys is None:
        obj.shape_key_add(name="Basis", from_mix=False)
        mesh.shape_keys[BASIS_MARK] = True
    return mesh.shape_keys


def _add_keys(obj, names, deltas_local: np.ndarray, slider: tuple) -> None:
    """Shape keys ``names`` = reference shape + deltas (N, V, 3) local units, value 0."""
    key = _ensure_basis(obj)
    ref = np.empty(len(obj.data.vertices) * 3, np.float32)
    key.reference_key.data.foreach_get("co", ref)
    for name, delta in zip(names, deltas_local):
        kb = obj.shape_key_add(name=name, from_mix=False)
        kb.data.foreach_set("co", ref + delta.reshape(-1))
        kb.slider_min, kb.slider_max = slider
        kb.value = 0.0


def _new_action(name: str, face, target, id_type: str = "KEY", **marks):
    """A slotted Action ``name`` marked as Speechface's for ``face`` (plus ``marks``), with one
    keyframe strip for the ID ``target``. -> (action, slot, channelbag)."""
    act = bpy.data.actions.new(name)
    act[ACTION_MARK] = face.name
    for k, v in marks.items():
        act[k] = v
    slot = act.slots.new(id_type=id_type, name=target.name)
    strip = act.layers.new("Speechface").strips.new(type="KEYFRAME")
    return act, slot, strip.channelbag(slot, ensure=True)


def _curve(bag, path: str, index: int, frames, values) -> None:
    """One F-curve, linear keys (frames (T,), values (T,))."""
    fc = bag.fcurves.new(path, index=index)
    fc.keyframe_points.add(len(frames))
    co = np.empty(2 * len(frames), np.float32)
    co[0::2], co[1::2] = frames, values
    fc.keyframe_points.foreach_set("co", co)
    fc.keyframe_points.foreach_set("interpolation", np.full(len(frames), LINEAR, np.int32))
    fc.update()


def _key_curve(bag, name: str, frames: np.ndarray, values: np.ndarray) -> None:
    _curve(bag, f'key_blocks["{name}"].value', 0, frames, values)


def _place(key, act, slot, first_frame: int) -> str:
    """Make the Action drive the ID (a Key, or an object): as its Action if it has none, else
    on our own NLA track above the user's Action. Returns where it went."""
    ad = key.animation_data or key.animation_data_create()
    if ad.action is None:
        ad.action = act
        ad.action_slot = slot
        return "action"
    track = ad.nla_tracks.new()
    track.name = NLA_TRACK
    strip = track.strips.new(act.name, int(first_frame), act)
    if getattr(strip, "action_slot", None) is None and hasattr(strip, "action_slot"):
        strip.action_slot = slot
    return "nla"


def write_compact(obj, deltas_local: np.ndarray, values: np.ndarray, first_frame: int) -> dict:
    """Compact mode: R keys ``speechface.basis.NN`` (deltas (R, V, 3), local units) with values
    (T, R) in -1..1 keyed at frames first_frame .. first_frame + T - 1."""
    names = [f"{KEY_PREFIX}basis.{r:02d}" for r in range(len(deltas_local))]
    _add_keys(obj, names, deltas_local, (-1.0, 1.0))
    key = obj.data.shape_keys
    act, slot, bag = _new_action(f"Speechface {obj.name}", obj, key)
    frames = first_frame + np.arange(len(values), dtype=np.float32)
    for r, name in enumerate(names):
        _key_curve(bag, name, frames, values[:, r])
    return {"keys": len(names), "frames": len(values), "placed": _place(key, act, slot, first_frame)}


def write_exact(obj, frames_local, n_frames: int, first_frame: int) -> dict:
    """Exact mode: one key per frame, ``speechface.frame.NNNNN`` holding that frame's offsets
    (frames_local yields (start, (n, V, 3)) blocks in local units), keyed 0-1-0 around it."""
    names = [f"{KEY_PREFIX}frame.{k:05d}" for k in range(n_frames)]
    for start, block in frames_local:
        _add_keys(obj, names[start:start + len(block)], block, (0.0, 1.0))
    key = obj.data.shape_keys
    act, slot, bag = _new_action(f"Speechface {obj.name}", obj, key)
    for k, name in enumerate(names):
        f = first_frame + k
        _key_curve(bag, name, np.array([f - 1, f, f + 1], np.float32),
                   np.array([0.0, 1.0, 0.0], np.float32))
    return {"keys": n_frames, "frames": n_frames, "placed": _place(key, act, slot, first_frame)}


def write_rig(obj, names, weights: np.ndarray, first_frame: int) -> dict:
    """RIG mode: the character's own keys ``names`` keyed with weights (T, K) from first_frame,
    in Speechface's own Action (their static values stay as they are)."""
    key = obj.data.shape_keys
    if RIG_VALUES not in key:          # playback overwrites them: remember the user's values
        key[RIG_VALUES] = {name: float(key.key_blocks[name].value) for name in names}
    act, slot, bag = _new_action(f"Speechface {obj.name}", obj, key)
    frames = first_frame + np.arange(len(weights), dtype=np.float32)
    for k, name in enumerate(names):
        _key_curve(bag, name, frames, weights[:, k])
    return {"keys": len(names), "frames": len(weights), "placed": _place(key, act, slot, first_frame)}


JAW_MARK = "speechface_jaw"    # on a teeth/tongue object's Action: the face it follows
JAW_REST = "speechface_jaw_rest"   # on that object: its delta transforms before, for Clear


def write_jaw(face, obj, dloc: np.ndarray, quat: np.ndarray, first_frame: int) -> None:
    """Key a separate teeth/tongue object's delta location (T, 3) and delta rotation (T, 4
    quaternions, w first; converted for Euler modes) from first_frame, in an Action of its own
    (on an NLA track when it already has one)."""
    from mathutils import Quaternion
    if JAW_REST not in obj:
        obj[JAW_REST] = {"location": list(obj.delta_location),
                         "quaternion": list(obj.delta_rotation_quaternion),
                         "euler": list(obj.delta_rotation_euler)}
    act, slot, bag = _new_action(f"Speechface jaw {obj.name}", face, obj, "OBJECT",
                                 **{JAW_MARK: face.name})
    frames = first_frame + np.arange(len(dloc), dtype=np.float32)
    for i in range(3):
        _curve(bag, "delta_location", i, frames, dloc[:, i])
    if obj.rotation_mode == "QUATERNION":
        for i in range(4):
            _curve(bag, "delta_rotation_quaternion", i, frames, quat[:, i])
    elif obj.rotation_mode != "AXIS_ANGLE":
        eul = np.array([Quaternion(q).to_euler(obj.rotation_mode) for q in quat], np.float32)
        for i in range(3):
            _curve(bag, "delta_rotation_euler", i, frames, eul[:, i])
    _place(obj, act, slot, first_frame)


def clear_jaw(face) -> int:
    """Remove the jaw animation Speechface made for ``face`` from every object, with their
    delta transforms as they were. Returns how many objects it touched."""
    n = 0
    for obj in bpy.data.objects:
        ad = obj.animation_data
        if ad is None:
            continue
        ours = set()
        if ad.action is not None and ad.action.get(JAW_MARK) == face.name:
            ours.add(ad.action)
            ad.action = None
        for track in list(ad.nla_tracks):
            if any(st.action is not None and st.action.get(JAW_MARK) == face.name for st in track.strips):
                ours.update(st.action for st in track.strips if st.action is not None)
                ad.nla_tracks.remove(track)
        if not ours:
            continue
        n += 1
        rest = obj.get(JAW_REST)
        if rest is not None:
            obj.delta_location = rest["location"]
            obj.delta_rotation_quaternion = rest["quaternion"]
            obj.delta_rotation_euler = rest["euler"]
            del obj[JAW_REST]
        for act in ours:
            if act.users == 0:
                bpy.data.actions.remove(act)
    return n


def has_bake(obj) -> bool:
    key = obj.data.shape_keys if obj is not None and obj.type == "MESH" else None
    if key is None:
        return False
    ad = key.animation_data
    ours_anim = ad is not None and ((ad.action is not None and ACTION_MARK in ad.action)
                                    or any(t.name == NLA_TRACK for t in ad.nla_tracks))
    return ours_anim or any(is_ours(kb.name) for kb in key.key_blocks)


def clear(obj, keep_map: bool = False) -> int:
    """Remove everything Speechface made on ``obj`` (but the cached retarget map with
    ``keep_map``, as a re-bake does), the jaw animation of its teeth and tongue objects
    included; the user's keys, their values and their animation stay as they are. Returns the
    number of shape keys removed."""
    if MAP_PROP in obj and not keep_map:
        del obj[MAP_PROP]
    clear_jaw(obj)
    key = obj.data.shape_keys
    if key is None:
        return 0
    ours = [kb for kb in key.key_blocks if is_ours(kb.name)]
    actions = set()
    ad = key.animation_data
    if ad is not None:
        if ad.action is not None and ACTION_MARK in ad.action:
            actions.add(ad.action)
            ad.action = None
        for track in list(ad.nla_tracks):
            if track.name == NLA_TRACK or any(s.action is not None and ACTION_MARK in s.action
                                              for s in track.strips):
                actions.update(s.action for s in track.strips if s.action is not None)
                ad.nla_tracks.remove(track)
    if RIG_VALUES in key:
        for name, value in key[RIG_VALUES].items():
            if name in key.key_blocks:
                key.key_blocks[name].value = value
        del key[RIG_VALUES]
    for kb in reversed(ours):
        obj.shape_key_remove(kb)
    key = obj.data.shape_keys
    if key is not None and key.get(BASIS_MARK) and len(key.key_blocks) == 1:
        obj.shape_key_remove(key.key_blocks[0])   # the Basis we added: the mesh is as it was
    for act in actions:
        if act.users == 0 and ACTION_MARK in act:
            bpy.data.actions.remove(act)
    return len(ours)
