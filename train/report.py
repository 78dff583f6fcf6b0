"""The evaluation report of ``python3 -m train evaluate``: markdown tables, metrics.json and
lip-opening plots (one PNG per clip, every predictor against the ground truth)."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np

from train.preview import plot_lip_opening

HEADER = ("| predictor | LVE mm | LVE² mm² | MVE mm | FDD signed / abs mm | bilabial closure | "
          "silence closure (dev mm, ok) | jitter pred/gt |")
# lip columns with a best value in bold: aggregate key -> (score to minimise, skip the rest face)
BEST = {"lve_mm": (lambda v: v, False), "lve_sq_mm2": (lambda v: v, False),
        "bilabial_rate": (lambda v: -v, False),
        "silence_mean_dev_mm": (lambda v: v, True),            # the rest face is trivially 0
        "jitter_ratio": (lambda v: abs(math.log(v)) if v > 0 else math.inf, True)}

HOW_TO_READ = """\
**How to read.** Lengths in mm, lower is better unless said otherwise. *LVE*: per frame the
largest L2 error over the lip vertices, averaged over frames; *LVE²* the squared variant of the
BIWI/VOCASET tables (per-frame max of the squared error). *MVE*: mean L2 error over all vertices
and frames. *FDD*: upper-face motion (per vertex the std over time of its displacement, averaged
over the upper face) of the ground truth minus that of the prediction, per sequence, then
averaged: signed (> 0: the prediction is too still) and absolute. The upper face (blinks, brows)
is drawn at random by the corpus and by the model, so MVE and FDD judge its amount of motion,
not its timing. *Bilabial closure* (higher is better): share of /p b m/ phones during which the
predicted inner-lip gap falls below 1.5 mm (or 10 % of its maximum) in at least one frame
(closed/total, pooled). *Silence closure*: mean |gap - neutral gap| in pauses of >= 0.3 s, and
the share of clips with a pause where it stays within 1 mm. *Jitter*: mean |second difference|
of the lip vertices of the prediction over that of the ground truth (1 is ideal; > 1 jittery).
Bold: the best lip number of a column (not counting *rest* for silence and jitter, where the
still face is trivially perfect). Baselines: *rest* is the face at rest; *phoneme-rig* drives
the articulation rig with phones recognised from the audio without the transcript, what
phoneme-based lip-sync tools do. Real clips have no ground-truth meshes: the transcript is
force-aligned (pocketsphinx) and drives the rig that made the corpus (pseudo ground truth, with a
style and upper face no predictor was given); closure metrics use the aligned phones."""


def _f(v, fmt="{:.2f}"):
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)


def _best(results: dict) -> dict:
    """aggregate key -> best value over predictors (None if no finite value)."""
    out = {}
    for key, (score, skip_rest) in BEST.items():
        vals = [r["aggregate"][key] for n, r in results.items()
                if not (skip_rest and n == "rest") and not math.isnan(r["aggregate"][key])]
        out[key] = min(vals, key=score) if vals else None
    return out


def format_table(results: dict) -> str:
    """Markdown table, one row per predictor."""
    best = _best(results)

    def cell(a, key, text):
        v = a[key]
        return f"**{text}**" if best[key] is not None and not math.isnan(v) and \
            np.isclose(BEST[key][0](v), BEST[key][0](best[key]), rtol=1e-9, atol=1e-12) else text

    rows = [HEADER, "|" + "---|" * 8]
    for name, r in results.items():
        a = r["aggregate"]
        bil = (f"{_f(100 * a['bilabial_rate'], '{:.1f}')} % "
               f"({a['bilabial_closed']}/{a['bilabial_total']})")
        sil = f"{_f(a['silence_mean_dev_mm'])}, {_f(100 * a['silence_ok_rate'], '{:.0f}')} %"
        jit = (f"{_f(a['jitter_ratio'])} ({_f(a['jitter_pred_mm'], '{:.3f}')}/"
               f"{_f(a['jitter_gt_mm'], '{:.3f}')})")
        rows.append("| " + " | ".join([
            name, cell(a, "lve_mm", _f(a["lve_mm"])), cell(a, "lve_sq_mm2", _f(a["lve_sq_mm2"])),
            _f(a["mve_mm"]), f"{_f(a['fdd_signed_mm'], '{:+.2f}')} / {_f(a['fdd_abs_mm'])}",
            cell(a, "bilabial_rate", bil), cell(a, "silence_mean_dev_mm", sil),
            cell(a, "jitter_ratio", jit)]) + " |")
    return "\n".join(rows)


def _title(results: dict, what: str) -> str:
    a = next(iter(results.values()))["aggregate"] if results else {"n_sequences": 0, "n_frames": 0}
    return f"{what}: {a['n_sequences']} clips, {a['n_frames']} frames"


def format_tables(results_corpus: dict, results_real: dict) -> str:
    """Both tables with a title line each (what the command prints)."""
    parts = [_title(results_corpus, "Synthetic test split"), format_table(results_corpus)]
    if results_real:
        parts += ["", _title(results_real, "Real speech, pseudo ground truth"),
                  format_table(results_real)]
    return "\n".join(parts)


def plot_traces(results: dict, out_dir: Path, prefix: str, truth: str) -> list:
    """One lip-opening PNG per clip with traces: -> [(clip id, png path)]."""
    pngs = []
    clips = next(iter(results.values()))["traces"] if results else {}
    for clip, tr in clips.items():
        gaps = {truth: tr["gt_mm"]}
        gaps.update({name: r["traces"][clip]["pred_mm"] for name, r in results.items()})
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", clip)
        pngs.append((clip, plot_lip_opening(gaps, tr["fps"], tr["phones"],
                                            out_dir / "plots" / f"{prefix}_{safe}.png",
                                            f"{prefix}: {clip}")))
    return pngs


def _clean(x):
    """JSON-safe: NaN -> null, numpy scalars -> Python."""
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _section(results, out_dir, prefix, what, truth) -> list:
    lines = [f"## {_title(results, what)}", "", format_table(results), ""]
    for clip, png in plot_traces(results, out_dir, prefix, truth):
        lines.append(f"![{clip}]({png.relative_to(out_dir).as_posix()})")
    return lines + [""]


def write_report(results_corpus: dict, results_real: dict, out_dir, meta: dict) -> Path:
    """Write out_dir/report.md, metrics.json (meta, aggregates, per-clip scalars) and
    plots/*.png. meta: checkpoint, compare, compare_commands, training, data, corpus,
    test_split_size, held_out, limit, seed, pseudo_gt_seed, real_cache (missing keys are left
    out). -> report path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    g = meta.get
    data = g("data") or {}
    held = g("held_out") or {}
    n_eval = (next(iter(results_corpus.values()))["aggregate"]["n_sequences"]
              if results_corpus else 0)
    lines = [f"# Evaluation of `{g('checkpoint')}`", "", "## What was evaluated", "",
             f"- checkpoint: `{g('checkpoint')}`, trained with "
             f"`{(g('training') or {}).get('command', '?')}`",
             f"- its training data: corpus `{data.get('corpus', '?')}` "
             f"({data.get('hours', '?')} h, "
             f"seed {data.get('corpus_seed', '?')}), {data.get('train_sequences', '?')} train / "
             f"{data.get('val_sequences', '?')} val sequences, {data.get('fps', '?')} fps"]
    for name, path in (g("compare") or {}).items():
        cmd = (g("compare_commands") or {}).get(name)
        lines.append(f"- compared: **{name}** = `{path}`"
                     + (f", trained with `{cmd}`" if cmd else ""))
    lines += [f"- test corpus: `{g('corpus')}`, test split {g('test_split_size', '?')} sequences, "
              f"{n_eval} evaluated" + (f" (--limit {g('limit')})" if g("limit") else "")
              + (f"; held out from training: {len(held.get('voices', []))} voices, identities "
                 f"{', '.join(held.get('identities', []))}, {len(held.get('sentences', []))} "
                 "sentences" if held else ""),
              f"- seeds: animation {g('seed', 0)}; real-clip pseudo ground truth "
              f"{g('pseudo_gt_seed', '?')}; real clips from `{g('real_cache', '?')}`", "",
              HOW_TO_READ, ""]
    lines += _section(results_corpus, out_dir, "test", "Synthetic test split", "ground truth")
    if results_real:
        lines += _section(results_real, out_dir, "real", "Real speech, pseudo ground truth",
                          "rig on aligned transcript")
    else:
        lines += ["## Real speech", "", "Real clips unavailable (offline, not cached).", ""]
    report = out_dir / "report.md"
    report.write_text("\n".join(lines))
    metrics = {"meta": meta}
    for key, res in (("corpus", results_corpus), ("real", results_real)):
        metrics[key] = {n: {"aggregate": r["aggregate"], "sequences": r["sequences"]}
                        for n, r in res.items()}
    (out_dir / "metrics.json").write_text(json.dumps(_clean(metrics), indent=1,
                                                     allow_nan=False, default=str))
    return report
