"""Evaluation metrics for speech-driven face animation (pure numpy), as ARCHITECTURE.md defines them.

Per sequence: `sequence_metrics(pred_offsets, gt_offsets, template, phones, fps)` -> flat dict of
scalars (plus the lip-gap traces for plots); over a test set: `aggregate([dicts])`. The single
metrics (`lve`, `mve`, `fdd`, `bilabial_closure`, `silence_closure`, `jitter`) work on plain
arrays, so real speech without ground-truth meshes can still get the closure metrics from a gap
trace alone. Shapes: T frames, V vertices; frame k shows t = k / fps; lengths in metres in,
millimetres out. Phones are canonical (``core.rig.phones``) ``(phone, start_s, end_s)``.
"""
from __future__ import annotations

import numpy as np

from core.rig.phones import SILENCE

MM = 1000.0
BILABIALS = ("P", "B", "M")
_EPS_S = 1e-9   # so a frame exactly on a phone boundary (k / fps == start) is inside it
_STILL_MM = 1e-6   # jitter below this (1 nm / frame^2) is float noise of a still or linear gt


def lve(pred: np.ndarray, gt: np.ndarray, lip_idx) -> dict:
    """Lip vertex error. pred, gt: (T, V, 3) offsets or positions (m); lip_idx: lip vertex indices.
    -> {"lve_mm": mean over frames of the max over lip vertices of the L2 error (mm),
        "lve_sq_mm2": the BIWI/VOCASET variant, mean over frames of the max squared L2 error (mm^2)}."""
    d = np.asarray(pred, np.float64)[:, lip_idx] - np.asarray(gt, np.float64)[:, lip_idx]
    sq = np.sum(d * d, axis=-1) * MM ** 2                       # (T, L) mm^2
    worst = sq.max(axis=1)                                      # (T,)
    return {"lve_mm": float(np.sqrt(worst).mean()), "lve_sq_mm2": float(worst.mean())}


def mve(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean vertex error (mm): L2 error averaged over all vertices and frames. pred, gt: (T, V, 3) m."""
    d = np.asarray(pred, np.float64) - np.asarray(gt, np.float64)
    return float(np.linalg.norm(d, axis=-1).mean() * MM)


def _motion(offsets: np.ndarray, idx) -> float:
    """Upper-face motion (mm): per vertex the std over time of ||offset||, averaged over vertices."""
    mag = np.linalg.norm(np.asarray(offsets, np.float64)[:, idx], axis=-1)   # (T, U) m
    return float(mag.std(axis=0).mean() * MM)


def fdd(pred: np.ndarray, gt: np.ndarray, upper_idx) -> dict:
    """Upper-face dynamics deviation of one sequence. pred, gt: (T, V, 3) offsets from the template
    (m); upper_idx: upper-face vertex indices. Motion = per vertex the std over time of its
    displacement magnitude ||offset||, averaged over vertices.
    -> {"fdd_signed_mm": motion(gt) - motion(pred) (> 0: prediction too still), "fdd_abs_mm": |...|}.
    Average over sequences in the caller (`aggregate`)."""
    signed = _motion(gt, upper_idx) - _motion(pred, upper_idx)
    return {"fdd_signed_mm": signed, "fdd_abs_mm": abs(signed)}


def _frames(start: float, end: float, fps: float, T: int) -> np.ndarray:
    """Frames whose time k / fps lies in [start, end]; if none, the frame nearest the middle."""
    t = np.arange(T) / fps
    ks = np.flatnonzero((t >= start - _EPS_S) & (t <= end + _EPS_S))
    if len(ks) == 0:
        ks = np.array([int(np.clip(round(0.5 * (start + end) * fps), 0, T - 1))])
    return ks


def bilabial_closure(gap_m: np.ndarray, phones, fps: float, threshold_mm: float = 1.5,
                     rel: float = 0.10) -> dict:
    """Share of /P B M/ phones whose lips close. gap_m: (T,) signed inner-lip gap (m, upper - lower,
    as ``core.rig.lip_gap`` returns; negative = lips pressed together, counts as closed).
    A phone is closed if in at least one frame of [start, end] (or the frame nearest its middle)
    the gap is below threshold_mm OR below rel * the sequence's maximum gap.
    -> {"closed": int, "total": int, "rate": closed / total (nan if no bilabial)}."""
    gap = np.asarray(gap_m, np.float64) * MM
    limit = max(threshold_mm, rel * float(gap.max()))
    closed = total = 0
    for phone, start, end in phones:
        if phone in BILABIALS:
            total += 1
            closed += bool(gap[_frames(start, end, fps, len(gap))].min() < limit)
    return {"closed": closed, "total": total, "rate": closed / total if total else float("nan")}


def silence_closure(gap_m: np.ndarray, neutral_gap_m: float, phones, fps: float,
                    min_pause_s: float = 0.3, tol_mm: float = 1.0) -> dict:
    """Does the mouth return to rest in pauses? gap_m: (T,) lip gap (m); neutral_gap_m: the
    template's gap (m). Frames: inside SIL phones lasting >= min_pause_s (leading and trailing
    silence included), less 0.1 s at each edge (coarticulation into/out of speech); if nothing
    remains, the pause's middle frame.
    -> {"mean_dev_mm": mean |gap - neutral| (mm), "ok": mean_dev_mm <= tol_mm, "n_frames": int};
    no pause: n_frames 0, mean_dev_mm nan, ok True."""
    gap = np.asarray(gap_m, np.float64)
    edge, T = 0.1, len(gap)
    ks = [_frames(s + edge, e - edge, fps, T)   # a too-short remainder gives the middle frame
          for p, s, e in phones if p == SILENCE and e - s >= min_pause_s - _EPS_S and s * fps < T]
    if not ks:
        return {"mean_dev_mm": float("nan"), "ok": True, "n_frames": 0}
    ks = np.unique(np.concatenate(ks))
    dev = float(np.abs(gap[ks] - neutral_gap_m).mean() * MM)
    return {"mean_dev_mm": dev, "ok": bool(dev <= tol_mm), "n_frames": int(len(ks))}


def _jitter(x: np.ndarray, idx) -> float:
    """Mean L2 norm of the second time difference of vertices idx (mm / frame^2); nan if T < 3."""
    x = np.asarray(x, np.float64)[:, idx]
    if len(x) < 3:
        return float("nan")
    return float(np.linalg.norm(np.diff(x, n=2, axis=0), axis=-1).mean() * MM)


def jitter(pred: np.ndarray, gt: np.ndarray, lip_idx) -> dict:
    """Lip jitter. pred, gt: (T, V, 3) offsets or positions (m); lip_idx: lip vertex indices.
    -> {"pred_mm", "gt_mm": mean over frames and lip vertices of ||x[t+1] - 2 x[t] + x[t-1]||
        (mm / frame^2), "ratio": pred_mm / gt_mm (nan if gt_mm ~ 0)}."""
    p, g = _jitter(pred, lip_idx), _jitter(gt, lip_idx)
    return {"pred_mm": p, "gt_mm": g, "ratio": p / g if g > _STILL_MM else float("nan")}


def sequence_metrics(pred_offsets: np.ndarray, gt_offsets: np.ndarray, template: np.ndarray,
                     phones, fps: float, head=None) -> dict:
    """All metrics of one sequence. pred_offsets, gt_offsets: (T, V, 3) m relative to template
    (V, 3) m, default-head topology; head: the default head (masks, landmarks) if None.
    Lip vertices: ``head.masks["lips"] > 0.5``; upper face: ``head.masks["upper_face"] > 0.5``.
    Closure metrics judge the prediction's lip gap (``core.rig.lip_gap``).
    -> flat dict: lve_mm, lve_sq_mm2, mve_mm, fdd_signed_mm, fdd_abs_mm, bilabial_{closed,total,
    rate}, silence_{mean_dev_mm,ok,n_frames}, jitter_{pred_mm,gt_mm,ratio}, n_frames,
    neutral_gap_m, and the traces gap_pred_m, gap_gt_m (T,) for plots."""
    from core.assets import load_default_head
    from core.rig import lip_gap

    head = load_default_head() if head is None else head
    pred, gt = np.asarray(pred_offsets, np.float64), np.asarray(gt_offsets, np.float64)
    if pred.shape != gt.shape or pred.ndim != 3:
        raise ValueError(f"pred {pred.shape} and gt {gt.shape} must both be (T, V, 3)")
    template = np.asarray(template, np.float64)
    lip_idx = np.flatnonzero(head.masks["lips"] > 0.5)
    upper_idx = np.flatnonzero(head.masks["upper_face"] > 0.5)
    gap_pred, gap_gt = lip_gap(template[None] + pred), lip_gap(template[None] + gt)
    neutral = float(lip_gap(template))
    out = {"n_frames": len(pred), "mve_mm": mve(pred, gt), "neutral_gap_m": neutral}
    out.update(lve(pred, gt, lip_idx))
    out.update(fdd(pred, gt, upper_idx))
    out.update({f"bilabial_{k}": v for k, v in bilabial_closure(gap_pred, phones, fps).items()})
    out.update({f"silence_{k}": v
                for k, v in silence_closure(gap_pred, neutral, phones, fps).items()})
    out.update({f"jitter_{k}": v for k, v in jitter(pred, gt, lip_idx).items()})
    out.update(gap_pred_m=gap_pred, gap_gt_m=gap_gt)
    return out


MEAN_KEYS = ("lve_mm", "lve_sq_mm2", "mve_mm", "fdd_signed_mm", "fdd_abs_mm",
             "jitter_pred_mm", "jitter_gt_mm")


def aggregate(seqs: list) -> dict:
    """Combine `sequence_metrics` dicts of a test set.
    - lve/mve/fdd/jitter: unweighted mean over sequences (fdd_abs_mm is the mean of per-sequence
      |fdd|, not |mean signed|); jitter_ratio = mean jitter_pred_mm / mean jitter_gt_mm.
    - bilabial_rate: pooled, sum closed / sum total (nan if no bilabial at all).
    - silence_mean_dev_mm: mean over sequences that have a pause; silence_ok_rate: share of those
      sequences that are ok (nan if none); silence_n_sequences: how many had a pause.
    Also n_sequences and n_frames (sum)."""
    out = {"n_sequences": len(seqs), "n_frames": int(sum(s["n_frames"] for s in seqs))}
    for k in MEAN_KEYS:
        out[k] = float(np.nanmean([s[k] for s in seqs])) if seqs else float("nan")
    g = out["jitter_gt_mm"]
    out["jitter_ratio"] = out["jitter_pred_mm"] / g if g > _STILL_MM else float("nan")
    closed = sum(s["bilabial_closed"] for s in seqs)
    total = sum(s["bilabial_total"] for s in seqs)
    out.update(bilabial_closed=closed, bilabial_total=total,
               bilabial_rate=closed / total if total else float("nan"))
    paused = [s for s in seqs if s["silence_n_frames"] > 0]
    out["silence_n_sequences"] = len(paused)
    out["silence_mean_dev_mm"] = (float(np.mean([s["silence_mean_dev_mm"] for s in paused]))
                                  if paused else float("nan"))
    out["silence_ok_rate"] = (float(np.mean([s["silence_ok"] for s in paused]))
                              if paused else float("nan"))
    return out
