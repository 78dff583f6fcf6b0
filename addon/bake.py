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

from .scene_data import (BakeError, StripAudio, check_target, check_topology, find_sound_strip,
                         object_scale, rest_vertices, strip_audio)


@dataclass
class BakeRequest:
    audio: StripAudio
    object_name: str
    template_m: np.ndarray        # (V, 3) metres: the mesh's rest shape as the model sees it
    scale: float                  # metres per local unit
    options: dict                 # OPTION_NAMES -> value


@dataclass
class BakeResult:
    request: BakeRequest
    mode: str
    n_frames: int
    compact: object = None        # core.shapes.CompactKeys in local units (compact mode)
    animation: object = None      # core.pipeline.Animation shaped, metres (exact mode)
    seconds: float = 0.0


def prepare(scene, obj, strip_name: str, options: dict) -> BakeRequest:
    from ..core.assets import load_default_head
    from ..core.shapes import fit_template

    check_target(obj, scene)
    head = load_default_head()
    check_topology(obj, head)
    audio = strip_audio(scene, find_sound_strip(scene, strip_name))
    options = dict(options)
    if options["model_source"] == "FILE":
        import bpy
        options["checkpoint"] = bpy.path.abspath(options["checkpoint"]) if options["checkpoint"] else ""
        if not options["checkpoint"]:
            raise BakeError("Model is set to Checkpoint File but no file is chosen: pick a "
                            ".safetensors checkpoint or use the bundled model")
    template, scale = fit_template(rest_vertices(obj), head.vertices, object_scale(obj, scene))
    return BakeRequest(audio, obj.name, template, scale, options)


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
                   progress=(lambda f: progress(0.9 * f)) if progress else None)
    n = min(anim.n_frames, req.audio.n_frames)
    anim.coeffs, anim.arkit_weights = anim.coeffs[:n], anim.arkit_weights[:n]
    try:
        opts = BakeOptions(float(o["lip_intensity"]), bool(o["upper_face"]),
                           float(o["upper_strength"]), float(o["smoothing"])).check()
    except ValueError as ex:
        raise BakeError(str(ex)) from None
    anim = shape_animation(anim, load_default_head().masks, opts)
    result = BakeResult(req, o["output_mode"], n)
    if o["output_mode"] == "COMPACT":
        keys = compact_keys(anim)
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


def apply(result: BakeResult, scene, obj) -> dict:
    """Replace obj's Speechface bake with ``result`` and record the shot in the scene."""
    from . import writers

    req = result.request
    active = obj.active_shape_key_index
    writers.clear(obj)
    first = req.audio.first_frame
    if result.mode == "COMPACT":
        info = writers.write_compact(obj, result.compact.deltas, result.compact.values, first)
    else:
        blocks = ((s, (off / req.scale).astype(np.float32))
                  for s, off in result.animation.iter_offsets(256))
        info = writers.write_exact(obj, blocks, result.n_frames, first)
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
    return (f"Speechface: baked {a.duration_s:.1f} s of {a.name!r} onto {result.request.object_name!r}"
            f" ({info['keys']} shape keys, {info['frames']} frames from frame {a.first_frame}"
            f"{', on an NLA track' if info['placed'] == 'nla' else ''}) in {result.seconds:.1f} s")


def bake_now(scene, obj, strip_name: str, options: dict) -> str:
    """prepare + compute + apply on the calling thread (scripts, batch, headless)."""
    result = compute(prepare(scene, obj, strip_name, options))
    return describe(result, apply(result, scene, obj))
