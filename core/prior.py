"""Stage 2: an autoregressive prior over the expression codes, conditioned on the audio.

p(e_t | e_<t, audio) = prod_h p(e_t,h | e_t,<h, e_<t, audio features_t, audio codes_t)

- causal in time: a GRU whose input at frame t is the audio features and audio-head codes of
  frame t and the expression codes of frame t-1;
- masked across heads: head h of frame t also sees the heads g < h already drawn for frame t
  (a block-triangular linear map, MADE style).

Why this is cheap: MeshTalk's sampler re-runs its whole context network for each of T x H steps
over a growing history. Here the audio part of every frame's input is computed for the whole
utterance at once, the recurrence carries a fixed-size state (so cost is linear in T and long
audio is sampled window by window with the state carried over), and inside a frame each further
head costs one argmax and one row addition. Sampling runs in numpy with the Gumbel noise drawn
up front from the caller's seeded generator, so a seed gives the same face every time. Only the
expression heads are sampled: the audio heads (the mouth) come from the audio encoder directly.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .model import ModelConfig


class CodePrior(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        ha, he, c, p = cfg.heads_audio, cfg.heads_expr, cfg.classes, cfg.prior_dim
        self.inp_audio = nn.Linear(cfg.audio_dim + ha * c, p)
        self.inp_prev = nn.Linear(he * c, p, bias=False)
        self.gru = nn.GRU(p, p, batch_first=True)
        self.out = nn.Linear(p, he * c)
        self.within = nn.Parameter(torch.zeros(he * c, he * c))   # rows: (head g, class) inputs
        block = torch.triu(torch.ones(he, he), diagonal=1)          # g < h
        self.register_buffer("mask", block.repeat_interleave(c, 0).repeat_interleave(c, 1))

    def forward(self, audio_feat, audio_codes, expr_codes, prev_codes=None, state=None):
        """Teacher-forced logits.

        audio_feat (B, T, audio_dim); audio_codes (B, T, Ha) long; expr_codes (B, T, He) long;
        prev_codes: (B, He) codes of the frame before the crop (rows of -1: start of an
        utterance), or None (all crops start an utterance);
        state: GRU state (1, B, P) or None. Returns (logits (B, T, He, C), state)."""
        c = self.cfg.classes
        a_oh = F.one_hot(audio_codes, c).float().flatten(2)
        e_oh = F.one_hot(expr_codes, c).float().flatten(2)
        if prev_codes is None:
            first = torch.zeros_like(e_oh[:, :1])
        else:
            known = (prev_codes >= 0).float().unsqueeze(-1)
            first = (F.one_hot(prev_codes.clamp(min=0), c).float() * known).flatten(1)[:, None]
        prev = torch.cat([first, e_oh[:, :-1]], 1)
        x = F.leaky_relu(self.inp_audio(torch.cat([audio_feat, a_oh], -1)) + self.inp_prev(prev), 0.2)
        s, state = self.gru(x, state)
        logits = self.out(s) + e_oh @ (self.within * self.mask)
        return logits.unflatten(-1, (self.cfg.heads_expr, c)), state

    @torch.no_grad()
    def sample(self, audio_feat, audio_codes, rng: np.random.Generator,
               temperature: float | None = 1.0, state=None):
        """Draw expression codes for one utterance window.

        audio_feat (T, audio_dim) tensor; audio_codes (T, Ha) long tensor; rng: numpy generator
        (the seed); temperature None -> argmax; state: what the previous window returned.
        Returns (codes (T, He) int64 numpy, state)."""
        cfg = self.cfg
        he, c = cfg.heads_expr, cfg.classes
        w = _numpy_weights(self)
        a_oh = F.one_hot(audio_codes, c).float().flatten(1)
        drive = self.inp_audio(torch.cat([audio_feat, a_oh], -1)).numpy().astype(np.float64)
        n = len(drive)
        noise = (rng.gumbel(size=(n, he, c)) if temperature else np.zeros((n, he, c)))
        h, prev = (np.zeros(cfg.prior_dim), None) if state is None else state
        codes = np.zeros((n, he), np.int64)
        cols = np.arange(he) * c
        p = cfg.prior_dim
        w_prev_rows, gru, bias = w["prev_rows"], w["gru"], w["gru_bias"]
        w_out, within = w["out"], w["within"]
        # scaled noise and logits: argmax(l / t + g) == argmax(l + t * g)
        base = noise.reshape(n, he * c) * (temperature or 1.0) + w["b_out"]
        xh = np.zeros(2 * p)             # [GRU input x_t, state h]: one matmul per frame
        xh[p:] = h
        hh = xh[p:]
        for t in range(n):
            x = drive[t] + w_prev_rows[cols + prev].sum(0) if prev is not None else drive[t]
            np.maximum(x, 0.2 * x, out=xh[:p])
            g = gru @ xh + bias
            rz = np.tanh(g[:2 * p]) * 0.5 + 0.5                     # sigmoid(a) = tanh(a/2)/2 + 1/2
            cand = np.tanh(g[2 * p:3 * p] + rz[:p] * g[3 * p:])
            hh -= (1.0 - rz[p:]) * (hh - cand)                      # h = cand + z (h - cand)
            logits = w_out @ hh + base[t]
            row = codes[t]
            for k in range(he):
                code = logits[k * c:(k + 1) * c].argmax()
                row[k] = code
                if k + 1 < he:
                    logits += within[k * c + code]
            prev = row
        return codes, (hh.copy(), prev)


def _numpy_weights(prior: CodePrior) -> dict:
    """The prior's weights as float64 numpy arrays for the sampling loop (cached per module)."""
    cache = getattr(prior, "_np_cache", None)
    version = sum(p._version for p in prior.parameters())
    if cache is not None and cache[0] == version:
        return cache[1]
    g = prior.gru
    w = {k: v.detach().double().numpy() for k, v in {
        "prev": prior.inp_prev.weight, "w_ih": g.weight_ih_l0, "w_hh": g.weight_hh_l0,
        "b_ih": g.bias_ih_l0, "b_hh": g.bias_hh_l0, "out": prior.out.weight,
        "b_out": prior.out.bias, "within": prior.within * prior.mask}.items()}
    p = prior.cfg.prior_dim
    # the GRU as one (4P, 2P) map of [x; h]: rows r, z (input + hidden, halved so that a tanh
    # gives the sigmoid), then the candidate's input part, then its hidden part
    gru = np.zeros((4 * p, 2 * p))
    gru[:2 * p, :p], gru[:2 * p, p:] = w["w_ih"][:2 * p] / 2, w["w_hh"][:2 * p] / 2
    gru[2 * p:3 * p, :p], gru[3 * p:, p:] = w["w_ih"][2 * p:], w["w_hh"][2 * p:]
    w["gru"] = gru
    w["gru_bias"] = np.concatenate([(w["b_ih"][:2 * p] + w["b_hh"][:2 * p]) / 2,
                                    w["b_ih"][2 * p:], w["b_hh"][2 * p:]])
    w["prev_rows"] = np.ascontiguousarray(w["prev"].T)                # (He*C, P)
    object.__setattr__(prior, "_np_cache", (version, w))
    return w
