"""Evaluate a checkpoint against baselines: ``python3 -m train evaluate CHECKPOINT CORPUS``.

Two data sets, reported separately (metrics as ARCHITECTURE.md "Metrics" defines them,
``train.metrics``):

- the corpus's TEST split (voices, identities and sentences never seen in training): ground truth
  is the rig motion the corpus was made with (``CorpusSequence.offsets``);
- real human recordings (``train.real_clips``): the transcript is force-aligned with
  pocketsphinx and drives the same rig on the default head, a pseudo ground truth.

Predictors, in this order: ``ours`` (the checkpoint), each ``--compare NAME=CHECKPOINT``, ``rest``
(the face at rest, all offsets zero) and ``phoneme-rig`` (phones recognised from the audio
without the transcript drive the rig: what phoneme-based lip-sync tools do). Every predictor is a
callable ``(samples, sr, fps, n_frames, template, seed, text=None) -> offsets (n_frames, V, 3)
float32 m``. Writes DIR/report.md, DIR/metrics.json and DIR/plots/*.png (lip opening over time).
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

from train.report import format_tables, write_report  # noqa: F401  (write_report: public API)

REPO = Path(__file__).resolve().parents[1]
N_PLOTS = 3                 # corpus clips whose lip-gap traces are kept for plots
PSEUDO_GT_SEED = 10_000     # real clips: the rig's style/upper face for the pseudo ground truth
                            # is drawn with PSEUDO_GT_SEED + seed, a seed no predictor is given


def fit_frames(x: np.ndarray, n: int) -> np.ndarray:
    """(T, V, 3) -> exactly (n, V, 3) float32: cut, or repeat the last frame (zeros if T == 0)."""
    x = np.asarray(x, np.float32)
    if len(x) >= n:
        return x[:n]
    if len(x) == 0:
        return np.zeros((n,) + x.shape[1:], np.float32)
    return np.concatenate([x, np.repeat(x[-1:], n - len(x), axis=0)])


def _model_predictor(model, seal: bool = True):
    from core.pipeline import animate

    def predict(samples, sr, fps, n_frames, template, seed, text=None):
        anim = animate(samples, sr, fps=fps, template=template, model=model, seed=seed,
                       seal=seal)
        return fit_frames(anim.offsets(), n_frames)
    return predict


def _rest(samples, sr, fps, n_frames, template, seed, text=None):
    return np.zeros((n_frames,) + np.shape(template), np.float32)


def _phoneme_rig(samples, sr, fps, n_frames, template, seed, text=None):
    from core.rig import rig_offsets, rig_weights
    from train.align import recognize_phones

    phones = recognize_phones(samples, sr)
    weights = rig_weights(phones, fps, n_frames, seed, template=template)
    return fit_frames(rig_offsets(weights, template), n_frames)


def predictors(checkpoint, compare: dict | None = None, ablate_seal: bool = False) -> dict:
    """name -> predictor: 'ours', with ``ablate_seal`` 'ours, no lip seal' (the same model
    without ``core.pipeline.seal_lips``), each compare name (-> checkpoint path), 'rest',
    'phoneme-rig'. Raises ``core.checkpoint.CheckpointError`` for a checkpoint that cannot be
    loaded."""
    from core.pipeline import get_model

    out = {"ours": _model_predictor(get_model(checkpoint))}
    if ablate_seal:
        out["ours, no lip seal"] = _model_predictor(get_model(checkpoint), seal=False)
    for name, path in (compare or {}).items():
        if name in ("ours", "rest", "phoneme-rig"):
            raise ValueError(f"--compare name {name!r} is taken by a built-in predictor")
        out[name] = _model_predictor(get_model(path))
    out["rest"] = _rest
    out["phoneme-rig"] = _phoneme_rig
    return out


def _score(preds: dict, results: dict, seq_id: str, args: tuple, gt, template, phones, fps,
           head, keep_trace: bool, extra: dict) -> None:
    """Run every predictor on one clip and add its scores (and maybe traces) to results."""
    from train.metrics import sequence_metrics

    for name, predict in preds.items():
        pred = predict(*args)
        m = sequence_metrics(pred, gt, template, phones, fps, head=head)
        gap_pred, gap_gt = m.pop("gap_pred_m"), m.pop("gap_gt_m")
        results[name]["sequences"].append({"id": seq_id, **extra, **m})
        if keep_trace:
            results[name]["traces"][seq_id] = {
                "pred_mm": (gap_pred * 1000).astype(np.float32),
                "gt_mm": (gap_gt * 1000).astype(np.float32), "phones": phones, "fps": fps}


def _finish(results: dict) -> dict:
    from train.metrics import aggregate
    for r in results.values():
        r["aggregate"] = aggregate(r["sequences"])
    return results


def plot_ids(corpus, ids: list, k: int = N_PLOTS) -> list:
    """k of ids for plots, deterministically: the first ones with a /P B M/, then the rest."""
    def bilabial(i):
        with np.load(corpus.root / "seq" / f"{i}.npz") as d:
            return bool(set(map(str, d["phone_names"])) & {"P", "B", "M"})
    return ([i for i in ids if bilabial(i)] + [i for i in ids if not bilabial(i)])[:k]


def evaluate_corpus(corpus, predictors: dict, limit: int | None = None, seed: int = 0,
                    progress: bool = False) -> dict:
    """Score every predictor on the test split (first ``limit`` ids) of ``corpus`` (a Corpus or
    a folder). -> {name: {"aggregate": aggregate(...), "sequences": [scalar dicts with "id"],
    "traces": {seq_id: {"pred_mm", "gt_mm", "phones", "fps"}} for N_PLOTS clips}}."""
    from tqdm import tqdm

    from core.assets import load_default_head
    from train.corpus import Corpus

    corpus = corpus if isinstance(corpus, Corpus) else Corpus(corpus)
    ids = corpus.ids("test")[:limit]
    keep = set(plot_ids(corpus, ids))
    head = load_default_head()
    results = {n: {"sequences": [], "traces": {}} for n in predictors}
    for seq_id in tqdm(ids, desc="test split", unit="seq", disable=not progress):
        seq = corpus.load(seq_id)
        gt = seq.offsets()
        args = (seq.audio, seq.sample_rate, corpus.fps, len(gt), seq.template, seed,
                seq.meta.get("text"))
        extra = {"identity": seq.meta.get("identity"), "voice": seq.meta.get("voice")}
        _score(predictors, results, seq_id, args, gt, seq.template, seq.phones, corpus.fps,
               head, seq_id in keep, extra)
    return _finish(results)


def evaluate_real(predictors: dict, cache_dir, fps: float = 30.0, seed: int = 0,
                  progress: bool = False) -> dict:
    """Score every predictor on the real clips in ``cache_dir`` against the rig driven by the
    force-aligned transcript on the default head (style and upper face from seed
    PSEUDO_GT_SEED + seed). Same structure as ``evaluate_corpus``, traces for every clip.
    Clips whose alignment fails are left out with a warning on stderr."""
    from tqdm import tqdm

    from core.assets import load_default_head
    from core.rig import rig_offsets, rig_weights
    from train.align import AlignError, force_align, load_audio
    from train.real_clips import fetch_real_clips

    head = load_default_head()
    template = head.vertices
    results = {n: {"sequences": [], "traces": {}} for n in predictors}
    clips = fetch_real_clips(cache_dir)
    for name in tqdm(sorted(clips), desc="real clips", unit="clip", disable=not progress):
        path, text = clips[name]
        x, sr = load_audio(path)
        try:
            phones = force_align(x, sr, text)
        except AlignError as exc:
            print(f"warning: {name} left out: {exc}", file=sys.stderr)
            continue
        n = max(1, math.ceil(len(x) / sr * fps))
        gt = rig_offsets(rig_weights(phones, fps, n, PSEUDO_GT_SEED + seed, template=template),
                         template)
        _score(predictors, results, name, (x, sr, fps, n, template, seed, text), gt, template,
               phones, fps, head, True, {"duration_s": round(len(x) / sr, 3)})
    return _finish(results)


def parse_compare(pairs: list) -> dict:
    out = {}
    for p in pairs:
        name, sep, path = p.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--compare wants NAME=CHECKPOINT, got {p!r}")
        out[name] = path
    return out


def main_evaluate(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m train evaluate",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("corpus", type=Path, help="corpus folder; its test split is evaluated")
    ap.add_argument("--out", type=Path, default=None,
                    help="output folder (default out/eval/<checkpoint stem>)")
    ap.add_argument("--compare", nargs="+", action="extend", default=[], metavar="NAME=CKPT",
                    help="more checkpoints to score alongside, "
                         "e.g. meshtalk-size=run/model.safetensors")
    ap.add_argument("--limit", type=int, default=None, help="only the first N test sequences")
    ap.add_argument("--ablate-seal", action="store_true",
                    help="also report the model without its lip seal (core.pipeline.seal_lips)")
    ap.add_argument("--seed", type=int, default=0, help="animation seed (upper-face sampling)")
    ap.add_argument("--cache", type=Path, default=REPO / ".cache" / "real",
                    help="folder of the real clips (fetched there once if missing)")
    args = ap.parse_args(argv)
    from core.pipeline import get_model
    from train.corpus import Corpus

    try:
        compare = parse_compare(args.compare)
        preds = predictors(args.checkpoint, compare, args.ablate_seal)
        ckpt_meta = get_model(args.checkpoint)[2]
        corpus = Corpus(args.corpus)
    except (ValueError, OSError) as exc:          # CheckpointError is a ValueError
        print(f"error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
              file=sys.stderr)
        return 1
    out = args.out or Path("out/eval") / args.checkpoint.stem
    res_corpus = evaluate_corpus(corpus, preds, args.limit, args.seed, progress=True)
    try:
        res_real = evaluate_real(preds, args.cache, corpus.fps, args.seed, progress=True)
    except RuntimeError as exc:                   # offline and the clips not cached
        print(f"warning: real clips unavailable: {exc}", file=sys.stderr)
        res_real = {}
    meta = {"checkpoint": str(args.checkpoint), "compare": compare,
            "compare_commands": {n: get_model(p)[2].get("training", {}).get("command")
                                 for n, p in compare.items()},
            "training": ckpt_meta.get("training", {}), "data": ckpt_meta.get("data", {}),
            "corpus": str(args.corpus), "test_split_size": len(corpus.ids("test")),
            "held_out": corpus.split.get("held_out", {}).get("test", {}),
            "limit": args.limit, "seed": args.seed, "pseudo_gt_seed": PSEUDO_GT_SEED + args.seed,
            "real_cache": str(args.cache), "fps": corpus.fps}
    report = write_report(res_corpus, res_real, out, meta)
    print(format_tables(res_corpus, res_real))
    print(f"report -> {report.resolve()}")
    return 0
