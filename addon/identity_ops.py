"""Fit to this Character: the model fitted to the face mesh, in the background.

The mesh's rest shape is the neutral; if it already moves (its own shape-key Action, a Mesh Cache
modifier, anything that is not Speechface's) the frames under the sound strip are its take,
with the strip's audio. The checkpoint lands in the extension's user folder (``identities/``)
and the Model picker offers it as a Fitted Identity.
"""
from __future__ import annotations

from pathlib import Path

import bpy
import numpy as np
from bpy.props import FloatProperty, StringProperty

from . import job as jobs
from .scene_data import BakeError, check_target


def identities_dir() -> Path:
    from .scene_data import user_folder
    return user_folder("identities")


def fitted_identities() -> list:
    """Names of the fitted identities in the user folder, sorted."""
    return sorted(p.stem for p in identities_dir().glob("*.safetensors"))


def identity_path(name: str) -> Path:
    path = identities_dir() / f"{name}.safetensors"
    if not path.is_file():
        raise BakeError(f"No fitted identity named {name!r}: fit one (Fit to this Character) or "
                        "pick another model")
    return path


def _moves_by_itself(obj) -> bool:
    from .writers import ACTION_MARK
    key = obj.data.shape_keys
    ad = key.animation_data if key is not None else None
    keyed = ad is not None and ad.action is not None and ACTION_MARK not in ad.action
    return keyed or any(m.type == "MESH_CACHE" for m in obj.modifiers)


def character_take(scene, obj, strip_name: str):
    """The mesh's own motion under the strip as a take (offsets from the rest shape, world
    metres), or None when it does not move."""
    from ..core.audio import load_speech
    from ..core.identity import Take
    from .scene_data import find_sound_strip, strip_audio

    if not _moves_by_itself(obj) or scene.sequence_editor is None:
        return None
    audio = strip_audio(scene, find_sound_strip(scene, strip_name))
    samples, rate = audio.read()
    m = np.array(obj.matrix_world, np.float64)
    unit = float(scene.unit_settings.scale_length)
    frames = []
    current = scene.frame_current
    try:
        for f in range(audio.first_frame, audio.first_frame + audio.n_frames):
            scene.frame_set(f)
            ev = obj.evaluated_get(bpy.context.evaluated_depsgraph_get())
            mesh = ev.to_mesh()
            co = np.empty(len(mesh.vertices) * 3, np.float32)
            mesh.vertices.foreach_get("co", co)
            ev.to_mesh_clear()
            frames.append(co.reshape(-1, 3))
    finally:
        scene.frame_set(current)
    if any(len(f) != len(obj.data.vertices) for f in frames):
        raise BakeError(f"{obj.name!r} changes its vertex count over the strip (a modifier): "
                        "apply or disable it before fitting")
    from .scene_data import rest_vertices
    rest = rest_vertices(obj).astype(np.float64)
    moved = (np.stack(frames).astype(np.float64) - rest[None]) @ m[:3, :3].T * unit  # offsets, m
    return Take(audio.name, load_speech(samples, rate), moved.astype(np.float32), audio.fps)


class SPEECHFACE_OT_fit_character(bpy.types.Operator):
    """Fit the model to the face mesh (its shape, and how it moves if it already has its own
    animation under the sound strip); adds it to the Model picker as a fitted identity"""
    bl_idname = "speechface.fit_character"
    bl_label = "Fit to this Character"
    __annotations__ = {
        "target": StringProperty(name="Object"),
        "name": StringProperty(name="Identity Name", description="Default: the mesh's name"),
        "minutes": FloatProperty(name="Minutes", default=3.0, min=0.1, max=30.0,
                                 description="Tuning time when the mesh has motion to learn from"),
    }

    _session = None
    _timer = None

    def _job(self, context):
        from ..core.pipeline import DEFAULT_CHECKPOINT
        from .scene_data import polygons, world_rest
        scene = context.scene
        obj = bpy.data.objects.get(self.target) if self.target else scene.speechface.target
        check_target(obj, scene)
        neutral = world_rest(obj) * float(scene.unit_settings.scale_length)
        faces = polygons(obj)
        take = character_take(scene, obj, scene.speechface.strip)
        name = bpy.path.clean_name(self.name or obj.name)
        out = identities_dir() / f"{name}.safetensors"
        minutes = self.minutes

        def work(progress, cancel):
            from ..core.identity import FitError, fit_character
            try:
                return fit_character(neutral, faces, [take] if take else [], DEFAULT_CHECKPOINT,
                                     out, name, minutes, 0, lambda f, loss: progress(f), cancel)
            except FitError as ex:
                raise BakeError(str(ex)) from None
        return work, name

    def execute(self, context):
        try:
            work, name = self._job(context)
            report = work(lambda f: None, lambda: False)
        except BakeError as ex:
            self.report({"ERROR"}, str(ex))
            return {"CANCELLED"}
        self._use(context, name)
        self.report({"INFO"}, _describe(report))
        return {"FINISHED"}

    def invoke(self, context, event):
        if bpy.app.background:
            return self.execute(context)
        try:
            work, name = self._job(context)
        except BakeError as ex:
            self.report({"ERROR"}, str(ex))
            return {"CANCELLED"}
        self._name = name
        self._session = jobs.current = jobs.BackgroundJob(work).start()
        wm = context.window_manager
        self._timer = wm.event_timer_add(0.2, window=context.window)
        wm.progress_begin(0, 100)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        job = self._session
        if event.type == "ESC" and event.value == "PRESS":
            job.cancel()
            return {"RUNNING_MODAL"}
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        wm = context.window_manager
        if not job.done:
            wm.progress_update(int(100 * job.progress))
            context.workspace.status_text_set(f"Speechface: fitting {100 * job.progress:.0f} % "
                                              "(Esc stops and keeps what is fitted so far)")
            return {"RUNNING_MODAL"}
        wm.event_timer_remove(self._timer)
        wm.progress_end()
        context.workspace.status_text_set(None)
        if job.error is not None:
            self.report({"ERROR"}, str(job.error))
            return {"CANCELLED"}
        self._use(context, self._name)
        self.report({"INFO"}, _describe(job.result))
        return {"FINISHED"}

    @staticmethod
    def _use(context, name: str) -> None:
        s = context.scene.speechface
        s.model_source, s.identity = "IDENTITY", name


def _describe(report: dict) -> str:
    if "fitted" in report:
        b, a = report["default"], report["fitted"]
        closure = (f", lip closure {b['closure']:.0%} -> {a['closure']:.0%}"
                   if "closure" in b and "closure" in a else "")
        scored = ("held-out lip error" if report.get("held_out")
                  else "lip error on the take it was fitted to (one take: none held out)")
        return (f"Speechface: fitted {report['identity']!r}; {scored} "
                f"{b['lve_mm']:.2f} -> {a['lve_mm']:.2f} mm{closure}")
    return f"Speechface: fitted {report['identity']!r} to its shape ({report['note']})"


classes = (SPEECHFACE_OT_fit_character,)
