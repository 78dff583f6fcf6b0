"""The model, the prior's sampler and the windowed pipeline, with random weights (no training
needed): shapes, receptive fields, sampler == teacher-forced prior, windows == one pass."""
import numpy as np
import pytest
import torch

from core.assets import load_default_head
from core.model import (MEL_RATE, PAD_FRAMES, MeshTalkLite, ModelConfig, mel_window,
                        meshtalk_size_config, parameter_count, sample_frames)
from core.pipeline import animate
from core.prior import CodePrior

SMALL = dict(audio_channels=16, audio_dim=16, expr_widths=(16,), expr_dim=16, classes=8,
             fusion_width=16, template_widths=(8,), decoder_dim=16, decoder_widths=(8,),
             prior_dim=16)


def _model(seed=0, **kw):
    torch.manual_seed(seed)
    cfg = ModelConfig(**{**SMALL, **kw})
    head = load_default_head()
    net = MeshTalkLite(cfg, torch.from_numpy(head.vertices)).eval()
    prior = CodePrior(cfg).eval()
    with torch.no_grad():            # random but not tiny, so every layer matters
        for p in prior.parameters():
            p.normal_(0, 0.5)
    return net, prior, {}


def test_audio_encoder_receptive_field_is_what_it_claims():
    net = _model()[0]
    enc = net.audio
    assert (enc.past, enc.future) == (1 + 1 + 2 + 4 + 8 + 16 + 64, 1 + 1 + 2 + 4 + 8 + 16)
    mel = torch.randn(1, 80, 400)
    out = enc(mel)
    assert out.shape == (1, 16, 400 - enc.past - enc.future)
    j = 100                                # output j sees inputs j .. j + past + future
    for i, changes in ((j - 1, False), (j, True), (j + enc.past + enc.future, True),
                       (j + enc.past + enc.future + 1, False)):
        m2 = mel.clone()
        m2[0, :, i] += 1.0
        assert bool((enc(m2)[0, :, j] != out[0, :, j]).any()) == changes, i


def test_mel_window_and_interpolation():
    start, length, rel = mel_window(7, 10, 30.0, past=5, future=3)
    pos = PAD_FRAMES + np.arange(7, 17) * MEL_RATE / 30
    assert start == int(np.floor(pos[0])) - 5
    assert np.allclose(rel.numpy(), pos - np.floor(pos[0]), atol=1e-5)
    assert length == int(np.floor(pos[-1])) - int(np.floor(pos[0])) + 2 + 8   # +1 to interpolate
    feat = torch.arange(20.0).view(1, 1, 20).repeat(2, 3, 1)
    got = sample_frames(feat, torch.tensor([[0.0, 2.5, 18.0], [1.25, 3.0, 4.0]]))
    assert torch.allclose(got[:, :, 0], torch.tensor([[0.0, 2.5, 18.0], [1.25, 3.0, 4.0]]))


def test_training_forward_shapes_and_gradients():
    net = _model()[0].train()
    b, t = 3, 20
    start, length, rel = mel_window(0, t, 30.0, net.audio.past, net.audio.future)
    mel = torch.randn(b, 80, length)
    gt = torch.randn(b, t, net.cfg.n_vertices * 3)
    template = torch.from_numpy(load_default_head().vertices)[None].repeat(b, 1, 1)
    out = net(mel, rel.expand(b, -1), gt, template, swap=torch.roll(torch.arange(b), 1))
    ctx = net.decoder.ctx
    for name in ("full", "swap_expr", "swap_audio"):
        assert out[name]["coeffs"].shape == (b, t - 2 * ctx, net.cfg.rank)
        assert out[name]["arkit"].shape == (b, t - 2 * ctx, 52)
    assert net.basis(out["full"]["coeffs"]).shape == (b, t - 2 * ctx, net.cfg.n_vertices * 3)
    net.basis(out["swap_expr"]["coeffs"]).sum().backward()
    assert net.expression.mlp[0].weight.grad.abs().sum() > 0      # straight-through gradients
    assert net.audio.inp.weight.grad.abs().sum() > 0


def test_prior_sampler_matches_the_teacher_forced_network():
    net, prior, _ = _model()
    t = 40
    feat = torch.randn(t, net.cfg.audio_dim)
    a_codes = torch.randint(net.cfg.classes, (t, net.cfg.heads_audio))
    codes, state = prior.sample(feat, a_codes, np.random.default_rng(0), temperature=None)
    logits, _ = prior(feat[None], a_codes[None], torch.from_numpy(codes)[None])
    # argmax sampling: every drawn code is the network's most likely code given what came before
    assert np.array_equal(logits[0].argmax(-1).numpy(), codes)
    # sampling twice with the same seed is identical, another seed differs
    s1 = prior.sample(feat, a_codes, np.random.default_rng(1))[0]
    assert np.array_equal(s1, prior.sample(feat, a_codes, np.random.default_rng(1))[0])
    assert not np.array_equal(s1, prior.sample(feat, a_codes, np.random.default_rng(2))[0])
    # two halves with the state carried over == one pass
    h1, st = prior.sample(feat[:15], a_codes[:15], np.random.default_rng(0), temperature=None)
    h2, _ = prior.sample(feat[15:], a_codes[15:], np.random.default_rng(0), temperature=None, state=st)
    assert np.array_equal(np.concatenate([h1, h2]), codes)


@pytest.fixture(scope="module")
def speech(clips):
    import soundfile as sf
    path, _ = clips["arctic_a0009"]
    x, sr = sf.read(path, dtype="float32")
    return x, sr


def test_windows_give_the_same_animation_as_one_pass(speech):
    model = _model()
    x, sr = speech
    long = np.concatenate([x, x, x])            # ~9 s
    # the lip seal is per frame (random weights make it ill-conditioned), so compare without it
    one = animate(long, sr, model=model, seed=3, window_s=100, seal=False)
    many = animate(long, sr, model=model, seed=3, window_s=1.0, seal=False)
    assert one.n_frames == many.n_frames == int(np.ceil(len(long) / sr * 30))
    assert np.allclose(one.coeffs, many.coeffs, atol=1e-5)
    assert np.allclose(one.offsets(10, 20), many.offsets(10, 20), atol=1e-6)


def test_lips_do_not_depend_on_the_seed_but_the_upper_face_does(speech):
    net, prior, meta = _model()
    x, sr = speech
    codes = {}
    orig = prior.sample

    def spy(feat, a_codes, rng, temperature=1.0, state=None):
        codes.setdefault("audio", []).append(a_codes.clone())
        out = orig(feat, a_codes, rng, temperature, state)
        codes.setdefault("expr", []).append(out[0])
        return out

    prior.sample = spy
    animate(x, sr, model=(net, prior, meta), seed=1)
    animate(x, sr, model=(net, prior, meta), seed=2)
    assert torch.equal(codes["audio"][0], codes["audio"][1])
    assert not np.array_equal(codes["expr"][0], codes["expr"][1])


def test_meshtalk_size_config_is_much_bigger():
    head = load_default_head()
    small = MeshTalkLite(ModelConfig(), torch.from_numpy(head.vertices))
    big = MeshTalkLite(meshtalk_size_config(), torch.from_numpy(head.vertices))
    assert big.cfg.heads == 16 and big.cfg.classes == 128
    def inference(m):          # the expression encoder is only used in training
        return parameter_count(m) - parameter_count(m.expression)

    assert inference(big) > 10 * inference(small)
    assert parameter_count(CodePrior(big.cfg)) > 50 * parameter_count(CodePrior(small.cfg))


def test_seal_lips_closes_exactly_where_asked():
    from core.pipeline import SEAL_GAP_MM, lip_gap_vector, seal_lips
    net = _model()[0]
    head = load_default_head()
    pairs = head.landmarks["lip_pairs"]
    basis, bias = net.basis.weight.T.detach().numpy(), net.basis.bias.detach().numpy()
    g = lip_gap_vector(pairs, head.n_vertices)
    neutral = 1000 * float((head.vertices[pairs[:, 0], 2] - head.vertices[pairs[:, 1], 2]).mean())

    def gap(c):
        return neutral + c.astype(np.float64) @ (basis @ g) + bias @ g

    r = np.random.default_rng(0).normal(size=net.cfg.rank)
    slope, g0 = float(r @ (basis @ g)), float(gap(np.zeros(net.cfg.rank)))
    targets = np.array([1.0, 2.0, 2.5, 13.0, 15.0, 1.5, 11.0, 9.0])        # mm before sealing
    prob = np.array([0.0, 0.15, 1.0, 1.0, 1.0, 0.25, 0.3, 1.0])
    coeffs = (((targets - g0) / slope)[:, None] * r[None]).astype(np.float32)
    assert np.allclose(gap(coeffs), targets, atol=1e-3)
    after = gap(seal_lips(coeffs, prob, basis, bias, head.vertices, pairs))
    assert np.allclose(after[[0, 1]], targets[[0, 1]], atol=1e-4)       # unlikely: untouched
    assert after[2] == pytest.approx(SEAL_GAP_MM, abs=1e-3)              # likely, nearly shut
    assert np.allclose(after[[3, 4]], targets[[3, 4]], atol=1e-4)       # wide open: never shut
    assert SEAL_GAP_MM < after[5] < targets[5]                          # halfway: partly
    assert after[6] == pytest.approx(targets[6], abs=1e-4)              # open, head unsure: kept
    assert after[7] == pytest.approx(SEAL_GAP_MM, abs=1e-3)             # open, head sure: shut
