"""Operators: Bake, Clear, Add Speechface Head.

Bake from the panel runs as a modal operator: the pipeline works in a background thread, a
timer updates the progress bar, Esc cancels, and the result is written on the main thread as one
undo step. From a script (``bpy.ops.speechface.bake(...)``, ``blender -b``, the ``bpy`` module)
the same operator runs synchronously; every option is an operator property and unset ones come
from the scene's Speechface settings.
"""
from __future__ import annotations

import bpy
from bpy.props import StringProperty

from . import job as jobs
from .bake import apply, compute, describe, options_of, prepare
from .props import OPTION_NAMES, option_props
from .scene_data import BakeError, default_strip_name, sound_strips


def _target(context, name: str):
    if name:
        obj = context.scene.objects.get(name) or bpy.data.objects.get(name)
        if obj is None:
            raise BakeError(f"No object named {name!r}: pass the face mesh's name")
        return obj
    return context.scene.speechface.target


def panel_problem(scene) -> str | None:
    """Why the panel's Bake cannot run now (the button's grey reason), or None."""
    if not sound_strips(scene):
        return "Add a sound strip with the speech in the Video Sequencer"
    s = scene.speechface
    if not s.strip and not default_strip_name(scene):
        return "Pick the sound strip in the Speechface panel"
    if s.target is None:
        return "Pick the face mesh in the Speechface panel (or Add Speechface Head)"
    if jobs.current is not None and not jobs.current.done:
        return "A bake is running: wait for it or press Esc"
    return None


def _poll_panel(cls, context) -> bool:
    """Grey the buttons, with the reason, when the panel's settings cannot work. Headless
    (``blender -b``, the ``bpy`` module) scripts pass their own strip and object, so there
    everything is checked in execute instead, where the operator's properties are known."""
    if bpy.app.background:
        return context.scene is not None
    problem = panel_problem(context.scene)
    if problem:
        cls.poll_message_set(problem)
        return False
    return True


class BakeSession:
    """A panel bake between Blender's events: the worker computes, ``poll()`` reports progress
    until it is done, ``finish(scene)`` writes the result on the main thread. The modal operator
    only maps timer and Esc events onto this."""

    def __init__(self, request):
        self.job = jobs.current = jobs.BackgroundJob(
            lambda progress, cancel: compute(request, progress, cancel)).start()

    def poll(self) -> float | None:
        """The progress 0..1 while running, None once the worker has stopped."""
        return None if self.job.done else self.job.progress

    def cancel(self) -> None:
        self.job.cancel()

    def finish(self, scene) -> tuple[str, str]:
        """-> (report level, message); writes the bake if it succeeded."""
        job = self.job
        if job.cancelled:
            return "WARNING", "Speechface: bake cancelled, nothing changed"
        if job.error is not None:
            if isinstance(job.error, BakeError):
                return "ERROR", str(job.error)
            print(job.trace)
            return "ERROR", (f"Speechface failed: {type(job.error).__name__}: {job.error} "
                             "(see the console)")
        obj = bpy.data.objects.get(job.result.request.object_name)
        if obj is None:
            return "ERROR", "The face mesh was deleted during the bake: nothing changed"
        return "INFO", describe(job.result, apply(job.result, scene, obj))


class SPEECHFACE_OT_bake(bpy.types.Operator):
    """Animate the face mesh from the sound strip's speech (shape keys with keyframes)"""
    bl_idname = "speechface.bake"
    bl_label = "Bake Speech"
    bl_options = {"REGISTER", "UNDO"}
    __annotations__ = {
        "strip": StringProperty(name="Sound Strip", description="Strip name (default: the panel's)"),
        "target": StringProperty(name="Object", description="Mesh object name (default: the panel's)"),
        **option_props(),
    }

    _session = None
    _timer = None

    @classmethod
    def poll(cls, context):
        return _poll_panel(cls, context)

    def _request(self, context):
        s = context.scene.speechface
        overrides = {n: getattr(self, n) for n in OPTION_NAMES if self.properties.is_property_set(n)}
        return prepare(context.scene, _target(context, self.target), self.strip or s.strip,
                       options_of(s, overrides))

    def execute(self, context):
        try:
            req = self._request(context)
            result = compute(req)
            obj = _target(context, req.object_name)
            self.report({"INFO"}, describe(result, apply(result, context.scene, obj)))
        except BakeError as ex:
            self.report({"ERROR"}, str(ex))
            return {"CANCELLED"}
        return {"FINISHED"}

    def invoke(self, context, event):
        if bpy.app.background:         # no event loop to drive a modal operator: run it now
            return self.execute(context)
        try:
            req = self._request(context)
        except BakeError as ex:
            self.report({"ERROR"}, str(ex))
            return {"CANCELLED"}
        self._session = BakeSession(req)
        wm = context.window_manager
        self._timer = wm.event_timer_add(0.1, window=context.window)
        wm.progress_begin(0, 100)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        session = self._session
        if event.type == "ESC" and event.value == "PRESS":
            session.cancel()
            return {"RUNNING_MODAL"}
        if event.type != "TIMER":
            return {"PASS_THROUGH"}       # Blender stays usable while the worker computes
        progress = session.poll()
        if progress is not None:
            context.window_manager.progress_update(int(100 * progress))
            context.workspace.status_text_set(f"Speechface: baking {100 * progress:.0f} % (Esc to cancel)")
            _redraw(context)
            return {"RUNNING_MODAL"}
        wm = context.window_manager
        wm.event_timer_remove(self._timer)
        wm.progress_end()
        context.workspace.status_text_set(None)
        _redraw(context)
        level, message = session.finish(context.scene)
        self.report({level}, message)
        return {"FINISHED"} if level == "INFO" else {"CANCELLED"}


def _redraw(context) -> None:
    for window in context.window_manager.windows:
        for area in window.screen.areas:
            if area.type in {"SEQUENCE_EDITOR", "VIEW_3D"}:
                area.tag_redraw()


class SPEECHFACE_OT_clear(bpy.types.Operator):
    """Remove Speechface's shape keys and animation from the face mesh (yours stay)"""
    bl_idname = "speechface.clear"
    bl_label = "Clear Speechface Bake"
    bl_options = {"REGISTER", "UNDO"}
    __annotations__ = {
        "target": StringProperty(name="Object", description="Mesh object name (default: the panel's)"),
    }

    @classmethod
    def poll(cls, context):
        from .writers import has_bake
        if bpy.app.background:
            return True
        if not has_bake(context.scene.speechface.target):
            cls.poll_message_set("The face mesh has no Speechface bake")
            return False
        return True

    def execute(self, context):
        from .scene_data import check_target
        from .writers import clear
        try:
            obj = _target(context, self.target)
            check_target(obj)
        except BakeError as ex:
            self.report({"ERROR"}, str(ex))
            return {"CANCELLED"}
        n = clear(obj)
        shots = context.scene.speechface.shots
        for i in reversed(range(len(shots))):
            if shots[i].target == obj:
                shots.remove(i)
        self.report({"INFO"}, f"Speechface: removed {n} shape keys and their animation from {obj.name!r}")
        return {"FINISHED"}


class SPEECHFACE_OT_add_head(bpy.types.Operator):
    """Add the Speechface head (CC0, MakeHuman) to try Speechface without a character"""
    bl_idname = "speechface.add_head"
    bl_label = "Add Speechface Head"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        from ..core.assets import load_default_head
        head = load_default_head()
        mesh = bpy.data.meshes.new("Speechface Head")
        mesh.from_pydata(head.vertices.tolist(), [], head.faces.tolist())
        mesh.shade_smooth()
        _dress(mesh, head)
        mesh.update()
        obj = bpy.data.objects.new("Speechface Head", mesh)
        context.collection.objects.link(obj)
        for o in context.view_layer.objects.selected:
            o.select_set(False)
        obj.select_set(True)
        context.view_layer.objects.active = obj
        context.scene.speechface.target = obj
        self.report({"INFO"}, f"Added {obj.name!r} ({head.n_vertices} vertices) and picked it "
                              "for Speechface")
        return {"FINISHED"}


# base colours (linear RGB) of the head's parts; the rest is skin
PART_COLORS = {"helper-upper-teeth": (0.9, 0.86, 0.75), "helper-lower-teeth": (0.9, 0.86, 0.75),
               "helper-tongue": (0.55, 0.12, 0.14), "body:mouth_cavity": (0.2, 0.04, 0.05),
               "helper-l-eye": (0.85, 0.85, 0.88), "helper-r-eye": (0.85, 0.85, 0.88)}
SKIN = (0.62, 0.38, 0.29)


def _dress(mesh, head) -> None:
    """Simple materials (skin, teeth, tongue, mouth, eyes) so the mouth reads in any engine."""
    import numpy as np

    names = ["Speechface skin"] + [f"Speechface {p.split(':')[-1].replace('helper-', '')}"
                                   for p in PART_COLORS]
    colors = [SKIN] + list(PART_COLORS.values())
    for name, color in zip(names, colors):
        mat = bpy.data.materials.get(name) or bpy.data.materials.new(name)
        mat.diffuse_color = (*color, 1.0)
        if bpy.app.version < (5, 0, 0):
            mat.use_nodes = True        # always on from 5.0 (and deprecated there)
        bsdf = mat.node_tree.nodes.get("Principled BSDF")
        if bsdf is not None:
            bsdf.inputs["Base Color"].default_value = (*color, 1.0)
            bsdf.inputs["Roughness"].default_value = 0.55
        mesh.materials.append(mat)
    parts = list(PART_COLORS)
    index = np.array([parts.index(p) + 1 if p in PART_COLORS else 0 for p in head.part_names],
                     np.int32)
    mesh.polygons.foreach_set("material_index", index[head.face_part])


classes = (SPEECHFACE_OT_bake, SPEECHFACE_OT_clear, SPEECHFACE_OT_add_head)
