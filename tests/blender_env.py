"""Helpers for tests that run the extension in real Blender (the ``bpy`` module).

The working tree is linked into a local extension repository of its own, ``speechface_dev``
(a folder in the temp ``BLENDER_USER_RESOURCES`` that conftest sets), so Blender imports it
exactly as an installed extension: ``bl_ext.speechface_dev.speechface``, relative imports and
all. Not ``user_default``: the packaging tests install and uninstall the built zip there.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
REPO_MODULE = "speechface_dev"
MODULE = f"bl_ext.{REPO_MODULE}.speechface"


def link_extension() -> Path:
    """The dev repository (created after every factory reset, which forgets it)."""
    import bpy

    repo_dir = Path(os.environ["BLENDER_USER_RESOURCES"]) / "speechface_dev_repo"
    repo_dir.mkdir(parents=True, exist_ok=True)
    link = repo_dir / "speechface"
    if not link.is_symlink():
        link.symlink_to(REPO, target_is_directory=True)
    repos = bpy.context.preferences.extensions.repos
    if not any(r.module == REPO_MODULE for r in repos):
        repos.new(name="Speechface dev", module=REPO_MODULE, custom_directory=str(repo_dir))
    return link


def fresh_scene():
    """Factory settings (an empty scene) with the extension enabled; -> the extension module."""
    import addon_utils
    import bpy

    bpy.ops.wm.read_factory_settings(use_empty=True)
    link_extension()
    mod = addon_utils.enable(MODULE, default_set=False, handle_error=_raise)
    assert mod is not None, "the extension did not enable"
    return mod


def _raise(ex):
    raise ex


def add_speech(scene, wav, frame_start=1, channel=1, name="speech"):
    se = scene.sequence_editor_create()
    strips = se.strips if hasattr(se, "strips") else se.sequences
    return strips.new_sound(name, str(wav), channel, frame_start)


def evaluated_vertices(obj, frame: int) -> np.ndarray:
    """The mesh as Blender shows it at ``frame`` (shape keys, animation, modifiers): (V, 3)."""
    import bpy

    bpy.context.scene.frame_set(frame)
    dg = bpy.context.evaluated_depsgraph_get()
    ev = obj.evaluated_get(dg)
    mesh = ev.to_mesh()
    co = np.empty(len(mesh.vertices) * 3, np.float32)
    mesh.vertices.foreach_get("co", co)
    ev.to_mesh_clear()
    return co.reshape(-1, 3)


def snapshot(bpy) -> dict:
    """A comparable summary of what a failed bake must not change."""
    out = {"objects": sorted(o.name for o in bpy.data.objects),
           "actions": sorted(a.name for a in bpy.data.actions),
           "meshes": sorted(m.name for m in bpy.data.meshes)}
    for o in bpy.data.objects:
        if o.type == "MESH" and o.data.shape_keys:
            key = o.data.shape_keys
            out[o.name] = [(kb.name, round(kb.value, 6)) for kb in key.key_blocks]
            ad = key.animation_data
            out[o.name + ".anim"] = (ad.action.name if ad and ad.action else None,
                                     [t.name for t in ad.nla_tracks] if ad else [])
        if o.type == "MESH":
            co = np.empty(len(o.data.vertices) * 3, np.float32)
            o.data.vertices.foreach_get("co", co)
            out[o.name + ".co"] = float(np.abs(co).sum())
    return out
