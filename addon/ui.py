"""The "Speechface" tab in the Sequencer sidebar and the 3D view sidebar (one draw function)."""
from __future__ import annotations

import bpy

from . import job as jobs


def draw_settings(layout, context) -> None:
    scene = context.scene
    s = scene.speechface
    se = scene.sequence_editor
    col = layout.column()
    if se is not None:
        strips = "strips_all" if hasattr(se, "strips_all") else "sequences_all"
        col.prop_search(s, "strip", se, strips, icon="SOUND")
    else:
        col.label(text="No sequencer: add a sound strip", icon="INFO")
    col.prop(s, "target")
    row = col.row(align=True)
    row.operator("speechface.add_head", icon="USER")
    row.operator("speechface.place_markers", text="", icon="EMPTY_DATA")
    row.operator("speechface.remove_markers", text="", icon="X")
    col.prop(s, "jaw_objects")

    col = layout.column(heading="Model")
    col.prop(s, "model_source", text="Model")
    if s.model_source == "FILE":
        col.prop(s, "checkpoint", text="")
    elif s.model_source == "IDENTITY":
        col.prop(s, "identity", text="", icon="USER")
    col.operator("speechface.fit_character", icon="MOD_MESHDEFORM")

    col = layout.column()
    col.prop(s, "lip_intensity", slider=True)
    col.prop(s, "smoothing")
    row = col.row(heading="Upper Face")
    row.prop(s, "upper_face", text="")
    sub = row.row()
    sub.active = s.upper_face
    sub.prop(s, "upper_strength", slider=True)
    col.prop(s, "seed")
    col.prop(s, "output_mode", expand=True)
    if s.output_mode == "RIG":
        from .rig_ops import draw_mapping
        draw_mapping(layout, s)

    job = jobs.current
    if job is not None and not job.done:
        layout.progress(factor=job.progress, type="BAR",
                        text=f"Baking {100 * job.progress:.0f} % (Esc to cancel)")
    row = layout.row(align=True)
    row.scale_y = 1.4
    row.operator("speechface.bake", icon="PLAY_SOUND")
    row.operator("speechface.clear", text="", icon="TRASH")


class SPEECHFACE_PT_sequencer(bpy.types.Panel):
    bl_label = "Speechface"
    bl_space_type = "SEQUENCE_EDITOR"
    bl_region_type = "UI"
    bl_category = "Speechface"

    def draw(self, context):
        draw_settings(self.layout, context)


class SPEECHFACE_PT_view3d(bpy.types.Panel):
    bl_label = "Speechface"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Speechface"

    def draw(self, context):
        draw_settings(self.layout, context)


classes = (SPEECHFACE_PT_sequencer, SPEECHFACE_PT_view3d)
