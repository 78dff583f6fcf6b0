"""``python3 build.py demo``: the main job on the built-in defaults.

Animates two clips with the shipped default model: a real human recording (CMU ARCTIC a0009)
and a sentence synthesised here (flite slt). For each it writes the animation (``.npz``, the
``python3 -m core animate`` contract), a contact sheet of rendered frames at a few phones, and a
plot of the mouth opening against the articulation rig driven by the aligned phones.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
SENTENCE = "Bob fetched five huge apples, then we shouted: boo!"


def main_demo(argv=None) -> int:
    from core.pipeline import animate, get_model, write_npz
    from core.rig import lip_gap, rig_weights
    from train.align import force_align, load_audio
    from train.metrics import bilabial_closure
    from train.preview import pick_frames, plot_lip_opening, render_sheet
    from train.real_clips import fetch_real_clips
    from train.voices import synthesize

    ap = argparse.ArgumentParser(prog="python3 -m train demo", description=__doc__)
    ap.add_argument("--out", type=Path, default=REPO / "out" / "demo")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    model = get_model()
    path, text = fetch_real_clips(REPO / ".cache" / "real")["arctic_a0009"]
    x, sr = load_audio(path)
    syn = synthesize("flite:slt", SENTENCE)
    clips = {"arctic_a0009": (x, sr, force_align(x, sr, text), text),
             "flite_slt": (syn.samples, syn.sample_rate, syn.phones, SENTENCE)}
    for name, (samples, rate, phones, words) in clips.items():
        t0 = time.perf_counter()
        anim = animate(samples, rate, fps=30.0, model=model, seed=args.seed)
        spent = time.perf_counter() - t0
        npz = write_npz(anim, args.out / f"{name}.npz")
        offsets = anim.offsets()
        gap = 1000 * lip_gap(anim.template[None] + offsets)
        rig = rig_weights(phones, anim.fps, anim.n_frames, args.seed, anim.template)
        from core.rig import rig_offsets
        rig_gap = 1000 * lip_gap(anim.template[None] + rig_offsets(rig, anim.template))
        plot = plot_lip_opening({"model": gap, "rig on aligned phones": rig_gap}, anim.fps, phones,
                                args.out / f"{name}_lip_opening.png", words)
        frames = pick_frames(phones, anim.fps, anim.n_frames)
        sheet = render_sheet(anim.template, offsets[[k for k, _ in frames]],
                             [f"{p} t={k / anim.fps:.2f}s" for k, p in frames],
                             args.out / f"{name}_frames.png")
        closure = bilabial_closure(gap / 1000, phones, anim.fps)
        print(f"{name}: {anim.duration_s:.1f} s of speech -> {anim.n_frames} frames in {spent:.2f} s "
              f"({anim.duration_s / spent:.0f}x real time); lips closed at {closure['closed']}/"
              f"{closure['total']} /p b m/\n  animation {npz.resolve()}\n  frames    "
              f"{sheet.resolve()}\n  plot      {plot.resolve()}")
    return 0
