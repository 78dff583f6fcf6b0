"""Speechface: speech-driven face animation for Blender (extension entry point).

Blender imports this package as ``bl_ext.<repo>.speechface``; everything lives in ``addon/``.
"""
from .addon import register, unregister

__all__ = ("register", "unregister")
