"""One bake in three steps, so the slow part can run off Blender's main thread:

1. ``prepare`` (main thread): read and check everything from Blender -> a ``BakeRequest``
   of plain Python/numpy data; raises ``BakeError`` before anything changes.
2. ``compute`` (any thread, no bpy): audio -> animation -> options -> shape-key data.
3. ``apply`` (main thread): replace the object's previous Speechface bake with the new one.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass

import numpy as np

from .scene_data import (BakeError, StripAudio, check_target, find_sound_strip, has_head_topology,
                         object_scale, polygons, rest_vertices, strip_audio, world_matrix,
                         world_rest)

from .writers import MAP_PROP


@dataclass
class Retargeting:
    """A mesh of another topology: its rest shape in world units (N, 3), its faces, the
    object's matrix (4, 4), and the cached map if it still fits the mesh."""
    world: np.ndarray
    faces: list
    matrix: np.ndarray
    cached: object = None
    landmarks: list | None = None      # [(template vertex, world point)] from placed markers

    def to_local(self, offsets_world: np.ndarray) -> np.ndarray:
        """(..., N, 3) world-unit offsets -> the mesh's local units."""
        return (offsets_world @ np.linalg.inv(self.matrix[:3, :3]).T).astype(np.float32)


@dataclass
class BakeRequest:
    audio: StripAudio
    object_name: str
    template_m: np.ndarray        # (V, 3) metres: the mesh's rest shape as the model sees it
    scale: float                  # metres per local unit
    options: dict                 # OPTION_NAMES -> value
    retarget: Retargeting | None = None    # set when the mesh has its own topology
    rig: "RigTarget | None" = None         # output mode RIG: the character's keys to drive
    jaw: list | None = None                # [JawObject]: separate teeth/tongue following the jaw
    placement: tuple | None = None         # head topology: similarity (s, R, t) template -> world


@dataclass
class JawObject:
    """A teeth or tongue object: its name, parent-space matrix Q (4, 4: parent world @ parent
    inverse), location (3,), rotation matrix (3, 3) and rotation mode. Its new world matrix is
    J @ world, J the jaw's world motion: in parent space L = Q^-1 J Q, location L_R loc + L_t,
    and the delta rotation L_R."""
    name: str
    q: np.ndarray
    location: np.ndarray
    rotation: np.ndarray
    mode: str


@dataclass
class RigTarget:
    """The character's own shape keys to key: mapping (core.rig_drive.RigMapping), names of
    the keys in the order of ``deltas`` (K, N*3) local units (relative to the reference key)."""
    mapping: object
    names: list
    deltas: np.ndarray


@dataclass
class BakeResult:
    request: BakeRequest
    mode: str
    n_frames: int
    compact: object = None        # core.shapes.CompactKeys in local units (compact mode)
    animation: object = None      # core.pipeline.Animation shaped, metres (exact mode)
    seconds: float = 0.0
    new_map: object = None        # a RetargetMap built by this bake (cached on the object)
    rig_weights: np.ndarray | None = None   # RIG mode: (T, K) values of request.rig.names
    jaw_keys: dict | None = None            # jaw object name -> (delta loc (T, 3), quat (T, 4))

    def local_animation(self, anim):
        """``anim`` (template metres) on the mesh in its local units, still low-rank:
        (coeffs (T, R), basis (R, N*3), bias (N*3,)); offsets[t] = coeffs[t] @ basis + bias."""
        req = self.request
        if req.retarget is None:
            return anim.coeffs, anim.basis / req.scale, anim.bias / req.scale
        coeffs, basis, bias = self.map.transfer_animation(anim)           # target space
        n = self.map.n_target
        basis = req.retarget.to_local(basis.reshape(len(basis), n, 3)).reshape(len(basis), -1)
        return coeffs, basis, req.retarget.to_local(bias.reshape(n, 3)).reshape(-1)

    def local_blocks(self, chunk: int = 256):
        """Exact mode: (start, offsets (n, N, 3) in the mesh's local units) blocks."""
        coeffs, basis, bias = self.local_animation(self.animation)
        for start in range(0, len(coeffs), chunk):
            block = coeffs[start:start + chunk] @ basis + bias
            yield start, block.reshape(len(block), -1, 3).astype(np.float32)

    @property
    def map(self):
        r = self.request.retarget
        return self.new_map if self.new_map is not None else (r.cached if r else None)


def prepare(scene, obj, strip_name: str, options: dict) -> BakeRequest:
    from ..core.assets import load_default_head
    from ..core.shapes import fit_template

    check_target(obj, scene)
    head = load_default_head()
    audio = strip_audio(scene, find_sound_strip(scene, strip_name))
    options = dict(options)
    if options["model_source"] == "IDENTITY":
        from .identity_ops import identity_path
        options["checkpoint"], options["model_source"] = str(identity_path(options["identity"])), "FILE"
    if options["model_source"] == "FILE":
        import bpy
        options["checkpoint"] = bpy.path.abspath(options["checkpoint"]) if options["checkpoint"] else ""
        if not options["checkpoint"]:
            raise BakeError("Model is set to Checkpoint File but no file is chosen: pick a "
                            ".safetensors checkpoint or use the bundled model")
    rig = rig_target(obj, options) if options["output_mode"] == "RIG" else None
    jaw = jaw_objects(scene, obj)
    if has_head_topology(obj, head):
        template, scale = fit_template(rest_vertices(obj), head.vertices, object_scale(obj, scene))
        placement = None
        if jaw:
            from ..core.retarget import _similarity
            world = world_rest(obj)
            placement = _similarity(template.astype(np.float64), world, np.ones(len(world)))
        return BakeRequest(audio, obj.name, template, scale, options, rig=rig, jaw=jaw,
                           placement=placement)
    return BakeRequest(audio, obj.name, head.vertices, 1.0, options, retargeting_of(obj), rig, jaw)


def retargeting_of(obj) -> Retargeting:
    """What retargeting needs of a mesh of another topology, with its cached map if valid."""
    from ..core.retarget import mesh_key
    world, faces, landmarks = world_rest(obj), polygons(obj), marker_landmarks(obj)
    return Retargeting(world, faces, world_matrix(obj),
                       load_map(obj, mesh_key(world, faces, landmarks)), landmarks)


def build_map(retargeting: Retargeting, progress=None):
    """The cached map, or a new one (through the markers if any); RetargetError -> BakeError."""
    from ..core.retarget import RetargetError, retarget
    if retargeting.cached is not None:
        return retargeting.cached
    try:
        return retarget(retargeting.world, retargeting.faces, landmarks=retargeting.landmarks,
                        progress=progress)
    except RetargetError as ex:
        raise BakeError(str(ex)) from None


def jaw_objects(scene, face) -> list:
    """The separate teeth/tongue objects of the panel's collection (not the face itself)."""
    coll = scene.speechface.jaw_objects
    out = []
    for o in (coll.all_objects if coll is not None else ()):
        if o == face:
            continue
        q = np.array(o.parent.matrix_world @ o.matrix_parent_inverse, np.float64) if o.parent \
            else np.eye(4)
        loc, rot, _ = o.matrix_basis.decompose()
        out.append(JawObject(o.name, q, np.array(loc, np.float64),
                             np.array(rot.to_matrix(), np.float64), o.rotation_mode))
    return out


def marker_name(obj, name: str) -> str:
    return f"SF {obj.name} {name}"


def marker_landmarks(obj):
    """[(template vertex, world point)] of the landmark markers placed for obj, or None."""
    import bpy

    from ..core.retarget import MARKERS
    found = [(i, list(bpy.data.objects[marker_name(obj, n)].matrix_world.translation))
             for n, i in MARKERS.items() if marker_name(obj, n) in bpy.data.objects]
    return found or None


def rig_mapping(obj, text: str = ""):
    """The mapping to drive: the JSON the user set, else detected from the key names."""
    from ..core.rig_drive import RigMapping, detect
    key = obj.data.shape_keys
    names = [kb.name for kb in key.key_blocks] if key else []
    if text.strip():
        try:
            mapping = RigMapping.from_json(text)
        except ValueError as ex:
            raise BakeError(f"The key mapping is not valid JSON ({ex}): detect it again") from None
        missing = [v for v in mapping.keys.values() if v not in names]
        if missing:
            raise BakeError(f"The key mapping names keys {obj.name!r} does not have: "
                            f"{', '.join(missing[:5])}: fix the mapping or detect it again")
        return mapping
    mapping = detect(n for n in names if not n.startswith("speechface."))
    if mapping is None:
        raise BakeError(f"{obj.name!r} has no ARKit, Oculus, VRM or Preston Blair shape keys: "
                        "add them (Add ARKit Shape Keys), set a key mapping, or choose another "
                        "output")
    return mapping


def rig_target(obj, options: dict) -> RigTarget:
    mapping = rig_mapping(obj, options.get("rig_mapping", ""))
    key = obj.data.shape_keys
    ref = np.empty(len(obj.data.vertices) * 3, np.float32)
    key.reference_key.data.foreach_get("co", ref)
    names = list(mapping.keys.values())
    deltas = np.empty((len(names), len(ref)), np.float32)
    for i, name in enumerate(names):
        key.key_blocks[name].data.foreach_get("co", deltas[i])
        deltas[i] -= ref
    return RigTarget(mapping, names, deltas)


def load_map(obj, key: str):
    """The object's cached retarget map if it was built for this very mesh, else None."""
    from ..core.retarget import RetargetMap
    d = obj.get(MAP_PROP)
    if d is None or d.get("key") != key:
        return None
    get = (lambda v: v.to_list() if hasattr(v, "to_list") else v)
    return RetargetMap.from_arrays({k: get(d[k]) for k in d.keys()})


def compute(req: BakeRequest, progress=None, cancel=None) -> BakeResult:
    """The slow part; touches no Blender data. progress(0..1), cancel() -> True stops it
    (``core.pipeline.Cancelled``)."""
    from ..core.assets import load_default_head
    from ..core.audio import AudioError, load_speech
    from ..core.checkpoint import CheckpointError
    from ..core.pipeline import animate, get_model, is_silent
    from ..core.shapes import BakeOptions, compact_keys, shape_animation

    t0 = time.perf_counter()
    o = req.options
    samples, rate = req.audio.read()
    new_map = None
    share = 0.0                          # of the progress bar that retargeting takes
    if req.retarget is not None and req.retarget.cached is None:
        share = 0.4
        try:
            new_map = build_map(req.retarget, (lambda f: progress(share * f)) if progress else None)
        except BakeError as ex:
            raise BakeError(f"{req.object_name!r}: {ex}") from None
        if cancel is not None and cancel():
            from ..core.pipeline import Cancelled
            raise Cancelled("bake cancelled")
    try:
        x = load_speech(samples, rate)
    except AudioError as ex:
        raise BakeError(f"Strip {req.audio.name!r}: {ex}") from None
    if is_silent(x):
        raise BakeError(f"Strip {req.audio.name!r} is silent where it shows: nothing to animate "
                        "(check its volume, trims and sound file)")
    try:
        model = get_model(o["checkpoint"] if o["model_source"] == "FILE" else None)
    except CheckpointError as ex:
        raise BakeError(str(ex)) from None
    anim = animate(x, 16000, fps=req.audio.fps, template=req.template_m, model=model,
                   seed=int(o["seed"]), cancel=cancel,
                   progress=(lambda f: progress(share + (0.9 - share) * f)) if progress else None)
    n = min(anim.n_frames, req.audio.n_frames)
    anim.coeffs, anim.arkit_weights = anim.coeffs[:n], anim.arkit_weights[:n]
    try:
        opts = BakeOptions(float(o["lip_intensity"]), bool(o["upper_face"]),
                           float(o["upper_strength"]), float(o["smoothing"])).check()
    except ValueError as ex:
        raise BakeError(str(ex)) from None
    anim = shape_animation(anim, load_default_head().masks, opts)
    result = BakeResult(req, o["output_mode"], n, new_map=new_map)
    if req.jaw:
        result.jaw_keys = jaw_keys(req, result, anim)
    if o["output_mode"] == "RIG":
        result.rig_weights = rig_weights(req, result, anim, opts)
    elif o["output_mode"] == "COMPACT":
        keys = compact_keys(anim)
        if req.retarget is not None:
            keys.deltas = req.retarget.to_local(result.map.transfer(keys.deltas))
        else:
            keys.deltas = (keys.deltas / req.scale).astype(np.float32)
        result.compact = keys
    else:
        result.animation = anim
    if cancel is not None and cancel():
        from ..core.pipeline import Cancelled
        raise Cancelled("bake cancelled")
    if progress:
        progress(1.0)
    result.seconds = time.perf_counter() - t0
    return result


def jaw_keys(req: BakeRequest, result: BakeResult, anim) -> dict:
    """Per jaw object, the delta location (T, 3) and delta rotation quaternion (T, 4, w first)
    that carry it with the jaw."""
    from ..core.assets import load_default_head
    from ..core.jaw import jaw_motion, world_jaw
    r, t = jaw_motion(anim, load_default_head())
    if req.retarget is not None:
        m = result.map
        s_, ra, ta = m.scale, m.rotation, m.translation
    else:
        s_, ra, ta = req.placement
    world = world_jaw(r, t, s_, ra, ta)                                  # (T, 4, 4)
    out = {}
    for j in req.jaw:
        local = np.einsum("ij,tjk,kl->til", np.linalg.inv(j.q), world, j.q)   # in parent space
        loc = np.einsum("tij,j->ti", local[:, :3, :3], j.location) + local[:, :3, 3]
        # Blender composes the delta rotation on the left (D @ R): D is the jaw's own rotation
        out[j.name] = (loc - j.location, _quaternions(local[:, :3, :3]))
    return out


def _quaternions(r: np.ndarray) -> np.ndarray:
    """Rotation matrices (T, 3, 3) -> unit quaternions (T, 4), w first, w >= 0."""
    w = np.sqrt(np.clip(1 + r[:, 0, 0] + r[:, 1, 1] + r[:, 2, 2], 1e-12, None)) / 2
    x = (r[:, 2, 1] - r[:, 1, 2]) / (4 * w)
    y = (r[:, 0, 2] - r[:, 2, 0]) / (4 * w)
    z = (r[:, 1, 0] - r[:, 0, 1]) / (4 * w)
    q = np.stack([w, x, y, z], 1)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def rig_weights(req: BakeRequest, result: BakeResult, anim, opts) -> np.ndarray:
    """(T, K) values for the character's keys: the model's ARKit head for ARKit names (with the
    panel's intensities and smoothing), else bounded least squares onto the keys' shapes."""
    from ..core.rig_drive import arkit_columns, fit_weights
    from ..core.shapes import smooth_frames
    rig = req.rig
    if rig.mapping.convention == "arkit":
        cols, names = arkit_columns(rig.mapping)
        from ..core.arkit import ARKIT_NAMES
        w = smooth_frames(anim.arkit_weights, opts.smoothing)[:, cols]
        up = opts.upper_strength if opts.upper_face else 0.0
        gain = np.array([opts.lip_intensity if ARKIT_NAMES[c].startswith(("jaw", "mouth", "tongue", "cheekPuff"))
                         else up for c in cols], np.float32)
        rig.names = names
        return np.clip(w * gain, 0.0, 1.0).astype(np.float32)
    return fit_weights(*result.local_animation(anim), rig.deltas)


def apply(result: BakeResult, scene, obj) -> dict:
    """Replace obj's Speechface bake with ``result`` and record the shot in the scene."""
    from . import writers

    req = result.request
    active = obj.active_shape_key_index
    writers.clear(obj, keep_map=True)
    first = req.audio.first_frame
    if result.mode == "RIG":
        info = writers.write_rig(obj, req.rig.names, result.rig_weights, first)
    elif result.mode == "COMPACT":
        info = writers.write_compact(obj, result.compact.deltas, result.compact.values, first)
    else:
        info = writers.write_exact(obj, result.local_blocks(), result.n_frames, first)
    if result.new_map is not None:
        obj[MAP_PROP] = result.new_map.arrays()
    if result.jaw_keys:
        import bpy
        for name, (dloc, quat) in result.jaw_keys.items():
            if name in bpy.data.objects:
                writers.write_jaw(obj, bpy.data.objects[name], dloc, quat, first)
    obj.active_shape_key_index = min(active, len(obj.data.shape_keys.key_blocks) - 1)
    record_shot(scene, req.audio.name, obj, req.options)
    obj.data.update()
    return info


def record_shot(scene, strip: str, obj, options: dict) -> None:
    """Remember the strip-object pair and its options in the scene (for ``speechface batch``)."""
    shots = scene.speechface.shots
    for shot in shots:
        if shot.target == obj:
            break
    else:
        shot = shots.add()
        shot.target = obj
    shot.strip = strip
    shot.options = json.dumps(options, sort_keys=True)


def options_of(settings, overrides=None) -> dict:
    """The bake options: the scene settings, with ``overrides`` (name -> value) on top."""
    from .props import OPTION_NAMES
    out = {n: getattr(settings, n) for n in OPTION_NAMES}
    out.update(overrides or {})
    return out


def describe(result: BakeResult, info: dict) -> str:
    a = result.request.audio
    what = (f"keyed {info['keys']} of its shape keys ({result.request.rig.mapping.convention})"
            if result.mode == "RIG" else f"{info['keys']} shape keys")
    return (f"Speechface: baked {a.duration_s:.1f} s of {a.name!r} onto {result.request.object_name!r}"
            f" ({what}, {info['frames']} frames from frame {a.first_frame}"
            f"{', on an NLA track' if info['placed'] == 'nla' else ''}) in {result.seconds:.1f} s")


def bake_now(scene, obj, strip_name: str, options: dict) -> str:
    """prepare + compute + apply on the calling thread (scripts, batch, headless)."""
    result = compute(prepare(scene, obj, strip_name, options))
    return describe(result, apply(result, scene, obj))
