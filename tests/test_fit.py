"""Training: determinism, resume after an interruption, DDP with 2 CPU processes, checkpoints."""
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from core.checkpoint import CheckpointError, load_model, read_checkpoint
from train.fit import main_fit
from train.synth import generate

TINY = ["--steps", "6", "--prior-steps", "4", "--validate-every", "3", "--batch", "4",
        "--frames", "24", "--val-crops", "4", "--threads", "1", "--quiet"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    generate(out, hours=0.01, seed=5, progress=False)
    return out


def _weights(path):
    return {k: v for k, v in load_file(str(path)).items()}


def _same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_fit_is_deterministic_and_resumes_exactly(corpus, tmp_path):
    assert main_fit([str(corpus), "--out", str(tmp_path / "a")] + TINY) == 0
    assert main_fit([str(corpus), "--out", str(tmp_path / "b")] + TINY) == 0
    _same(_weights(tmp_path / "a" / "model.safetensors"), _weights(tmp_path / "b" / "model.safetensors"))
    # interrupted after 3 steps (a checkpoint was written at step 3), then the same command again
    assert main_fit([str(corpus), "--out", str(tmp_path / "c"), "--interrupt-after", "3"] + TINY) == 3
    assert not (tmp_path / "c" / "model.safetensors").exists()
    assert read_checkpoint(tmp_path / "c" / "stage1.safetensors")[1]["training"]["step"] == 3
    assert main_fit([str(corpus), "--out", str(tmp_path / "c")] + TINY) == 0
    _same(_weights(tmp_path / "a" / "model.safetensors"), _weights(tmp_path / "c" / "model.safetensors"))
    # a different seed gives a different model
    assert main_fit([str(corpus), "--out", str(tmp_path / "d"), "--seed", "1"] + TINY) == 0
    wa, wd = _weights(tmp_path / "a" / "model.safetensors"), _weights(tmp_path / "d" / "model.safetensors")
    assert not torch.equal(wa["model.basis.weight"], wd["model.basis.weight"])


def test_weight_average_is_exported_and_resumes_exactly(corpus, tmp_path):
    """--ema: stage 1 ends on the moving average of its weights, kept in its checkpoint, so an
    interrupted run resumes to the same model."""
    ema = ["--ema", "0.9"]
    assert main_fit([str(corpus), "--out", str(tmp_path / "a")] + ema + TINY) == 0
    assert main_fit([str(corpus), "--out", str(tmp_path / "c"), "--interrupt-after", "3"] + ema + TINY) == 3
    assert main_fit([str(corpus), "--out", str(tmp_path / "c")] + ema + TINY) == 0
    wa = _weights(tmp_path / "a" / "model.safetensors")
    _same(wa, _weights(tmp_path / "c" / "model.safetensors"))
    stage1 = _weights(tmp_path / "a" / "stage1.safetensors")
    for k in ("basis.weight", "decoder.audio.out.weight", "audio.norm.weight"):
        if f"model.{k}" in wa:      # the export is the average, not the last weights
            assert torch.equal(wa[f"model.{k}"], stage1[f"ema.{k}"]), k
    assert not torch.equal(stage1["ema.basis.weight"], stage1["model.basis.weight"])
    assert main_fit([str(corpus), "--out", str(tmp_path / "plain")] + TINY) == 0
    assert not torch.equal(wa["model.basis.weight"],
                           _weights(tmp_path / "plain" / "model.safetensors")["model.basis.weight"])


def test_checkpoint_contents(corpus, tmp_path):
    """Trained with the phone head and mel augmentation: the head is in the training
    checkpoint, not in the inference one, which still loads."""
    assert main_fit([str(corpus), "--out", str(tmp_path), "--phone-weight", "0.5",
                     "--warp", "0.1", "--freq-masks", "1"] + TINY) == 0
    tensors, meta = read_checkpoint(tmp_path / "model.safetensors")
    assert not any(k.startswith(("model.expression.", "model.phones.", "optim.", "rng."))
                   for k in tensors)
    assert any(k.startswith("prior.") for k in tensors)
    assert meta["contents"] == "model+prior" and meta["speechface"]
    assert meta["data"]["train_sequences"] > 0 and meta["model_config"].classes == 16
    assert meta["training"]["command"].startswith("python3 -m train fit")
    assert (tmp_path / "curves.png").stat().st_size > 10_000
    model, prior, _ = load_model(tmp_path / "model.safetensors")
    assert prior is not None and not model.training
    stage1 = read_checkpoint(tmp_path / "stage1.safetensors")[0]
    assert any(k.startswith("optim.") for k in stage1) and "rng.torch.0" in stage1
    assert "model.phones.weight" in stage1 and meta["model_config"].phone_classes == 40
    assert "train_phone" in read_checkpoint(tmp_path / "stage1.safetensors")[1]["training"]["history"][-1]
    with pytest.raises(CheckpointError, match="without a prior"):
        load_model(tmp_path / "stage1.safetensors")


def test_bad_checkpoints_say_so_in_one_line(tmp_path):
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(os.urandom(300))
    pickled = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(3)}, pickled)
    from safetensors.torch import save_file
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(3)}, str(foreign))
    for path, words in ((garbage, "not a safetensors"), (pickled, "not a safetensors"),
                        (foreign, "not a Speechface checkpoint"),
                        (tmp_path / "missing.safetensors", "no such")):
        with pytest.raises(CheckpointError) as err:
            load_model(path)
        assert words in str(err.value) and "\n" not in str(err.value)


def test_fit_refuses_a_folder_that_is_not_a_corpus(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a Speechface corpus"):
        main_fit([str(tmp_path), "--out", str(tmp_path / "run")] + TINY)


def test_ddp_two_cpu_processes(corpus, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", "29517", "-m", "train", "fit", str(corpus), "--out", str(tmp_path)] + TINY
    run = subprocess.run(cmd, cwd=os.path.dirname(os.path.dirname(__file__)), env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    meta = read_checkpoint(tmp_path / "model.safetensors")[1]
    assert meta["training"]["world_size"] == 2
    stage1 = read_checkpoint(tmp_path / "stage1.safetensors")[0]
    assert "rng.batch.0" in stage1 and "rng.batch.1" in stage1
    load_model(tmp_path / "model.safetensors")


def test_gram_form_of_the_loss_equals_the_dense_loss():
    from core.assets import load_default_head
    from train.data import LinearTargets
    from core.rig import lip_gap
    from train.losses import dense_sq_error, gap_vector, gram_sq_errors

    torch.manual_seed(0)
    head = load_default_head()
    units = torch.from_numpy(head.units.dense().reshape(52, -1) * 1000)
    targets = LinearTargets(units)
    basis = torch.nn.Linear(8, units.shape[1])
    coeffs = torch.randn(3, 3, 5, 8)
    arkit, scale = torch.rand(3, 5, 52) * 0.3, torch.tensor([0.9, 1.0, 1.1])
    # a region (summed over its own vertices), every vertex, and the region again (shared blocks)
    lips = torch.from_numpy(head.masks["lips"])
    masks = torch.stack([lips, torch.ones(head.n_vertices), lips])
    fast = gram_sq_errors(coeffs, arkit, scale, basis, units, masks)
    gt = targets.dense(arkit, scale)
    for i in range(3):
        slow = dense_sq_error(basis(coeffs[i]), gt, masks[i])
        assert torch.allclose(fast[i], slow, rtol=1e-4), (fast[i], slow)
    # and the gradients training follows
    grads = []
    for loss in (lambda: gram_sq_errors(coeffs, arkit, scale, basis, units, masks).sum(),
                 lambda: sum(dense_sq_error(basis(coeffs[i]), gt, masks[i]) for i in range(3))):
        basis.zero_grad()
        loss().backward()
        grads.append((basis.weight.grad.clone(), basis.bias.grad.clone()))
    for a, b in zip(*grads):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-6 * b.abs().max()), (a - b).abs().max()
    pairs = torch.from_numpy(head.landmarks["lip_pairs"]).long()
    g = gap_vector(pairs, units.shape[1])
    # the gap functional is the rig's lip gap: of template + offsets, minus the template's
    v = head.vertices.astype(np.float64)
    rig = [lip_gap(v + o.reshape(-1, 3).numpy() / 1000) - lip_gap(v)
           for o in gt.reshape(-1, gt.shape[-1])]
    assert np.allclose((gt @ g).reshape(-1).numpy() / 1000, rig, atol=1e-7)


def test_every_loss_term_counts_in_the_total():
    """Each named term with its weight adds up to the total (a term left out of the sum once
    went unnoticed for several training runs)."""
    from core.assets import load_default_head
    from core.model import MeshTalkLite, ModelConfig, mel_window
    from train.data import LinearTargets
    from train.fit import TrainConfig
    from train.losses import LossGeometry, gap_vector, stage1_losses

    from core.rig.phones import PHONES

    torch.manual_seed(0)
    head = load_default_head()
    net = MeshTalkLite(ModelConfig(phone_classes=len(PHONES)), torch.from_numpy(head.vertices)).train()
    units = torch.from_numpy(head.units.dense().reshape(52, -1) * 1000)
    b, t = 4, 24
    _, length, rel = mel_window(0, t, 30.0, net.audio.past, net.audio.future)
    arkit = torch.rand(b, t, 52) * 0.4
    arkit[:, 10:14, 0] = 0                                       # some content
    scale = torch.ones(b)
    neutral = torch.full((b,), 0.5)                              # so that some frames are closed
    expr = LinearTargets(units).columns(arkit, scale, net.expression.index)
    template = torch.from_numpy(head.vertices)[None].repeat(b, 1, 1)
    out = net(torch.randn(b, 80, length), rel.expand(b, -1), expr, template,
              swap=torch.roll(torch.arange(b), 1))
    cfg = TrainConfig(phone_weight=0.5, lip_rms_weight=0.7)
    masks = {k: torch.from_numpy(v) for k, v in head.masks.items()}
    pairs = torch.from_numpy(head.landmarks["lip_pairs"]).long()
    geo = LossGeometry(masks, units, gap_vector(pairs, units.shape[1]))
    phone = torch.randint(len(PHONES), (b, t))
    losses = stage1_losses(net, out, arkit, scale, neutral, geo, cfg, phone)
    weights = {"full": 1.0, "lips": cfg.lip_weight, "eyelids": cfg.eyelid_weight,
               "mouth_swap": 1.0, "upper_swap": 1.0, "gap": cfg.gap_weight,
               "closure": cfg.closure_weight, "seal": cfg.seal_weight, "arkit": cfg.arkit_weight,
               "code_usage": cfg.usage_weight, "phone": cfg.phone_weight,
               "lip_rms": cfg.lip_rms_weight}
    assert set(losses) == set(weights) | {"total"}
    assert all(losses[k].item() > 0 for k in weights), {k: v.item() for k, v in losses.items()}
    total = sum(w * losses[k] for k, w in weights.items())
    assert torch.allclose(losses["total"], total, rtol=1e-5)


def test_frame_rms_is_minimised_by_the_median_not_the_mean():
    """Where a frame's truth is either shut (0 mm, 4 frames in 10) or open (8 mm, 6 in 10), the
    squared error settles half open (the mean, 4.8 mm) and the per-frame RMS error on the
    likelier shape (8 mm): what the lips' RMS term asks of the model."""
    from train.losses import frame_rms

    truth = torch.tensor([[0.0] * 4 + [8.0] * 6])                 # (B=1, T=10) mm
    settled = {}
    for name, loss in (("squared", lambda sq: sq.mean()), ("rms", frame_rms)):
        pred = torch.tensor(2.0, requires_grad=True)
        opt = torch.optim.Adam([pred], lr=0.05)
        for _ in range(2000):
            opt.zero_grad()
            loss((pred - truth) ** 2).backward()
            opt.step()
        settled[name] = pred.item()
    assert abs(settled["squared"] - 4.8) < 0.05, settled
    assert abs(settled["rms"] - 8.0) < 0.2, settled


def test_phone_labels_follow_the_timeline():
    from core.rig.phones import PHONES
    from train.data import frame_phones

    labels = frame_phones([("SIL", 0.0, 0.1), ("M", 0.1, 0.2), ("AA", 0.2, 0.5)], 16, 30.0)
    names = [PHONES[i] for i in labels.tolist()]
    # frame k shows k / 30 s: frames 0-2 silence, 3-5 /m/, 6-14 /aa/, 15 (0.5 s) past the end
    assert names == ["SIL"] * 3 + ["M"] * 3 + ["AA"] * 9 + ["SIL"]


def test_mel_warp_moves_formants_and_masks_blank_bands():
    """A spectral peak moves up when the vocal tract is shorter (factor > 1) and down when
    longer; frequency masks set whole bands to the normalised mean (0)."""
    from core.audio import mel_bin_hz
    from train.data import augment_mel

    hz = mel_bin_hz(80)
    peak = int(np.argmin(abs(hz - 1000)))
    mel = torch.zeros(64, 80, 5)
    mel[:, peak] = 1.0
    out = augment_mel(mel, torch.Generator().manual_seed(0), warp=0.15)
    moved = out[:, :, 0].argmax(1)
    assert (moved > peak).any() and (moved < peak).any()
    assert ((moved - peak).abs() <= 4).all()
    # the bin that holds the peak after the warp sits near 1000 Hz times the crop's factor
    assert ((hz[moved.numpy()] / 1000 > 0.8) & (hz[moved.numpy()] / 1000 < 1.2)).all()
    full = torch.randn(8, 80, 5) + 5
    masked = augment_mel(full, torch.Generator().manual_seed(1), freq_masks=2)
    blank = (masked == 0).all(-1).sum(1)
    assert (blank <= 16).all() and blank.sum() > 0
    assert torch.equal(masked[masked != 0], full[masked != 0])


def test_a_model_with_the_phone_ear_trains_saves_and_animates(corpus, tmp_path):
    """``--set phone_ear=true``: the training set and the pipeline feed the model the ear's rows
    under the log-mel (core/phone_ear.py), and the checkpoint keeps the option."""
    from core.audio import MelConfig
    from core.phone_ear import N_EAR
    from core.pipeline import animate, get_model
    from train.corpus import Corpus

    assert main_fit([str(corpus), "--out", str(tmp_path), "--set", "phone_ear=true"] + TINY) == 0
    net, prior, meta = get_model(tmp_path / "model.safetensors")
    assert net.cfg.phone_ear and net.audio.inp.in_channels == MelConfig.n_mels + N_EAR
    c = Corpus(corpus)
    seq = c.load(c.ids()[0])
    anim = animate(seq.audio, seq.sample_rate, model=(net, prior, meta))
    assert anim.n_frames == math.ceil(len(seq.audio) / seq.sample_rate * 30)
    assert np.isfinite(anim.coeffs).all()
