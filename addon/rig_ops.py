"""Operators for the character's own rig: detect its keys, edit and share the mapping, and give
a mesh the 52 ARKit shape keys (the CC0 face units carried over by the retarget map)."""
from __future__ import annotations

from pathlib import Path

import bpy
import numpy as np
from bpy.props import StringProperty

from .scene_data import BakeError, check_target


def _mesh(context, name: str = ""):
    obj = bpy.data.objects.get(name) if name else context.scene.speechface.target
    check_target(obj)
    return obj


def presets_dir() -> Path:
    """Mapping presets: plain JSON files in the extension's user folder."""
    from .scene_data import user_folder
    return user_folder("presets")


class SPEECHFACE_OT_detect_rig(bpy.types.Operator):
    """Find which shape keys of the face mesh Speechface can drive (ARKit, visemes)"""
    bl_idname = "speechface.detect_rig"
    bl_label = "Detect Keys"
    bl_options = {"REGISTER", "UNDO"}
    __annotations__ = {"target": StringProperty(name="Object")}

    def execute(self, context):
        from .bake import rig_mapping
        try:
            mapping = rig_mapping(_mesh(context, self.target))
        except BakeError as ex:
            self.report({"ERROR"}, str(ex))
            return {"CANCELLED"}
        context.scene.speechface.rig_mapping = mapping.to_json()
        self.report({"INFO"}, f"Speechface: {len(mapping.keys)} {mapping.convention} keys found")
        return {"FINISHED"}


def _key_names(self, context, edit_text):
    obj = context.scene.speechface.target
    keys = obj.data.shape_keys if obj is not None and obj.type == "MESH" else None
    return [kb.name for kb in keys.key_blocks[1:]] if keys else []


class SPEECHFACE_OT_map_key(bpy.types.Operator):
    """Choose which of the mesh's shape keys plays this part"""
    bl_idname = "speechface.map_key"
    bl_label = "Map Key"
    bl_options = {"REGISTER", "UNDO"}
    __annotations__ = {
        "source": StringProperty(name="Part"),
        "key": StringProperty(name="Shape Key", search=_key_names),
    }

    def invoke(self, context, event):
        return context.window_manager.invoke_props_dialog(self)

    def execute(self, context):
        from ..core.rig_drive import RigMapping
        s = context.scene.speechface
        mapping = RigMapping.from_json(s.rig_mapping) if s.rig_mapping else RigMapping("custom")
        if self.key:
            mapping.keys[self.source] = self.key
        else:
            mapping.keys.pop(self.source, None)
        s.rig_mapping = mapping.to_json()
        return {"FINISHED"}


class SPEECHFACE_OT_save_mapping(bpy.types.Operator):
    """Save the key mapping as a preset file others can load"""
    bl_idname = "speechface.save_mapping"
    bl_label = "Save Mapping Preset"
    __annotations__ = {"filepath": StringProperty(subtype="FILE_PATH")}

    def invoke(self, context, event):
        self.filepath = str(presets_dir() / "mapping.json")
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        text = context.scene.speechface.rig_mapping
        if not text:
            self.report({"ERROR"}, "No key mapping to save: detect the keys first")
            return {"CANCELLED"}
        Path(bpy.path.abspath(self.filepath)).write_text(text)
        self.report({"INFO"}, f"Saved {self.filepath}")
        return {"FINISHED"}


class SPEECHFACE_OT_load_mapping(bpy.types.Operator):
    """Load a key mapping preset (JSON: {"convention", "keys": {part: shape key}})"""
    bl_idname = "speechface.load_mapping"
    bl_label = "Load Mapping Preset"
    bl_options = {"REGISTER", "UNDO"}
    __annotations__ = {"filepath": StringProperty(subtype="FILE_PATH")}

    def invoke(self, context, event):
        self.filepath = str(presets_dir()) + "/"
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        from ..core.rig_drive import RigMapping
        try:
            mapping = RigMapping.from_json(Path(bpy.path.abspath(self.filepath)).read_text())
        except (OSError, ValueError) as ex:
            self.report({"ERROR"}, f"Cannot load {self.filepath}: {ex}")
            return {"CANCELLED"}
        context.scene.speechface.rig_mapping = mapping.to_json()
        return {"FINISHED"}


class SPEECHFACE_OT_add_arkit_keys(bpy.types.Operator):
    """Give the face mesh the 52 ARKit shape keys (CC0 face units carried over by retargeting)"""
    bl_idname = "speechface.add_arkit_keys"
    bl_label = "Add ARKit Shape Keys"
    bl_options = {"REGISTER", "UNDO"}
    __annotations__ = {"target": StringProperty(name="Object")}

    def execute(self, context):
        from ..core.arkit import ARKIT_NAMES
        try:
            obj = _mesh(context, self.target)
            deltas = arkit_deltas(context.scene, obj)
        except BakeError as ex:
            self.report({"ERROR"}, str(ex))
            return {"CANCELLED"}
        if obj.data.shape_keys is None:
            obj.shape_key_add(name="Basis", from_mix=False)
        key = obj.data.shape_keys
        ref = np.empty(len(obj.data.vertices) * 3, np.float32)
        key.reference_key.data.foreach_get("co", ref)
        for name, delta in zip(ARKIT_NAMES, deltas):
            kb = obj.shape_key_add(name=name, from_mix=False)
            kb.data.foreach_set("co", ref + delta.reshape(-1))
            kb.value = 0.0
        self.report({"INFO"}, f"Speechface: added the 52 ARKit shape keys to {obj.name!r}")
        return {"FINISHED"}


def arkit_deltas(scene, obj) -> np.ndarray:
    """The 52 face units on this mesh: (52, N, 3) local units. Refuses a mesh that has any."""
    from ..core.arkit import ARKIT_NAMES
    from ..core.assets import load_default_head
    from .bake import build_map, retargeting_of
    from .scene_data import has_head_topology, object_scale

    key = obj.data.shape_keys
    if key is not None and any(kb.name in ARKIT_NAMES for kb in key.key_blocks):
        raise BakeError(f"{obj.name!r} already has ARKit shape keys: drive them with the "
                        "Character's Keys output")
    head = load_default_head()
    units = head.units.dense()                                          # (52, V, 3) m
    if has_head_topology(obj, head):
        return (units / object_scale(obj, scene)).astype(np.float32)
    from .writers import MAP_PROP
    retargeting = retargeting_of(obj)             # the bake's map: same markers, same cache
    try:
        rmap = build_map(retargeting)
    except BakeError as ex:
        raise BakeError(f"{obj.name!r}: {ex}") from None
    if retargeting.cached is None:
        obj[MAP_PROP] = rmap.arrays()
    return retargeting.to_local(rmap.transfer(units))


def draw_mapping(layout, settings) -> None:
    """The key mapping as a table: each part and the key that plays it (click to change)."""
    from ..core.rig_drive import RigMapping
    box = layout.box()
    row = box.row(align=True)
    row.operator("speechface.detect_rig", icon="VIEWZOOM")
    row.operator("speechface.load_mapping", text="", icon="FILEBROWSER")
    row.operator("speechface.save_mapping", text="", icon="FILE_TICK")
    box.operator("speechface.add_arkit_keys", icon="SHAPEKEY_DATA")
    if not settings.rig_mapping:
        box.label(text="Keys are detected from their names at bake time")
        return
    try:
        mapping = RigMapping.from_json(settings.rig_mapping)
    except ValueError:
        box.label(text="The mapping is not valid JSON: detect it again", icon="ERROR")
        return
    box.label(text=f"{mapping.convention}: {len(mapping.keys)} keys")
    col = box.column(align=True)
    for source, key in list(mapping.keys.items())[:60]:
        op = col.operator("speechface.map_key", text=f"{source}  \u2192  {key}", emboss=False)
        op.source, op.key = source, key


classes = (SPEECHFACE_OT_detect_rig, SPEECHFACE_OT_map_key, SPEECHFACE_OT_save_mapping,
           SPEECHFACE_OT_load_mapping, SPEECHFACE_OT_add_arkit_keys)

class SPEECHFACE_OT_place_markers(bpy.types.Operator):
    """Place landmark markers on the face mesh (nose tip, chin, mouth and eye corners): move
    them where they belong if the automatic fit went wrong, and bake again"""
    bl_idname = "speechface.place_markers"
    bl_label = "Place Landmark Markers"
    bl_options = {"REGISTER", "UNDO"}
    __annotations__ = {"target": StringProperty(name="Object")}

    def execute(self, context):
        from ..core.retarget import MARKERS, RetargetError, marker_positions, retarget
        from .bake import marker_name
        from .scene_data import polygons, world_rest
        try:
            obj = _mesh(context, self.target)
        except BakeError as ex:
            self.report({"ERROR"}, str(ex))
            return {"CANCELLED"}
        world = world_rest(obj)
        try:
            where = marker_positions(retarget(world, polygons(obj)).fitted)
            how = "where the automatic fit put them"
        except RetargetError:
            from ..core.assets import load_default_head
            head = load_default_head()
            lo, hi = world.min(0), world.max(0)      # the head's layout over the mesh's front
            t = head.vertices
            scale = (hi[2] - lo[2]) / np.ptp(t[:, 2])
            where = {n: ((t[i] - t.mean(0)) * scale + [(lo[0] + hi[0]) / 2, lo[1], (lo[2] + hi[2]) / 2]).tolist()
                     for n, i in MARKERS.items()}
            how = "in a default layout: move each onto its place"
        coll = bpy.data.collections.get("Speechface Markers")
        if coll is None:
            coll = bpy.data.collections.new("Speechface Markers")
            context.scene.collection.children.link(coll)
        size = 0.04 * float(np.ptp(world[:, 2]))
        for name, pos in where.items():
            empty = bpy.data.objects.get(marker_name(obj, name))
            if empty is None:
                empty = bpy.data.objects.new(marker_name(obj, name), None)
                coll.objects.link(empty)
            empty.empty_display_type, empty.empty_display_size = "SPHERE", size
            empty.location = pos
        self.report({"INFO"}, f"Speechface: placed {len(where)} markers for {obj.name!r} {how}")
        return {"FINISHED"}


class SPEECHFACE_OT_remove_markers(bpy.types.Operator):
    """Remove the landmark markers of the face mesh (the fit is automatic again)"""
    bl_idname = "speechface.remove_markers"
    bl_label = "Remove Landmark Markers"
    bl_options = {"REGISTER", "UNDO"}
    __annotations__ = {"target": StringProperty(name="Object")}

    def execute(self, context):
        from ..core.retarget import MARKERS
        from .bake import marker_name
        try:
            obj = _mesh(context, self.target)
        except BakeError as ex:
            self.report({"ERROR"}, str(ex))
            return {"CANCELLED"}
        n = 0
        for name in MARKERS:
            empty = bpy.data.objects.get(marker_name(obj, name))
            if empty is not None:
                bpy.data.objects.remove(empty)
                n += 1
        self.report({"INFO"}, f"Speechface: removed {n} markers of {obj.name!r}")
        return {"FINISHED"}


classes = classes + (SPEECHFACE_OT_place_markers, SPEECHFACE_OT_remove_markers)
