"""A second ear trained on human speech: frame-wise phone evidence from CMU Sphinx's acoustic model.

The model's own audio encoder learns only from synthetic voices. ``phone_evidence`` scores each
10 ms frame of speech against pocketsphinx's generic US English acoustic model (trained on human
recordings; the parameters ship in ``assets/phone_ear.npz``, built by ``python3 -m train
build-ear``): sphinx-style cepstra (pre-emphasis 0.97, 25.6 ms Hamming window, 25 mel filters
130-6800 Hz, DCT, lifter 22, utterance mean removed) with their deltas and second deltas, each of
the 42 context-independent phones' three states scored by its 128-Gaussian mixture per stream,
no search. With ``ModelConfig.phone_ear`` the evidence is stacked under the log-mel as
``N_EAR`` extra input channels (``ear_channels``).

Only numpy/torch; no pocketsphinx at run time.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from .assets import ASSETS

N_EAR = 42                 # context-independent phones of the en-us model (+NSN+ ... ZH)
SILENCE = "SIL"
POSTERIOR_SCALE = 0.3      # acoustic scale of the frame posteriors (a 1.0 scale is near one-hot)
LOG_FLOOR = 12.0           # log posteriors are clipped at -LOG_FLOOR, then mapped to -1 .. 1
HOP = 160                  # samples per frame at 16 kHz: the log-mel's 10 ms
WINDOW = 410               # sphinx's 25.625 ms analysis window
N_FFT = 512
CHUNK_FRAMES = 2000        # frames scored at a time: (2000, 42 x 128) floats = 43 MB


@lru_cache(maxsize=1)
def _ear() -> dict:
    with np.load(ASSETS / "phone_ear.npz") as f:
        phones = [str(p) for p in f["phones"]]
        means = f["means"].astype(np.float64)                    # (42, 3, 128, 13)
        var = f["variances"].astype(np.float64)
        lnw = -f["mixw_q"].astype(np.float64) * float(f["mixw_ln_step"])   # (3, 128, 126)
    if len(phones) != N_EAR:
        raise ValueError(f"phone_ear.npz has {len(phones)} phones, expected {N_EAR}")
    n_phone, n_stream, n_den, dim = means.shape
    iv = 1.0 / var
    const = -0.5 * (np.log(2 * np.pi * var).sum(-1) + (means ** 2 * iv).sum(-1))   # (42, 3, 128)
    # per stream one matmul: [x^2, x, 1] (T, 2 dim + 1) @ (2 dim + 1, 42 * 128) = log N(x)
    quad = np.concatenate([-0.5 * iv, means * iv, const[..., None]], -1)           # (42,3,128,27)
    quad = quad.transpose(1, 3, 0, 2).reshape(n_stream, 2 * dim + 1, n_phone * n_den)
    weights = np.exp(lnw).reshape(n_stream, n_den, n_phone, 3).transpose(0, 2, 1, 3)  # (3,42,128,3)
    # sphinx's front end: mel filters of unit area, orthogonal DCT-II, lifter 22
    mel = lambda hz: 2595.0 * np.log10(1.0 + hz / 700.0)  # noqa: E731
    edges = 700.0 * (10 ** (np.linspace(mel(130.0), mel(6800.0), 27) / 2595.0) - 1.0)
    hz = np.arange(N_FFT // 2 + 1) * 16000.0 / N_FFT
    fb = np.zeros((N_FFT // 2 + 1, 25))
    for i in range(25):
        lo, mid, hi = edges[i:i + 3]
        fb[:, i] = np.clip(np.minimum((hz - lo) / (mid - lo), (hi - hz) / (hi - mid)), 0, None) * 2 / (hi - lo)
    k = np.arange(25)
    dct = np.cos(np.pi * np.arange(dim)[:, None] * (k[None] + 0.5) / 25) * np.sqrt(2.0 / 25)
    dct[0] *= np.sqrt(0.5)
    dct *= (1.0 + 11.0 * np.sin(np.pi * np.arange(dim) / 22.0))[:, None]
    f32 = lambda a: torch.from_numpy(np.ascontiguousarray(a, np.float32))  # noqa: E731
    return {"phones": phones, "quad": f32(quad), "weights": f32(weights), "fb": f32(fb),
            "dct": f32(dct.T), "window": torch.hamming_window(WINDOW, periodic=False)}


def ear_phones() -> list:
    """The N_EAR phone names, in the order of ``phone_evidence``'s rows."""
    return list(_ear()["phones"])


def cepstra(samples16k) -> torch.Tensor:
    """Mono 16 kHz float (S,) in -1..1 -> (S // HOP + 1, 13) cepstra, frame j centred at
    j * 10 ms (the log-mel's framing), the utterance mean removed (sphinx's batch CMN)."""
    ear = _ear()
    x = torch.as_tensor(np.asarray(samples16k, np.float32).reshape(-1)) * 32768.0
    n = len(x) // HOP + 1
    x = torch.cat([x[:1], x[1:] - 0.97 * x[:-1]])
    x = torch.nn.functional.pad(x, (WINDOW // 2, WINDOW // 2 + WINDOW))
    out = torch.empty(n, 13)
    for j0 in range(0, n, 10 * CHUNK_FRAMES):
        j1 = min(n, j0 + 10 * CHUNK_FRAMES)
        frames = x[j0 * HOP:(j1 - 1) * HOP + WINDOW].unfold(0, WINDOW, HOP) * ear["window"]
        power = torch.fft.rfft(frames, N_FFT).abs().square()
        out[j0:j1] = torch.log((power @ ear["fb"]).clamp_min(1e-5)) @ ear["dct"]
    return out - out.mean(0)


@torch.no_grad()
def phone_evidence(samples16k) -> torch.Tensor:
    """Mono 16 kHz float (S,) -> (N_EAR, S // HOP + 1) float32: per frame (10 ms, centred at
    j * 10 ms) and phone, its log posterior under the acoustic model at POSTERIOR_SCALE,
    clipped at -LOG_FLOOR and mapped linearly to -1 (clipped) .. 1 (certain)."""
    ear = _ear()
    c = cepstra(samples16k)
    n = len(c)
    p = torch.cat([c[:1].expand(3, -1), c, c[-1:].expand(3, -1)])
    at = lambda k: p[3 + k:3 + k + n]  # noqa: E731
    streams = (c, at(2) - at(-2), (at(3) - at(-1)) - (at(1) - at(-3)))   # sphinx's 1s_c_d_dd
    out = torch.empty(N_EAR, n)
    one = torch.ones(n, 1)
    for j0 in range(0, n, CHUNK_FRAMES):
        j1 = min(n, j0 + CHUNK_FRAMES)
        score = torch.zeros(N_EAR, j1 - j0, 3)
        for s, f in enumerate(streams):
            f = f[j0:j1]
            ll = (torch.cat([f * f, f, one[j0:j1]], 1) @ ear["quad"][s]).view(j1 - j0, N_EAR, -1)
            ll = ll.transpose(0, 1)                                           # (42, t, 128)
            top = ll.amax(-1, keepdim=True)
            score += torch.bmm(ll.sub_(top).exp_(), ear["weights"][s]).clamp_min_(1e-30).log_() + top
        logp = torch.log_softmax(score.amax(-1) * POSTERIOR_SCALE, 0)         # (42, t)
        out[:, j0:j1] = logp.clamp_min(-LOG_FLOOR)
    return out.mul_(2.0 / LOG_FLOOR).add_(1.0)


def ear_channels(samples16k, n_frames: int, pad_frames: int) -> torch.Tensor:
    """The extra input rows under a padded log-mel of ``n_frames`` frames whose first
    ``pad_frames`` frames are padding: (N_EAR, n_frames), the padding (and any frames past the
    speech) filled with certain silence."""
    out = torch.full((N_EAR, n_frames), -1.0)
    out[ear_phones().index(SILENCE)] = 1.0
    ev = phone_evidence(samples16k)
    n = max(0, min(ev.shape[1], n_frames - pad_frames))
    out[:, pad_frames:pad_frames + n] = ev[:, :n]
    return out
