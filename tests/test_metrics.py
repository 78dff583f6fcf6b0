"""Evaluation metrics (train/metrics.py): hand-built arrays with known answers, and one run on
real rig output of the default head."""
import math

import numpy as np
import pytest

from train import metrics as M

MM = 1e-3
FPS = 30.0


def zeros(T=10, V=4):
    return np.zeros((T, V, 3))


# --- LVE / MVE -------------------------------------------------------------------------------

def test_lve_max_over_lip_vertices_mean_over_frames():
    gt, pred = zeros(), zeros()
    pred[::2, 1, 0] = 2 * MM          # 2 mm on one lip vertex, half of the frames
    pred[::2, 2, 1] = 1 * MM          # a smaller error on another lip vertex: not the max
    pred[:, 3, 2] = 50 * MM           # a big error on a vertex that is not a lip vertex
    out = M.lve(pred, gt, [0, 1, 2])
    assert out["lve_mm"] == pytest.approx(1.0)
    assert out["lve_sq_mm2"] == pytest.approx(2.0)     # (4 mm^2 + 0) / 2


def test_lve_uses_l2_not_per_axis():
    pred = zeros(T=1, V=1)
    pred[0, 0] = [3 * MM, 4 * MM, 0]
    out = M.lve(pred, zeros(T=1, V=1), [0])
    assert out["lve_mm"] == pytest.approx(5.0) and out["lve_sq_mm2"] == pytest.approx(25.0)


def test_mve_mean_over_all_vertices_and_frames():
    pred = zeros(T=2, V=4)
    pred[0, 0] = [0, 0, 8 * MM]       # 8 mm on 1 of 8 vertex-frames
    assert M.mve(pred, zeros(T=2, V=4)) == pytest.approx(1.0)
    assert M.mve(pred, pred) == 0.0


# --- FDD --------------------------------------------------------------------------------------

def test_fdd_sign_gt_moves_more_is_positive():
    t = np.arange(40)
    gt, pred = zeros(T=40, V=3), zeros(T=40, V=3)
    # displacement magnitude alternates 0 / 2 mm: std 1 mm (upper vertices 0 and 1)
    gt[:, 0, 2] = gt[:, 1, 0] = (t % 2) * 2 * MM
    pred[:, 0, 2] = (t % 2) * 1 * MM      # half the motion on one vertex, none on the other
    pred[:, 2, 2] = (t % 2) * 9 * MM      # not an upper-face vertex
    out = M.fdd(pred, gt, [0, 1])
    assert out["fdd_signed_mm"] == pytest.approx(1.0 - 0.25)
    assert out["fdd_abs_mm"] == pytest.approx(0.75)
    swapped = M.fdd(gt, pred, [0, 1])
    assert swapped["fdd_signed_mm"] == pytest.approx(-0.75)
    assert swapped["fdd_abs_mm"] == pytest.approx(0.75)


def test_fdd_constant_offset_is_no_motion():
    gt = zeros(T=5, V=2) + 3 * MM         # a static displacement has no std over time
    assert M.fdd(zeros(T=5, V=2), gt, [0, 1])["fdd_signed_mm"] == pytest.approx(0.0)


# --- bilabial closure -------------------------------------------------------------------------

B_PHONES = [("SIL", 0.0, 0.3), ("B", 0.3, 0.4), ("AA", 0.4, 0.7), ("SIL", 0.7, 1.0)]


def gap_trace(closure_mm, T=31, open_mm=12.0):
    """Gap (m) per frame: open_mm everywhere, closure_mm at frame 10 (t = 0.333 s, inside B)."""
    g = np.full(T, open_mm * MM)
    g[10] = closure_mm * MM
    return g


def test_bilabial_closed_and_not_closed():
    assert M.bilabial_closure(gap_trace(0.5), B_PHONES, FPS) == {"closed": 1, "total": 1, "rate": 1.0}
    assert M.bilabial_closure(gap_trace(3.0), B_PHONES, FPS)["rate"] == 0.0
    # 1.1 mm is not below 10 % of a 10 mm max... but it is below 1.5 mm: either criterion suffices
    assert M.bilabial_closure(gap_trace(1.1, open_mm=10), B_PHONES, FPS)["rate"] == 1.0
    # 2.5 mm > 1.5 mm, but below 10 % of a 30 mm maximum
    assert M.bilabial_closure(gap_trace(2.5, open_mm=30), B_PHONES, FPS)["rate"] == 1.0
    # pressed lips (negative signed gap) are closed
    assert M.bilabial_closure(gap_trace(-1.0), B_PHONES, FPS)["rate"] == 1.0


def test_bilabial_closure_outside_the_phone_does_not_count():
    g = np.full(31, 12 * MM)
    g[20] = 0.0                                   # t = 0.667 s: during AA, not B
    assert M.bilabial_closure(g, B_PHONES, FPS)["closed"] == 0


def test_bilabial_short_phone_uses_nearest_frame_and_counts_pooled():
    phones = [("P", 0.34, 0.36), ("M", 0.5, 0.6), ("AA", 0.6, 0.9)]   # P holds no frame time
    g = np.full(31, 12 * MM)
    g[10] = 0.0                                   # frame nearest 0.35 s
    out = M.bilabial_closure(g, phones, FPS)
    assert out == {"closed": 1, "total": 2, "rate": 0.5}
    assert math.isnan(M.bilabial_closure(g, [("AA", 0, 1)], FPS)["rate"])


# --- silence closure --------------------------------------------------------------------------

SIL_PHONES = [("SIL", 0.0, 0.5), ("AA", 0.5, 1.0), ("SIL", 1.0, 1.2), ("S", 1.2, 1.5),
              ("SIL", 1.5, 2.0)]


def test_silence_at_rest_is_ok_and_drift_is_not():
    neutral = 2.5 * MM
    g = np.full(61, neutral)
    g[15:45] = 10 * MM                            # speech, also in the 0.2 s pause (too short)
    g[14] = g[45] = 9 * MM                        # coarticulation within 0.1 s of the pauses' edges
    out = M.silence_closure(g, neutral, SIL_PHONES, FPS)
    assert out["ok"] and out["mean_dev_mm"] == pytest.approx(0.0)
    # frames 3..12 (0.1..0.4 s) and 48..57 (1.6..1.9 s)
    assert out["n_frames"] == 10 + 10
    drift = g.copy()
    drift[:15] += 1.5 * MM
    drift[46:] += 1.5 * MM
    out = M.silence_closure(drift, neutral, SIL_PHONES, FPS)
    assert not out["ok"] and out["mean_dev_mm"] == pytest.approx(1.5)


def test_silence_without_pause():
    out = M.silence_closure(np.zeros(30), 0.0, [("SIL", 0, 0.1), ("AA", 0.1, 1.0)], FPS)
    assert out["n_frames"] == 0 and out["ok"] and math.isnan(out["mean_dev_mm"])


# --- jitter -----------------------------------------------------------------------------------

def test_jitter_linear_is_zero_alternating_is_known():
    t = np.arange(12)
    gt, pred = zeros(T=12, V=3), zeros(T=12, V=3)
    gt[:, 0, 0] = gt[:, 1, 2] = t * 0.5 * MM             # linear motion: no jitter
    pred[:, 0, 0] = t * 0.5 * MM
    pred[:, 1, 2] = np.where(t % 2, 1.0, -1.0) * MM      # +-1 mm: second difference 4 mm
    pred[:, 2, 1] = np.where(t % 2, 5.0, -5.0) * MM      # not a lip vertex
    out = M.jitter(pred, gt, [0, 1])
    assert out["gt_mm"] == pytest.approx(0.0, abs=1e-9)
    assert out["pred_mm"] == pytest.approx(2.0)          # mean over the two lip vertices
    assert math.isnan(out["ratio"])
    out = M.jitter(pred, pred * 0.5, [0, 1])
    assert out["ratio"] == pytest.approx(2.0)


# --- on real rig output -----------------------------------------------------------------------

RIG_PHONES = [("SIL", 0.0, 0.4), ("B", 0.4, 0.5), ("AA", 0.5, 0.7), ("M", 0.7, 0.8),
              ("SIL", 0.8, 1.4)]


@pytest.fixture(scope="module")
def rig():
    from core.assets import load_default_head
    from core.rig import rig_offsets, rig_weights
    head = load_default_head()
    w = rig_weights(RIG_PHONES, FPS, 42, seed=0)
    return head, rig_offsets(w, head.vertices)


def test_neutral_head_lips_are_apart(rig):
    from core.rig import lip_gap
    head, _ = rig
    assert lip_gap(head.vertices.astype(np.float64)) > 2 * MM   # so the rest face does not "close"


def test_sequence_metrics_perfect_prediction(rig):
    head, gt = rig
    out = M.sequence_metrics(gt, gt, head.vertices, RIG_PHONES, FPS)
    assert out["lve_mm"] == 0 and out["lve_sq_mm2"] == 0 and out["mve_mm"] == 0
    assert out["fdd_signed_mm"] == 0 and out["jitter_ratio"] == pytest.approx(1.0)
    assert out["bilabial_total"] == 2 and out["bilabial_rate"] == 1.0
    assert out["silence_ok"] and out["silence_n_frames"] > 10
    assert out["gap_pred_m"].shape == (42,) and np.array_equal(out["gap_pred_m"], out["gap_gt_m"])


def test_sequence_metrics_rest_face_and_aggregate(rig):
    head, gt = rig
    still = M.sequence_metrics(np.zeros_like(gt), gt, head.vertices, RIG_PHONES, FPS)
    assert still["bilabial_rate"] == 0.0 and still["bilabial_total"] == 2
    err = np.linalg.norm(gt.astype(np.float64), axis=-1) / MM          # (T, V) mm vs the rest face
    lips = head.masks["lips"] > 0.5                                       # soft mask, lips proper
    assert still["lve_mm"] > 1.0 and still["lve_mm"] == pytest.approx(err[:, lips].max(1).mean())
    assert still["mve_mm"] == pytest.approx(err.mean())
    assert still["silence_ok"] and still["silence_mean_dev_mm"] == pytest.approx(0.0)
    assert still["fdd_signed_mm"] > 0                    # the ground truth blinks, the rest face not
    assert still["jitter_pred_mm"] == 0.0

    perfect = M.sequence_metrics(gt, gt, head.vertices, RIG_PHONES, FPS)
    agg = M.aggregate([perfect, still])
    assert agg["n_sequences"] == 2 and agg["n_frames"] == 84
    assert agg["lve_mm"] == pytest.approx(still["lve_mm"] / 2)
    assert agg["bilabial_closed"] == 2 and agg["bilabial_rate"] == 0.5
    assert agg["silence_n_sequences"] == 2 and agg["silence_ok_rate"] == 1.0
    assert agg["jitter_ratio"] == pytest.approx(0.5)     # (gt + 0) / 2 over gt
