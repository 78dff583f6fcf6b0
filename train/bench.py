"""Benchmarks (``python3 build.py bench``): corpus generation speed and its parts, then the
model (``train/bench_model.py``: inference speed vs the MeshTalk-size configuration, prior
sampling cost, peak memory on a 10-minute file, training throughput), then baking in Blender
(``train/bench_bake.py``: compact and exact bakes of 60 s, .blend growth, batch throughput).

Prints figures measured side by side in one run: per-engine synthesis real-time factor, rig
and augmentation cost per second of speech, and whole-corpus generation speed on all cores vs
one core (so the parallel speed-up is a ratio, not a claim).
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

TEXT = "The quick brown fox jumps over the lazy dog while five wizards box."


def _timed(fn, repeat=3):
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def bench_engines():
    from train.voices import list_voices, synthesize

    have = {v.id for v in list_voices()}
    print("synthesis (compute seconds per second of speech; lower is faster)")
    for voice in ("flite:slt", "flite:kal16", "festival:kal", "festival:slt",
                  "espeak:en-us", "espeak:de"):
        if voice not in have:
            print(f"  {voice:32s} not installed")
            continue
        sec, syn = _timed(lambda: synthesize(voice, TEXT), repeat=2)
        dur = len(syn.samples) / syn.sample_rate
        print(f"  {voice:32s} {sec / dur:8.4f}  ({dur:.1f} s of speech in {sec * 1000:.0f} ms)")
    if "festival:kal" in have:
        from train.voices import synthesize_many
        sec, syns = _timed(lambda: synthesize_many("festival:kal", [TEXT] * 8), repeat=1)
        dur = sum(len(x.samples) / x.sample_rate for x in syns)
        print(f"  {'festival:kal, 8 in one process':32s} {sec / dur:8.4f}")


def bench_rig_and_augment():
    from core.assets import load_default_head
    from core.rig import rig_offsets, rig_weights
    from train import augment
    from train.voices import synthesize

    syn = synthesize("flite:slt", TEXT)
    dur = len(syn.samples) / syn.sample_rate
    T = int(np.ceil(dur * 30))
    head = load_default_head()
    sec_w, w = _timed(lambda: rig_weights(syn.phones, 30.0, T, 0, head.vertices))
    sec_o, _ = _timed(lambda: rig_offsets(w, head.vertices))
    audio = syn.samples.astype(np.float32)
    rng = np.random.default_rng(0)
    chains = [augment.random_chain(rng, 1.0) for _ in range(8)]
    t0 = time.perf_counter()
    for ops in chains:
        augment.apply(audio, syn.sample_rate, ops)
    sec_a = (time.perf_counter() - t0) / len(chains)
    print("per second of speech (ms):")
    print(f"  rig weights {1000 * sec_w / dur:7.2f}   offsets {1000 * sec_o / dur:7.2f}   "
          f"augmentation chain (strength 1) {1000 * sec_a / dur:7.2f}")


def bench_corpus(minutes: float):
    import os

    from train.synth import generate

    cores = os.cpu_count() or 1
    results = {}
    for workers in sorted({1, cores}):
        out = Path(tempfile.mkdtemp(prefix="speechface-bench-"))
        try:
            t0 = time.perf_counter()
            info = generate(out, minutes / 60.0, seed=0, workers=workers, progress=False)
            wall = time.perf_counter() - t0
        finally:
            shutil.rmtree(out, ignore_errors=True)
        speech = info["hours_made"] * 3600
        results[workers] = speech / wall
        print(f"corpus, {workers} worker(s): {speech:.0f} s of speech in {wall:.1f} s wall = "
              f"{speech / wall:.0f}x real time; 1 h would take {3600 / (speech / wall) / 60:.1f} min")
    if len(results) == 2:
        print(f"parallel speed-up {cores} cores vs 1: {results[cores] / results[1]:.2f}x")


def main_bench(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m train bench", description=__doc__)
    ap.add_argument("--minutes", type=float, default=15.0, help="speech per corpus run")
    ap.add_argument("--only", choices=("model", "corpus", "bake"), default=None)
    ap.add_argument("--meshtalk", type=Path, default=None,
                    help="trained MeshTalk-size checkpoint (default: untrained weights, same cost)")
    args = ap.parse_args(argv)
    if args.only in (None, "corpus"):
        bench_engines()
        bench_rig_and_augment()
        bench_corpus(args.minutes)
    if args.only in (None, "model"):
        from train.bench_model import main_bench_model
        main_bench_model(args.meshtalk)
    if args.only in (None, "bake"):
        from train.bench_bake import main_bench_bake
        main_bench_bake()
    return 0
