"""Blender data -> what the pipeline needs: a sound strip's audio and timing, a face mesh's rest
shape. Everything is checked here, before anything is changed, so a bad input stops a bake with
one line that says what to do and leaves the scene as it was.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

from pathlib import Path

import bpy
import numpy as np


class BakeError(Exception):
    """A bake cannot run; the message (one line) tells the user what to do."""


def all_strips(scene) -> list:
    """Every strip of the scene's sequencer, inside meta strips too (4.5: ``sequences_all``)."""
    se = scene.sequence_editor
    if se is None:
        return []
    strips = getattr(se, "strips_all", None)
    if strips is None:
        strips = se.sequences_all
    return list(strips)


def sound_strips(scene) -> list:
    return [s for s in all_strips(scene) if s.type == "SOUND"]


def default_strip_name(scene) -> str:
    """The active strip if it is a sound, else the only sound strip, else ''."""
    se = scene.sequence_editor
    active = getattr(se, "active_strip", None) if se else None
    if active is not None and active.type == "SOUND":
        return active.name
    strips = sound_strips(scene)
    return strips[0].name if len(strips) == 1 else ""


def find_sound_strip(scene, name: str):
    strips = sound_strips(scene)
    if not strips:
        raise BakeError("The scene has no sound strip: add the speech in the Video Sequencer "
                        "(Add > Sound) and pick it in the Speechface panel")
    if not name:
        name = default_strip_name(scene)
        if not name:
            raise BakeError("Pick the sound strip to animate from in the Speechface panel "
                            "(the scene has several)")
    for s in strips:
        if s.name == name:
            return s
    raise BakeError(f"No sound strip named {name!r} in scene {scene.name!r}: pick one of "
                    + ", ".join(repr(s.name) for s in strips))


@dataclass
class StripAudio:
    """What to animate: ``source`` is a file path or the bytes of a packed sound (soundfile
    reads either); start_s: where in the sound the visible strip starts, seconds;
    duration_s: how long it shows; first_frame: the scene frame of its first sample;
    n_frames: scene frames it covers; fps: the scene's exact rate (fps / fps_base)."""
    name: str
    source: object
    start_s: float
    duration_s: float
    first_frame: int
    n_frames: int
    fps: float

    def read(self):
        """-> (samples (S,) or (S, C) float32, sample rate Hz) of the visible part only."""
        from ..core.audio import AudioError, check_samples, read_audio
        try:
            if isinstance(self.source, bytes):
                import soundfile as sf
                try:
                    x, rate = sf.read(io.BytesIO(self.source), dtype="float32", always_2d=False)
                except Exception as ex:  # soundfile's own errors
                    raise BakeError(f"Strip {self.name!r}: the packed sound cannot be read ({ex}); "
                                    "unpack it or use a wav, flac or ogg file") from None
                x = check_samples(x, rate)
            else:
                x, rate = read_audio(self.source)
        except AudioError as ex:
            raise BakeError(f"Strip {self.name!r}: {ex}") from None
        a = int(round(self.start_s * rate))
        n = int(round(self.duration_s * rate))
        part = x[max(a, 0):max(a, 0) + n]
        if len(part) < n:                      # the strip runs past the end of the sound
            pad = np.zeros((n - len(part),) + part.shape[1:], np.float32)
            part = np.concatenate([part, pad])
        return part, rate


def strip_audio(scene, strip) -> StripAudio:
    """Audio source and timing of a sound strip; trims, the strip's sound offset and the scene's
    fractional frame rates (23.976 = 24000/1001) are honoured."""
    if strip.mute:
        raise BakeError(f"Strip {strip.name!r} is muted: unmute it, or pick another strip")
    sound = strip.sound
    if sound is None:
        raise BakeError(f"Strip {strip.name!r} has no sound: pick its file in the strip's "
                        "properties")
    if sound.packed_file is not None:
        source = bytes(sound.packed_file.data)
    else:
        path = bpy.path.abspath(sound.filepath, library=sound.library)
        import os
        if not os.path.isfile(path):
            raise BakeError(f"Strip {strip.name!r}: its sound file {path!r} is missing: relink "
                            "it (strip properties) or pack it into the .blend")
        source = path
    fps = scene.render.fps / scene.render.fps_base
    first = int(strip.frame_final_start)
    n_frames = int(strip.frame_final_end) - first
    if n_frames <= 0:
        raise BakeError(f"Strip {strip.name!r} shows no frames: widen it in the Sequencer")
    start_s = (first - float(strip.frame_start)) / fps + float(getattr(strip, "sound_offset", 0.0))
    return StripAudio(strip.name, source, start_s, n_frames / fps, first, n_frames, fps)


def check_target(obj, scene=None) -> None:
    """Raise BakeError unless ``obj`` is a mesh a bake may change."""
    if obj is None:
        raise BakeError("Pick the face mesh to animate in the Speechface panel "
                        "(or add one: Add Speechface Head)")
    if obj.type != "MESH":
        raise BakeError(f"{obj.name!r} is a {obj.type.lower()}, not a mesh: pick the face mesh")
    mesh = obj.data
    if len(mesh.polygons) == 0:
        raise BakeError(f"{obj.name!r} has no faces: pick the face mesh")
    if obj.library is not None or mesh.library is not None or (
            obj.override_library is not None or mesh.override_library is not None):
        raise BakeError(f"{obj.name!r} is linked from another file and cannot be changed here: "
                        "make it local (Object > Relations > Make Local) or bake in its own file")
    if obj.mode == "EDIT" or mesh.is_editmode:
        raise BakeError(f"{obj.name!r} is in Edit Mode: switch to Object Mode and bake again")


def rest_vertices(obj) -> np.ndarray:
    """The mesh's rest shape (V, 3) float32, local units: the reference shape key if any."""
    mesh = obj.data
    co = np.empty(len(mesh.vertices) * 3, np.float32)
    key = mesh.shape_keys
    if key is not None and key.reference_key is not None:
        key.reference_key.data.foreach_get("co", co)
    else:
        mesh.vertices.foreach_get("co", co)
    return co.reshape(-1, 3)


def has_head_topology(obj, head) -> bool:
    """True if the mesh has the default head's topology (any identity): animated directly;
    otherwise the bake retargets (``core.retarget``)."""
    mesh = obj.data
    if len(mesh.vertices) != head.n_vertices or len(mesh.polygons) != len(head.faces):
        return False
    loops = np.empty(len(mesh.loops), np.int32)
    mesh.loops.foreach_get("vertex_index", loops)
    return len(loops) == head.faces.size and bool(np.array_equal(loops, head.faces.reshape(-1)))


def polygons(obj) -> list:
    """The mesh's faces as a list of vertex-index arrays."""
    mesh = obj.data
    loops = np.empty(len(mesh.loops), np.int64)
    mesh.loops.foreach_get("vertex_index", loops)
    start = np.empty(len(mesh.polygons), np.int64)
    mesh.polygons.foreach_get("loop_start", start)
    order = np.argsort(start)
    return [p for p in np.split(loops, start[order][1:])] if len(start) else []


def world_matrix(obj) -> np.ndarray:
    return np.array(obj.matrix_world, np.float64)


def world_rest(obj) -> np.ndarray:
    """The mesh's rest shape (V, 3) float64 in world units."""
    m = world_matrix(obj)
    return rest_vertices(obj).astype(np.float64) @ m[:3, :3].T + m[:3, 3]


def user_folder(name: str) -> Path:
    """A folder of the extension's own in Blender's user data (created if missing)."""
    package = __package__.rsplit(".", 1)[0]
    return Path(bpy.utils.extension_path_user(package, path=name, create=True))


def object_scale(obj, scene) -> float:
    """Metres per local unit of the object: its world scale (mean over axes) times the scene's
    unit scale."""
    s = obj.matrix_world.to_scale()
    return float(abs(s.x) + abs(s.y) + abs(s.z)) / 3.0 * float(scene.unit_settings.scale_length)
