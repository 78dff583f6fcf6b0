"""python3 -m train evaluate on a tiny synthetic corpus and a tiny, briefly trained checkpoint."""
import json

import numpy as np
import pytest

from train.evaluate import fit_frames, main_evaluate, predictors

TINY = ["--set", "audio_channels=16", "audio_dim=16", "expr_widths=[16]", "expr_dim=16",
        "fusion_width=16", "template_widths=[16]", "decoder_dim=16", "decoder_widths=[16]",
        "prior_dim=16", "classes=8"]
NAMES = ["ours", "ours, no lip seal", "small", "rest", "phoneme-rig"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from train.corpus import Corpus
    from train.synth import generate

    root = tmp_path_factory.mktemp("eval") / "corpus"
    generate(root, hours=0.01, seed=3, progress=False)
    assert Corpus(root).ids("test"), "the tiny corpus has no test sequence"
    return root


@pytest.fixture(scope="module")
def checkpoint(corpus):
    from train.fit import main_fit

    run = corpus.parent / "run"
    assert main_fit([str(corpus), "--out", str(run), "--steps", "4", "--prior-steps", "2",
                     "--validate-every", "2", "--val-crops", "4", "--batch", "2",
                     "--frames", "24", "--quiet"] + TINY) == 0
    return run / "model.safetensors"


@pytest.fixture(scope="module")
def evaluated(corpus, checkpoint, clips, cache_dir):
    out = corpus.parent / "eval"
    rc = main_evaluate([str(checkpoint), str(corpus), "--out", str(out), "--compare",
                        f"small={checkpoint}", "--cache", str(cache_dir / "real"),
                        "--ablate-seal"])
    assert rc == 0
    return out, json.loads((out / "metrics.json").read_text()), clips


def test_report_rows_and_plots(evaluated):
    out, metrics, clips = evaluated
    report = (out / "report.md").read_text()
    for name in NAMES:   # one row per predictor in each of the two tables
        assert report.count(f"| {name} |") == 2, name
    assert "Synthetic test split" in report and "Real speech" in report
    assert "fit " in report   # the checkpoint's training command
    pngs = sorted((out / "plots").glob("*.png"))
    assert len([p for p in pngs if p.name.startswith("test_")]) == min(3, len(
        metrics["corpus"]["ours"]["sequences"]))
    assert len([p for p in pngs if p.name.startswith("real_")]) == len(clips)
    for p in pngs:
        assert p.stat().st_size > 5000 and f"]({p.relative_to(out).as_posix()})" in report


def test_metrics_json(evaluated):
    _, metrics, clips = evaluated
    for key in ("corpus", "real"):
        assert list(metrics[key]) == NAMES
        rest = metrics[key]["rest"]["aggregate"]
        assert rest["bilabial_rate"] == 0 and rest["bilabial_total"] > 0
        assert rest["lve_mm"] > 0 and rest["jitter_pred_mm"] == 0
        assert rest["silence_mean_dev_mm"] in (0, None)
    assert len(metrics["real"]["ours"]["sequences"]) == len(clips)
    seq = metrics["corpus"]["ours"]["sequences"][0]
    assert {"id", "lve_mm", "mve_mm", "bilabial_total"} <= set(seq)
    assert "gap_pred_m" not in seq
    # the rig baseline closes the lips on most /p b m/ of the real clips (rough phones)
    assert metrics["real"]["phoneme-rig"]["aggregate"]["bilabial_rate"] > 0.3


def test_same_checkpoint_same_numbers(evaluated):
    _, metrics, _ = evaluated
    for key in ("corpus", "real"):
        assert metrics[key]["ours"] == metrics[key]["small"]


def test_bad_checkpoint_one_line_error(corpus, tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint at all")
    assert main_evaluate([str(bad), str(corpus), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "bad.safetensors" in err and "\n" not in err
    assert not (tmp_path / "o").exists()


def test_predictors_shapes(checkpoint):
    from core.assets import load_default_head

    template = load_default_head().vertices
    preds = predictors(checkpoint, {"small": checkpoint}, ablate_seal=True)
    assert list(preds) == NAMES
    sr, t = 16000, np.arange(16000) / 16000
    x = (0.3 * np.sin(2 * np.pi * 180 * t) * (np.sin(2 * np.pi * 3 * t) > 0)).astype(np.float32)
    for n in (20, 45):   # 1 s at 30 fps is 30 frames: cut and padded
        for name in ("ours", "rest"):
            y = preds[name](x, sr, 30.0, n, template, 0)
            assert y.shape == (n,) + template.shape and y.dtype == np.float32
    x3 = np.arange(6, dtype=np.float32).reshape(2, 1, 3)
    assert np.array_equal(fit_frames(x3, 4)[2:], np.repeat(x3[-1:], 2, 0))
    assert fit_frames(x3, 1).shape == (1, 1, 3)
