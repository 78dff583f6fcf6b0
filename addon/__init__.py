"""Blender side of Speechface: registers the extension's classes with Blender.

Nothing is registered yet: the panels, properties and bake operators arrive with the bake issue.
``classes`` is the table of contents; it is registered in order and unregistered in reverse.
"""
import bpy

classes: tuple[type, ...] = ()


def register() -> None:
    for cls in classes:
        bpy.utils.register_class(cls)


def unregister() -> None:
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
