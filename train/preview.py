"""Render rig or model frames on the default head as a labelled contact sheet (PNG).

Rendering uses Blender's Workbench engine through the ``bpy`` module (headless, software EGL),
so what the sheet shows is what Blender shows. ``python3 -m train preview`` synthesises a
sentence, drives the rig and writes ``preview.png`` (frames) and ``lip_opening.png`` (mouth
opening over time with the phones).
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

PART_COLORS = {"helper-upper-teeth": (0.95, 0.93, 0.85), "helper-lower-teeth": (0.95, 0.93, 0.85),
               "helper-tongue": (0.75, 0.3, 0.35), "body:mouth_cavity": (0.45, 0.15, 0.18),
               "helper-l-eye": (0.9, 0.9, 0.92), "helper-r-eye": (0.9, 0.9, 0.92)}
SKIN = (0.8, 0.62, 0.52)
SKIN_NAME = "skin"


def _scene(template, faces, face_part, part_names, landmarks, size):
    import bpy

    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    mesh = bpy.data.meshes.new("preview_head")
    mesh.from_pydata(template.tolist(), [], faces.tolist())
    obj = bpy.data.objects.new("preview_head", mesh)
    scene.collection.objects.link(obj)
    names = [SKIN_NAME] + list(PART_COLORS)
    for name in names:
        mat = bpy.data.materials.new(name)
        mat.diffuse_color = (*PART_COLORS.get(name, SKIN), 1.0)
        mesh.materials.append(mat)
    index = np.array([names.index(p) if p in PART_COLORS else 0 for p in part_names], np.int32)
    mesh.polygons.foreach_set("material_index", index[face_part])
    mesh.polygons.foreach_set("use_smooth", np.ones(len(faces), bool))

    cam_data = bpy.data.cameras.new("preview_camera")
    cam_data.type = "ORTHO"
    # frame the face from below the chin to above the brows, where speech shows
    chin_z, eye_z = float(template[landmarks["chin"][0], 2]), float(template[landmarks["eye_corners"], 2].mean())
    cam_data.ortho_scale = 2.1 * (eye_z - chin_z)
    cam = bpy.data.objects.new("preview_camera", cam_data)
    cam.location = (0.0, float(template[:, 1].min()) - 1.0, 0.5 * (chin_z + eye_z))
    cam.rotation_euler = (np.pi / 2, 0.0, 0.0)   # looks along +Y, at the face
    scene.collection.objects.link(cam)
    scene.camera = cam
    scene.render.engine = "BLENDER_WORKBENCH"
    scene.display.shading.light = "STUDIO"
    scene.display.shading.color_type = "MATERIAL"
    scene.render.resolution_x = scene.render.resolution_y = size
    scene.render.film_transparent = False
    return scene, mesh



def render_sheet(template, offsets, labels, out_png, size=192, columns=None):
    """Render ``template + offsets[k]`` for each k into one PNG grid with a label under each.
    template (V, 3) metres; offsets (K, V, 3) metres; labels: K strings."""
    import bpy
    from PIL import Image

    from core.assets import load_default_head

    head = load_default_head()
    scene, mesh = _scene(np.asarray(template, np.float32), head.faces, head.face_part,
                         head.part_names, head.landmarks, size)
    tiles = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, off in enumerate(offsets):
            co = (np.asarray(template, np.float32) + off).astype(np.float32).ravel()
            mesh.vertices.foreach_set("co", co)
            mesh.update()
            scene.render.filepath = str(Path(tmp) / f"f{k:03d}.png")
            bpy.ops.render.render(write_still=True)
            tiles.append(Image.open(scene.render.filepath).convert("RGB"))
    return contact_sheet(tiles, labels, out_png, size, columns or min(len(tiles), 6))


def contact_sheet(tiles, labels, out_png, size: int, columns: int) -> Path:
    """Square PIL tiles of ``size`` pixels in a grid of ``columns``, a label under each -> PNG."""
    from PIL import Image, ImageDraw

    rows = (len(tiles) + columns - 1) // columns
    label_h = 18
    sheet = Image.new("RGB", (columns * size, rows * (size + label_h)), "white")
    draw = ImageDraw.Draw(sheet)
    for k, tile in enumerate(tiles):
        x, y = (k % columns) * size, (k // columns) * (size + label_h)
        sheet.paste(tile, (x, y))
        draw.text((x + 4, y + size + 3), labels[k], fill="black")
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out_png)
    return Path(out_png)


def plot_lip_opening(gaps_mm: dict, fps, phones, out_png, title=""):
    """Mouth opening (mm) over time for one or more curves, phones marked. gaps_mm: name ->
    (T,) array; phones: canonical timeline (seconds)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(12, 3.2))
    for name, gap in gaps_mm.items():
        ax.plot(np.arange(len(gap)) / fps, gap, label=name)
    top = max(float(np.max(g)) for g in gaps_mm.values())
    for phone, start, end in phones:
        ax.axvline(start, color="0.85", lw=0.5)
        color = "tab:red" if phone in ("P", "B", "M") else "0.3"
        ax.text(0.5 * (start + end), top * 1.02, phone, ha="center", fontsize=6, color=color)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("inner-lip gap (mm)")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return Path(out_png)


def pick_frames(phones, fps, n_frames, limit=12):
    """Frames that show the rig's range: the middle of a few phones of each kind, plus rest."""
    wanted = [("SIL",), ("P", "B", "M"), ("AA", "AE", "AO"), ("UW", "W", "OW"), ("F", "V"),
              ("IY", "EY"), ("SH", "CH"), ("TH", "DH")]
    chosen = []
    for kinds in wanted * 2:
        for phone, start, end in phones:
            k = int(round(0.5 * (start + end) * fps))
            if phone in kinds and 0 <= k < n_frames and all(abs(k - c) > 2 for c, _ in chosen):
                chosen.append((k, phone))
                break
    return sorted(chosen)[:limit]


def main_preview(argv=None):
    from core.assets import load_default_head
    from core.rig import lip_gap, rig_offsets, rig_weights
    from train.voices import synthesize

    ap = argparse.ArgumentParser(prog="python3 -m train preview", description=__doc__)
    ap.add_argument("--text", default="Bob fetched five huge apples, then we shouted: boo!")
    ap.add_argument("--voice", default="flite:slt")
    ap.add_argument("--identity", default="default")
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="out/preview")
    args = ap.parse_args(argv)

    head = load_default_head()
    template = head.identity(args.identity)
    syn = synthesize(args.voice, args.text)
    n = int(np.ceil(len(syn.samples) / syn.sample_rate * args.fps))
    weights = rig_weights(syn.phones, args.fps, n, args.seed, template)
    offsets = rig_offsets(weights, template)
    frames = pick_frames(syn.phones, args.fps, n)
    out = Path(args.out)
    sheet = render_sheet(template, offsets[[k for k, _ in frames]],
                         [f"{p} t={k / args.fps:.2f}s" for k, p in frames], out / "preview.png")
    gap = 1000 * lip_gap(template[None] + offsets)
    plot = plot_lip_opening({"rig": gap}, args.fps, syn.phones, out / "lip_opening.png",
                            f"{args.voice}: {args.text}")
    import soundfile as sf
    sf.write(out / "speech.wav", syn.samples, syn.sample_rate)
    print(f"preview: {sheet.resolve()}\nlip opening plot: {plot.resolve()}\n"
          f"audio: {(out / 'speech.wav').resolve()}")
    return 0
