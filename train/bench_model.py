"""Model benchmarks (part of ``python3 build.py bench``), measured side by side in one run:

- inference on 60 s of real speech: the shipped default model vs the MeshTalk-size
  configuration of the same model (the trained run if one is given, else the same
  architecture with untrained weights: timing does not depend on weight values);
- the stage-2 prior's sampling cost on its own;
- peak memory of ``python3 -m core animate`` on a 10-minute file (a child process);
- training throughput (stage-1 steps and frames per second) for both sizes.
"""
from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

REPO = Path(__file__).resolve().parents[1]


def real_speech(seconds: float, cache_dir: Path = REPO / ".cache" / "real") -> np.ndarray:
    """Real human speech at 16 kHz (the ARCTIC and codec2 clips, tiled) of the given length."""
    from core.audio import load_speech
    from train.real_clips import fetch_real_clips

    clips = [load_speech(path) for path, _ in fetch_real_clips(cache_dir).values()]
    x = np.concatenate(clips)
    reps = int(np.ceil(seconds * 16000 / len(x)))
    return np.tile(x, reps)[: int(seconds * 16000)]


def meshtalk_size_model(checkpoint=None):
    """(model, prior, meta) of the MeshTalk-size configuration: a trained checkpoint if given."""
    from core.assets import load_default_head
    from core.model import MeshTalkLite, meshtalk_size_config
    from core.pipeline import get_model
    from core.prior import CodePrior

    if checkpoint and Path(checkpoint).is_file():
        return get_model(checkpoint), "trained"
    cfg = meshtalk_size_config(n_vertices=load_default_head().n_vertices)
    torch.manual_seed(0)
    net = MeshTalkLite(cfg, torch.from_numpy(load_default_head().vertices)).eval()
    return (net, CodePrior(cfg).eval(), {}), "untrained weights"


def _timed_run(model, x: np.ndarray) -> tuple:
    """One animate() + materialised (T, V, 3) offsets of ``model`` on 16 kHz ``x``.
    -> (animate s, animate + dense s, prior sampling s, frames)."""
    from core.pipeline import animate

    spent = [0.0]
    orig = model[1].sample

    def timed_sample(*a, **k):
        t0 = time.perf_counter()
        out = orig(*a, **k)
        spent[0] += time.perf_counter() - t0
        return out

    model[1].sample = timed_sample
    try:
        t0 = time.perf_counter()
        anim = animate(x, 16000, fps=30.0, model=model, seed=0)
        t1 = time.perf_counter()
        anim.offsets()
        return t1 - t0, time.perf_counter() - t0, spent[0], anim.n_frames
    finally:
        del model[1].sample


def time_animate(models: dict, x: np.ndarray, repeat: int = 7) -> dict:
    """Best-of-``repeat`` wall times (s) of animate(), of animate() + the dense (T, V, 3)
    offsets, and of the prior's sampling alone, for each of ``models`` (name -> (net, prior,
    meta)). The models take turns (one run of each per round), so a slow spell of the machine
    falls on both and not on one model's whole series. -> name -> {animate_s, total_s,
    prior_s, frames}."""
    res = {name: {"animate_s": float("inf"), "total_s": float("inf"), "prior_s": float("inf")}
           for name in models}
    for _ in range(repeat):
        for name, model in models.items():
            anim_s, total_s, prior_s, frames = _timed_run(model, x)
            r = res[name]
            r.update(animate_s=min(r["animate_s"], anim_s), total_s=min(r["total_s"], total_s),
                     prior_s=min(r["prior_s"], prior_s), frames=frames)
    return res


def bench_inference(meshtalk_checkpoint=None, seconds: float = 60.0) -> None:
    from core.pipeline import get_model

    x = real_speech(seconds)
    default = get_model()
    big, how = meshtalk_size_model(meshtalk_checkpoint)
    threads = torch.get_num_threads()
    print(f"\ninference on {seconds:.0f} s of real speech, 30 fps, {threads} torch threads, best of 7, "
          "the two models taking turns "
          "(animate(): the animation as coefficients on the decoder's basis, which is what the\n"
          "add-on's compact mode keys; + dense: also all (T, V, 3) offsets materialised in memory):")
    res = time_animate({"default": default, f"meshtalk-size ({how})": big}, x)
    for name, r in res.items():
        print(f"  {name:32s} animate() {r['animate_s']:6.3f} s = {seconds / r['animate_s']:5.0f}x real "
              f"time (prior sampling {r['prior_s']:.3f} s, {1e6 * r['prior_s'] / r['frames']:.0f} "
              f"us/frame); + dense {r['total_s']:6.3f} s = {seconds / r['total_s']:5.0f}x real time")
    (d, dr), (b, br) = res.items()
    print(f"  default animate() is {br['animate_s'] / dr['animate_s']:.1f}x faster than meshtalk-size "
          f"(target >= 30x) and {seconds / dr['animate_s']:.0f}x faster than real time "
          f"(target >= 200x); with dense offsets {br['total_s'] / dr['total_s']:.1f}x and "
          f"{seconds / dr['total_s']:.0f}x (the (T, V, 3) copy costs both models the same)")
    print(f"  prior sampling: default {dr['prior_s'] / seconds * 1000:.1f} ms per second of audio; "
          f"MeshTalk's released sampler took >800 s for 60 s here (../shared/FACTS.md), "
          f"i.e. {800 / dr['prior_s']:.0f}x more")


def bench_memory(minutes: float = 10.0) -> None:
    """Peak RSS of the CLI on a long file vs the same CLI on 5 s (the fixed cost of torch)."""
    with tempfile.TemporaryDirectory(prefix="speechface-bench-") as tmp:
        rows = []
        for seconds in (5.0, 60.0 * minutes):
            wav = Path(tmp) / f"speech_{seconds:.0f}s.wav"
            sf.write(wav, real_speech(seconds), 16000, subtype="PCM_16")
            code = ("import resource, sys, time; from core.__main__ import main; t = time.perf_counter();"
                    f" rc = main(['animate', {str(wav)!r}, '-o', {str(Path(tmp) / 'out.npz')!r}, '--quiet']);"
                    " print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss);"
                    " sys.exit(rc)")
            out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                                 text=True, check=True).stdout.split()
            size = (Path(tmp) / "out.npz").stat().st_size
            rows.append((seconds, float(out[0]), int(out[1]) / 1024, size / 2**20))
        print("\npeak memory of `python3 -m core animate` (child process, max RSS):")
        for seconds, wall, rss, size in rows:
            print(f"  {seconds / 60:5.1f} min of speech: {rss:6.0f} MB peak, {wall:5.1f} s, "
                  f"output .npz {size:6.0f} MB")
        print(f"  the {minutes:.0f}-minute file costs {rows[1][2] - rows[0][2]:.0f} MB more than a "
              f"5 s one (target: ~1 GB in all; offsets are streamed to disk)")


def bench_training(corpus=None, steps: int = 6) -> None:
    """Stage-1 step time for both sizes on a small slice of a corpus (made here if not given)."""
    from core.assets import load_default_head
    from core.model import MeshTalkLite, ModelConfig, meshtalk_size_config
    from train.data import TrainingSet
    from train.fit import TrainConfig
    from train.losses import LossGeometry, batch_losses

    with tempfile.TemporaryDirectory(prefix="speechface-bench-") as tmp:
        if corpus is None:
            from train.synth import generate
            corpus = Path(tmp) / "corpus"
            generate(corpus, hours=0.02, seed=9, progress=False)
        ts = TrainingSet(corpus, "train", limit=60, progress=False)
    head = load_default_head()
    cfg_t = TrainConfig()
    geo = LossGeometry.of(ts.targets.units_mm)
    print(f"\ntraining throughput (stage 1, batch {cfg_t.batch} x {cfg_t.frames} frames, "
          f"{torch.get_num_threads()} threads):")
    rates = {}
    for name, cfg in (("default", ModelConfig()), ("meshtalk-size", meshtalk_size_config())):
        torch.manual_seed(0)
        m = MeshTalkLite(cfg, torch.from_numpy(head.vertices))
        opt = torch.optim.AdamW(m.parameters(), 1e-3)
        gen = torch.Generator().manual_seed(0)

        def step():
            b = ts.batch(gen, cfg_t.batch, cfg_t.frames, m.audio.past, m.audio.future)
            loss = batch_losses(m, b, ts.targets, geo, cfg_t)["total"]
            opt.zero_grad()
            loss.backward()
            opt.step()

        step()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        per = (time.perf_counter() - t0) / steps
        rates[name] = per
        frames = cfg_t.batch * cfg_t.frames / per
        print(f"  {name:14s} {per:6.3f} s/step = {frames:6.0f} frames/s "
              f"({frames / 30 / 60:.1f} min of animation per second)")
    print(f"  default trains {rates['meshtalk-size'] / rates['default']:.1f}x more steps per hour")


def main_bench_model(meshtalk_checkpoint=None, corpus=None) -> None:
    print(f"(ru_maxrss of this process so far: "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB)")
    bench_inference(meshtalk_checkpoint)
    bench_memory()
    bench_training(corpus)
