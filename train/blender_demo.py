"""The Blender half of ``python3 build.py demo``: the built extension in headless Blender.

Installs the extension zip into Blender (the ``bpy`` module, with a user folder of its own),
makes a scene with the Speechface head and the speech clip shipped in ``train/assets``, bakes
it with the extension's operator, saves the .blend, and renders a contact sheet with Cycles on
the CPU: the frames where the lips are most closed and most open, labelled with the mouth
opening, plus a plot of the opening over the whole clip.

Run it as its own process (``python3 -m train blender-demo --zip Z --out DIR``): Blender's user
folder must be chosen before ``bpy`` is imported.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SPEECH = REPO / "train" / "assets" / "demo_speech.wav"
MODULE = "bl_ext.user_default.speechface"


def install(zip_path: Path) -> None:
    import addon_utils
    import bpy

    if MODULE not in bpy.context.preferences.addons:
        result = bpy.ops.extensions.package_install_files(
            filepath=str(zip_path), repo="user_default", enable_on_install=True)
        if result != {"FINISHED"}:
            raise SystemExit(f"installing {zip_path} failed: {result}")
    addon_utils.enable(MODULE, default_set=False)


def make_scene(speech: Path):
    import bpy

    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = 30, 1.0
    bpy.ops.speechface.add_head()
    obj = scene.speechface.target
    strip = scene.sequence_editor_create().strips.new_sound("speech", str(speech), 1, 1)
    scene.frame_start, scene.frame_end = strip.frame_final_start, strip.frame_final_end - 1
    scene.speechface.strip = strip.name
    return scene, obj, strip


def light_and_camera(scene, obj, size: int) -> None:
    import bpy

    co = np.array([v.co for v in obj.data.vertices])
    centre = np.array([0.0, co[:, 1].min(), 0.5 * (co[:, 2].min() + co[:, 2].max())])
    mouth_z = float(np.percentile(co[:, 2], 40))
    cam = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    cam.data.lens = 85
    cam.location = (0.0, centre[1] - 0.30, mouth_z + 0.015)     # eyes to chin in view
    cam.rotation_euler = (np.pi / 2, 0.0, 0.0)            # looks along +Y at the face
    scene.collection.objects.link(cam)
    scene.camera = cam
    for name, energy, loc in (("Key", 9.0, (0.3, centre[1] - 0.5, mouth_z + 0.3)),
                              ("Fill", 3.0, (-0.4, centre[1] - 0.35, mouth_z))):
        light = bpy.data.objects.new(name, bpy.data.lights.new(name, "AREA"))
        light.data.energy, light.data.size = energy, 0.4
        light.location = loc
        direction = np.array([0.0, centre[1], mouth_z]) - np.array(loc)
        light.rotation_euler = _look_rotation(direction)
        scene.collection.objects.link(light)
    world = bpy.data.worlds.new("World")
    world.color = (0.05, 0.05, 0.06)
    scene.world = world
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = 24
    scene.cycles.use_denoising = False
    scene.render.resolution_x = scene.render.resolution_y = size
    scene.render.image_settings.file_format = "PNG"


def _look_rotation(direction):
    from mathutils import Vector
    return Vector(direction).to_track_quat("-Z", "Y").to_euler()


def lip_gaps(scene, obj, frames) -> np.ndarray:
    """Inner-lip gap (mm) of the evaluated mesh at each frame (what Blender shows)."""
    import bpy

    from core.assets import load_default_head
    pairs = load_default_head().landmarks["lip_pairs"]
    out = []
    for f in frames:
        scene.frame_set(int(f))
        ev = obj.evaluated_get(bpy.context.evaluated_depsgraph_get())
        mesh = ev.to_mesh()
        co = np.empty(len(mesh.vertices) * 3, np.float32)
        mesh.vertices.foreach_get("co", co)
        ev.to_mesh_clear()
        co = co.reshape(-1, 3)
        out.append(1000 * float(np.mean(co[pairs[:, 0], 2] - co[pairs[:, 1], 2])))
    return np.array(out)


def pick_frames(frames, gaps, n: int = 10, open_mm: float = 3.0) -> list:
    """Alternately the most closed and most open moments while someone speaks (between the
    first and last frame with the lips open wider than open_mm), at least 4 frames apart."""
    speaking = np.flatnonzero(gaps > open_mm)
    inside = np.arange(speaking[0], speaking[-1] + 1) if len(speaking) else np.arange(len(gaps))
    order_closed = [int(i) for i in inside[np.argsort(gaps[inside])]]
    order_open = [int(i) for i in inside[np.argsort(-gaps[inside])]]
    chosen: list = []
    while len(chosen) < n and (order_closed or order_open):
        for order in (order_closed, order_open):
            while order:
                i = order.pop(0)
                if all(abs(i - j) >= 4 for j in chosen):
                    chosen.append(i)
                    break
    return sorted(frames[i] for i in chosen[:n])


def render_sheet(scene, frames, labels, out_png: Path, size: int) -> Path:
    import bpy
    from PIL import Image

    tiles = []
    with tempfile.TemporaryDirectory() as tmp:
        for f in frames:
            scene.frame_set(int(f))
            scene.render.filepath = str(Path(tmp) / f"f{f:04d}.png")
            bpy.ops.render.render(write_still=True)
            tiles.append(Image.open(scene.render.filepath).convert("RGB"))
    from train.preview import contact_sheet
    return contact_sheet(tiles, labels, out_png, size, min(5, len(tiles)))


def plot_gaps(frames, gaps, chosen, fps, out_png: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 3))
    t = (np.asarray(frames) - frames[0]) / fps
    ax.plot(t, gaps, lw=1.2)
    for f in chosen:
        ax.axvline((f - frames[0]) / fps, color="tab:red", lw=0.6, alpha=0.6)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("inner-lip gap (mm)")
    ax.set_title("Baked mouth opening in Blender (red: the rendered frames)")
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


def main_blender_demo(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m train blender-demo", description=__doc__)
    ap.add_argument("--zip", type=Path, required=True, help="the built extension zip")
    ap.add_argument("--out", type=Path, default=REPO / "out" / "demo")
    ap.add_argument("--speech", type=Path, default=SPEECH)
    ap.add_argument("--size", type=int, default=256, help="rendered frame size, pixels")
    args = ap.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("BLENDER_USER_RESOURCES", str(out / "blender-user"))
    import bpy

    t0 = time.perf_counter()
    install(args.zip.resolve())
    scene, obj, strip = make_scene(args.speech.resolve())
    t1 = time.perf_counter()
    bpy.ops.speechface.bake()
    t2 = time.perf_counter()
    blend = out / "speechface_demo.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    fps = scene.render.fps / scene.render.fps_base
    frames = np.arange(strip.frame_final_start, strip.frame_final_end)
    gaps = lip_gaps(scene, obj, frames)
    chosen = pick_frames(frames, gaps)
    light_and_camera(scene, obj, args.size)
    labels = [f"frame {f}  gap {gaps[f - frames[0]]:.1f} mm" for f in chosen]
    t3 = time.perf_counter()
    sheet = render_sheet(scene, chosen, labels, out / "blender_contact_sheet.png", args.size)
    t4 = time.perf_counter()
    plot = plot_gaps(frames, gaps, chosen, fps, out / "blender_lip_opening.png")
    keys = sum(k.name.startswith("speechface.") for k in obj.data.shape_keys.key_blocks)
    print(f"blender: installed {args.zip.name} and set up the scene in {t1 - t0:.1f} s; baked "
          f"{len(frames) / fps:.1f} s of speech into {keys} shape keys in {t2 - t1:.1f} s; "
          f"rendered {len(chosen)} Cycles frames in {t4 - t3:.0f} s; mouth opening "
          f"{gaps.min():.1f}..{gaps.max():.1f} mm\n  scene     {blend}\n  frames    {sheet}\n"
          f"  plot      {plot}")
    return 0
