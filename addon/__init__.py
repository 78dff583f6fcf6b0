"""Blender side of Speechface: registers the extension's classes with Blender.

``classes`` is the table of contents, registered in order and unregistered in reverse:
settings (``props``), operators (``ops``, ``rig_ops``: the character's own keys), panels (``ui``). The ``speechface`` command-line
command (``blender --command speechface ...``, the batch baker) is registered beside them.
"""
import bpy

from . import identity_ops, ops, props, rig_ops, ui

classes = (*props.classes, *ops.classes, *rig_ops.classes, *identity_ops.classes, *ui.classes)

_cli_handle = None


def register() -> None:
    global _cli_handle
    for cls in classes:
        bpy.utils.register_class(cls)
    props.register()
    if hasattr(bpy.utils, "register_cli_command"):
        from .batch import cli_command
        _cli_handle = bpy.utils.register_cli_command("speechface", cli_command)


def unregister() -> None:
    global _cli_handle
    if _cli_handle is not None:
        bpy.utils.unregister_cli_command(_cli_handle)
        _cli_handle = None
    props.unregister()
    for cls in reversed(classes):
        if cls.is_registered:
            bpy.utils.unregister_class(cls)
