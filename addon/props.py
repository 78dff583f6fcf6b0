"""The Speechface settings: one PropertyGroup on the scene (``scene.speechface``).

The bake options are declared once in ``OPTION_PROPS`` and used both here (what the panel
shows and the .blend stores) and on the bake operator (what scripts pass), so the two cannot
drift apart.
"""
from __future__ import annotations

import bpy
from bpy.props import (BoolProperty, CollectionProperty, EnumProperty, FloatProperty,
                       IntProperty, PointerProperty, StringProperty)

MODEL_ITEMS = (
    ("DEFAULT", "Bundled", "The default model shipped with Speechface"),
    ("IDENTITY", "Fitted Identity", "A model fitted to a character (Fit to this Character, or "
                                    "python3 -m train fit-identity into the user folder)"),
    ("FILE", "Checkpoint File", "A .safetensors checkpoint trained with python3 -m train fit"),
)


def _identity_names(self, context, edit_text):
    from .identity_ops import fitted_identities
    return fitted_identities()
MODE_ITEMS = (
    ("COMPACT", "Compact", "A few shape keys (principal directions of the motion, within 0.1 mm) "
                           "with keyframed values"),
    ("EXACT", "Exact", "One shape key per frame keyed 0-1-0, for exports that need it"),
    ("RIG", "Character's Keys", "Key the shape keys the mesh already has: ARKit names, visemes "
                                "(Oculus, VRM, Preston Blair) or the mapping below"),
)


def option_props() -> dict:
    """name -> bpy property of every bake option (fresh instances each call)."""
    return {
        "model_source": EnumProperty(name="Model", items=MODEL_ITEMS, default="DEFAULT"),
        "checkpoint": StringProperty(name="Checkpoint", subtype="FILE_PATH",
                                     description="Model checkpoint (.safetensors) when Model is "
                                                 "Checkpoint File"),
        "identity": StringProperty(name="Identity", search=_identity_names,
                                   description="Fitted identity when Model is Fitted Identity"),
        "lip_intensity": FloatProperty(name="Lip Intensity", default=1.0, min=0.0, max=3.0,
                                       description="Scale of the mouth's motion (1 = as predicted)"),
        "smoothing": FloatProperty(name="Smoothing", default=0.0, min=0.0, max=10.0,
                                   description="Temporal smoothing, Gaussian sigma in frames"),
        "upper_face": BoolProperty(name="Upper Face", default=True,
                                   description="Animate blinks and brows, not only the mouth"),
        "upper_strength": FloatProperty(name="Strength", default=1.0, min=0.0, max=3.0,
                                        description="Scale of the upper face's motion"),
        "seed": IntProperty(name="Style Seed", default=0, min=0,
                            description="Draws the upper face's motion; the same seed gives the "
                                        "same bake"),
        "output_mode": EnumProperty(name="Output", items=MODE_ITEMS, default="COMPACT"),
        "rig_mapping": StringProperty(name="Key Mapping",
                                      description="Character's Keys: which of the mesh's shape keys "
                                                  "to drive, as JSON {convention, keys}; empty: "
                                                  "detected from their names"),
    }


OPTION_NAMES = tuple(option_props())


def _is_mesh(self, obj) -> bool:
    return obj.type == "MESH"


class SpeechfaceShot(bpy.types.PropertyGroup):
    """A strip-object pair baked in this file (what ``speechface batch`` re-bakes)."""
    __annotations__ = {
        "strip": StringProperty(name="Strip"),
        "target": PointerProperty(name="Object", type=bpy.types.Object),
        "options": StringProperty(name="Options", description="The bake options as JSON"),
    }


class SpeechfaceSettings(bpy.types.PropertyGroup):
    __annotations__ = {
        "strip": StringProperty(name="Sound Strip",
                                description="The speech to animate from (default: the active "
                                            "sound strip)"),
        "target": PointerProperty(name="Face Mesh", type=bpy.types.Object, poll=_is_mesh,
                                  description="The mesh that gets the shape keys"),
        "shots": CollectionProperty(type=SpeechfaceShot),
        "jaw_objects": PointerProperty(name="Teeth & Tongue", type=bpy.types.Collection,
                                       description="Separate lower-teeth and tongue objects in "
                                                   "this collection follow the jaw (keyed delta "
                                                   "transforms)"),
        **option_props(),
    }


classes = (SpeechfaceShot, SpeechfaceSettings)


def register() -> None:
    bpy.types.Scene.speechface = PointerProperty(type=SpeechfaceSettings)


def unregister() -> None:
    if hasattr(bpy.types.Scene, "speechface"):     # Blender 4.5 may unregister twice at exit
        del bpy.types.Scene.speechface
