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
        he, c, p = cfg.heads_expr, cfg.classes, cfg.prior_dim
        hc = he * c
        w = _numpy_weights(self)
        a_oh = F.one_hot(audio_codes, c).float().flatten(1)
        drive = self.inp_audio(torch.cat([audio_feat, a_oh], -1)).numpy().astype(np.float64)
        n = len(drive)
        noise = (rng.gumbel(size=(n, he, c)) if temperature else np.zeros((n, he, c)))
        h, prev = (np.zeros(p), None) if state is None else state
        codes = np.zeros((n, he), np.int64)
        # per frame: the scaled noise and output bias of the logits (argmax(l / t + g) ==
        # argmax(l + t * g))
        base = noise.reshape(n, hc) * (temperature or 1.0) + w["b_out"]
        gru, w_out, emit = w["gru"], w["out"], w["emit"]
        # Buffers, and views into them made once: every step below is one numpy call that
        # writes in place (the loop's cost is the number of calls, ~0.5 us each, not arithmetic)
        xh = np.zeros(2 * p + 1)                 # [GRU input x_t, state h, 1]: one matmul per frame
        xh[-1] = 1.0
        x, hh = xh[:p], xh[p:2 * p]
        hh[:] = h
        g = np.empty(4 * p)
        g_rz, g_n, g_hn = g[:2 * p], g[2 * p:3 * p], g[3 * p:]
        s = np.empty(2 * p)
        s_r, s_z = s[:p], s[p:]
        tmp, cand, leak = np.empty(p), np.empty(p), np.empty(p)
        acc = np.zeros(hc + p)                   # [logits of the heads, next frame's code input]
        logits, nxt = acc[:hc], acc[hc:]
        heads = [acc[k * c:(k + 1) * c] for k in range(he)]
        rows = [emit[k * c:(k + 1) * c] for k in range(he)]
        if prev is not None:
            nxt[:] = emit[np.arange(he) * c + prev, hc:].sum(0)
        for t in range(n):
            if prev is not None:
                np.add(drive[t], nxt, out=x)
            else:
                x[:] = drive[t]
            np.multiply(x, 0.2, out=leak)
            np.maximum(x, leak, out=x)                  # leaky ReLU
            np.dot(gru, xh, out=g)
            np.tanh(g_rz, out=s)                        # sigmoid(a) = (1 + tanh(a / 2)) / 2
            np.multiply(s_r, g_hn, out=tmp)             # g_hn: half the candidate's hidden part
            tmp += g_n                                  # g_n: its input part + that half
            np.tanh(tmp, out=cand)                      # tanh(input + r * hidden)
            np.subtract(hh, cand, out=tmp)
            s_z += 1.0
            tmp *= s_z
            tmp *= 0.5
            np.add(cand, tmp, out=hh)                   # h = cand + z (h - cand)
            np.dot(w_out, hh, out=logits)
            logits += base[t]
            nxt.fill(0.0)
            row = codes[t]
            for k in range(he):
                code = heads[k].argmax()
                row[k] = code
                acc += rows[k][code]                    # later heads' logits, next frame's input
            prev = row
        return codes, (hh.copy(), prev)


def _numpy_weights(prior: CodePrior) -> dict:
    """The prior's weights as float64 numpy arrays laid out for the sampling loop (cached per
    module): "gru" (4P, 2P + 1) maps [x; h; 1] to [r and z pre-activations, halved (so that a
    tanh gives the sigmoid); the candidate's input part plus half its hidden part; half its
    hidden part]; "out" (He*C, P) the output layer; "emit"
    (He*C, He*C + P): per drawn (head, class), its row of the within-frame map and its input
    to the next frame; "b_out" (He*C,)."""
    cache = getattr(prior, "_np_cache", None)
    version = sum(p._version for p in prior.parameters())
    if cache is not None and cache[0] == version:
        return cache[1]
    g = prior.gru
    w_ih, w_hh, b_ih, b_hh, w_out, b_out, prev, within = (v.detach().double().numpy() for v in (
        g.weight_ih_l0, g.weight_hh_l0, g.bias_ih_l0, g.bias_hh_l0, prior.out.weight,
        prior.out.bias, prior.inp_prev.weight, prior.within * prior.mask))
    p = prior.cfg.prior_dim
    gru = np.zeros((4 * p, 2 * p + 1))
    gru[:2 * p, :p], gru[:2 * p, p:2 * p] = w_ih[:2 * p] / 2, w_hh[:2 * p] / 2
    gru[:2 * p, -1] = (b_ih[:2 * p] + b_hh[:2 * p]) / 2
    gru[2 * p:3 * p, :p], gru[2 * p:3 * p, p:2 * p] = w_ih[2 * p:], w_hh[2 * p:] / 2
    gru[2 * p:3 * p, -1] = b_ih[2 * p:] + b_hh[2 * p:] / 2
    gru[3 * p:, p:2 * p], gru[3 * p:, -1] = w_hh[2 * p:] / 2, b_hh[2 * p:] / 2
    w = {"gru": gru, "out": w_out, "b_out": b_out, "emit": np.concatenate([within, prev.T], 1)}
    object.__setattr__(prior, "_np_cache", (version, w))
    return w
