"""Speechface core: pure numpy/torch (audio, model, inference, retargeting, assets). Never imports bpy."""

__version__ = "0.1.0"   # keep equal to blender_manifest.toml
