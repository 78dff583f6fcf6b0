"""The preview renderer: real Blender (Workbench) frames of the head, labelled on one sheet."""
import numpy as np
from PIL import Image

from core.arkit import ARKIT_INDEX
from core.assets import load_default_head
from train.preview import pick_frames, plot_lip_opening, render_sheet


def test_sheet_shows_the_mouth_open_and_closed(tmp_path):
    head = load_default_head()
    w = np.zeros((2, 52), np.float32)
    w[1, ARKIT_INDEX["jawOpen"]] = 0.5
    size = 96
    out = render_sheet(head.vertices, head.units.offsets_from_weights(w), ["rest", "open"],
                       tmp_path / "sheet.png", size=size)
    img = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert img.shape[1] == 2 * size and img.shape[0] > size
    rest, opened = img[:size, :size], img[:size, size:2 * size]
    assert rest.std() > 10, "the head is visible, not an empty frame"
    diff = np.abs(rest - opened).sum(axis=2)
    rows = np.flatnonzero(diff.max(axis=1) > 60)
    assert len(rows) > 3, "opening the jaw changes the picture"
    assert rows.mean() > 0.55 * size, "and the change is in the lower half, at the mouth"


def test_lip_plot_and_frame_choice(tmp_path):
    phones = [("SIL", 0, 0.3), ("B", 0.3, 0.4), ("AA", 0.4, 0.6), ("M", 0.6, 0.7), ("SIL", 0.7, 1)]
    frames = pick_frames(phones, 30.0, 30)
    assert {p for _, p in frames} == {"SIL", "B", "AA", "M"}
    png = plot_lip_opening({"rig": np.linspace(0, 10, 30)}, 30.0, phones, tmp_path / "p.png")
    assert Image.open(png).size[0] > 500
