"""Tuning the closure head to one character's takes: where its lips seal.

The seal (``core.pipeline.seal_lips``) shuts the lips where the closure head (a small MLP on the
frozen audio features, ``MeshTalkLite.closure``) hears a closure. A character's takes say
where its lips really are closed: the inner-lip gap below ``core.identity.CLOSED_MM`` (1.5 mm,
as the bilabial metric). The head is tuned on those frames with the weighted cross-entropy it was
trained with (``SEAL_POS_WEIGHT``), hearing each take as inference does (the plain audio and
the ``SEAL_WARPS`` hearings, highest logit per frame), and held near its default logits
(``CLOSURE_KEEP``) so that a few minutes of takes do not overfit it.

Measured with session 9's default model by 4-fold cross-validation (each quarter of the takes
held out in turn, the basis tuned for 1.5 min on the rest first), as default -> basis tuned ->
basis and closure head tuned:

| takes of man_long, mouth 1.5x | LVE mm | closure | false closure | gap error mm |
|---|---|---|---|---|
| 2.2 min, many voices (the test's) | 3.79 -> 3.04 -> 3.01 | 152 -> 155 -> 152 of 186 | 4.6 -> 5.1 -> 3.6 % | 2.52 -> 1.94 -> 1.89 |
| 2.2 min, one voice never trained on (flite rms) | 4.52 -> 3.80 -> 3.72 | 221 -> 223 -> 219 of 260 | 8.3 -> 8.2 -> 6.4 % | 2.98 -> 2.10 -> 1.99 |

(closure: the takes' closed-lip frames the model closes; false closure: the frames they hold
open, gap > 3 mm, that it closes). The head stops a quarter of the wrong closures and keeps
the right ones but for 1-4 frames; 300 steps take about 2 s on 2 cores. Not kept: closed
frames weighted 2x or 4x more (closure 152 and 151, false closures 3.9 and 4.5 %), and no logit
term (``CLOSURE_KEEP`` 0: the same within a frame). Most frames the fit still misses are a
closure's first or last (25 of 31 on the many-voice takes), where the head is sure there is
none (median probability 0.04); holding the seal one frame longer catches 8 of them but
shuts 55 more open frames, and the closed frames' F1 on the training takes rejects it.
"""
from __future__ import annotations

import numpy as np
import torch

CLOSURE_STEPS = 300     # Adam steps over all training takes at once
CLOSURE_LR = 1e-3
CLOSURE_KEEP = 0.01     # cost of the squared change of each frame's logit from the default's
CLOSURE_GAIN = 1.0      # closed frames weigh this times SEAL_POS_WEIGHT as much as open ones
MIN_CLOSED = 10         # fewer closed frames than this in the takes: the head is left as it is
WINDOW = 600            # model frames per audio-encoder pass (memory bounded on long takes)


def closure_features(net, mel: torch.Tensor, n_frames: int) -> torch.Tensor:
    """The audio features the closure head reads for model frames 0..n_frames-1, for every
    hearing inference uses. mel (1, n_mels, M): the padded, normalised log-mel of a take (as
    ``core.pipeline.animate`` makes it). -> (1 + len(SEAL_WARPS), n_frames, audio_dim)."""
    from .model import mel_window
    from .pipeline import seal_hearings

    warped = seal_hearings(mel)
    hearings = mel if warped is None else torch.cat([mel, warped])
    out = []
    with torch.no_grad():
        for k0 in range(0, n_frames, WINDOW):
            n = min(WINDOW, n_frames - k0)
            start, length, rel = mel_window(k0, n, net.cfg.fps, net.audio.past, net.audio.future)
            out.append(net.audio_features(hearings[:, :, start:start + length], rel))
    return torch.cat(out, 1)


def tune_closure(net, features: list, closed: list, steps: int = CLOSURE_STEPS,
                 lr: float = CLOSURE_LR, keep: float = CLOSURE_KEEP, gain: float = CLOSURE_GAIN,
                 cancel=None) -> dict:
    """Tune ``net.closure`` in place. features: per take (W, T, audio_dim) from
    ``closure_features``; closed: per take (T,) bool, the take's lips closed at that model
    frame. cancel() -> True stops early. -> what was done, for the fit's report."""
    from .model import SEAL_POS_WEIGHT

    n_closed = int(sum(np.count_nonzero(c) for c in closed))
    n_frames = int(sum(len(c) for c in closed))
    info = {"closed_frames": n_closed, "frames": n_frames, "steps": 0}
    if n_closed < MIN_CLOSED or n_closed == n_frames:
        info["note"] = (f"not tuned: the takes have {n_closed} closed-lip frames of {n_frames} "
                        f"(needs at least {MIN_CLOSED}, and open ones)")
        return info
    feats = torch.cat(features, 1)                           # (W, sum T, D)
    target = torch.from_numpy(np.concatenate(closed).astype(np.float32))
    head = net.closure
    with torch.no_grad():
        before = head(feats)[..., 0].amax(0)
    params = list(head.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=lr)
    weight = torch.tensor(float(SEAL_POS_WEIGHT * gain))
    try:
        for _ in range(steps):
            if cancel is not None and cancel():
                break
            logit = head(feats)[..., 0].amax(0)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logit, target, pos_weight=weight)
            loss = loss + keep * ((logit - before) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            info["steps"] += 1
    finally:
        for p in params:
            p.requires_grad_(False)
    return info
