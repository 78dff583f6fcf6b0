"""Stage-1 losses (the cross-modality loss) and the stage-1 validation numbers, in millimetres.

With B crops, ground truth g (B, T, V*3) mm and the model's three decodings (``MeshTalkLite.
forward`` with ``swap``):
  full        audio i + expression i   -> all vertices, plus the lips and the eyelids (blinks)
                                          each as a term of their own, so small regions count
  swap_expr   audio i + expression j   -> mouth region must still match g_i (audio drives the mouth)
  swap_audio  audio j + expression i   -> upper face must still match g_i (expression drives it)
plus an L1 term on the inner-lip gap and a hinge on it where the truth is closed (full and
swap_expr), which is what makes lips close, optionally the lips' per-frame RMS error (not
squared: ``frame_rms``; full and swap_expr), a binary cross-entropy for the closure head (is
the truth sealed in this frame?), an MSE on the 52 ARKit weights of the full
decoding, and a code-usage term that keeps the heads from collapsing.

Speed: the corpus's ground truth is linear in its ARKit weights, g = s * w @ U (U the face units,
s the identity's scale), and the prediction is linear in the decoder coefficients,
p = c @ W + b. So every weighted squared error sum_v m_v |p_v - g_v|^2 is a quadratic form
z^T G z in z = [c, -s w, 1] with the small Gram matrix G = Y diag(m) Y^T, Y = [W; U; b]
((K+53) x (K+53)). Training never builds the (B, T, V, 3) offsets, which made steps ~5x faster
on a laptop CPU; ``dense_sq_error`` is the plain form (tests check they agree). ``GramErrors``
builds G in blocks, the face units' block once, each region's over its own vertices only.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from core.assets import load_default_head
from core.model import SEAL_POS_WEIGHT
from core.pipeline import lip_gap_vector


def _crop(x: torch.Tensor, ctx: int) -> torch.Tensor:
    return x[:, ctx:x.shape[1] - ctx]


def dense_sq_error(pred: torch.Tensor, gt: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """pred, gt (B, T, V*3) mm; weight (V,) -> mean over frames of the weighted mean squared
    vertex error (mm^2)."""
    err = (pred - gt).unflatten(-1, (-1, 3)).pow(2).sum(-1)              # (B, T, V)
    return (err * weight).sum(-1).mean() / weight.sum()


class GramErrors:
    """Per-frame weighted mean squared vertex errors of decodings, without building offsets.

    units_mm (U, V*3): the rows the ground truth is made of (the face units, or a captured
    corpus's basis); weights (N, V): one vertex weighting per decoding. With P = [W; b] the
    model's basis and bias ((K+1, V*3)), z_p = [c, 1] and z_u = -s w, a frame's error is
    z_p' PP z_p + 2 z_p' PU z_u + z_u' UU z_u with the weighted Gram blocks PP = P D P',
    PU = P D U', UU = U D U' (D the weighting on the coordinates). UU is fixed, so it is made
    once here, each weighting's blocks are summed over only the coordinates it weighs (the
    lips are 385 of 4706 vertices), and a weighting that repeats one shares its blocks. For
    the six weightings of a training batch, forward and backward took 235 ms on one thread
    as one Gram matrix of [W; U; b] over every coordinate per weighting, and 70-80 ms so,
    for the same numbers."""

    def __init__(self, units_mm: torch.Tensor, weights: torch.Tensor):
        self.units_mm = units_mm
        # a weighting that repeats an earlier one shares its blocks (same_as: that row)
        self.same_as = [next(j for j in range(i + 1) if torch.equal(weights[j], w))
                        for i, w in enumerate(weights)]
        self.cols, self.wd, self.uu = [], [], []
        for w in weights:
            wd = w.repeat_interleave(3)
            cols = None if bool((wd > 0).all()) else torch.nonzero(wd > 0)[:, 0]  # weighed coords
            u = units_mm if cols is None else units_mm[:, cols]
            wd = wd if cols is None else wd[cols]
            self.cols.append(cols)
            self.wd.append(wd)
            self.uu.append(((u * wd) @ u.T).double())
        self.norm = weights.sum(1).double()

    def __call__(self, coeffs, target, scale, basis: torch.nn.Linear) -> torch.Tensor:
        """coeffs (N, B, T, K) decoder coefficients of the first N <= len(weights) decodings;
        target (B, T, U) the ground truth's weights of ``units_mm``; scale (B,); basis: the
        model's coefficient -> offset layer. Returns (N, B, T) float64, mm^2."""
        n = len(coeffs)
        p = torch.cat([basis.weight.T, basis.bias[None]])                    # (K+1, V*3)
        zp = torch.cat([coeffs, coeffs.new_ones(coeffs.shape[:-1] + (1,))], -1).double()
        zu = (-scale[:, None, None] * target).double()                      # (B, T, U)
        out, blocks = [], {}
        for i in range(n):
            j = self.same_as[i]
            if j not in blocks:
                cols = self.cols[j]
                pc = p if cols is None else p[:, cols]
                pw = pc * self.wd[j]
                u = self.units_mm if cols is None else self.units_mm[:, cols]
                blocks[j] = ((pw @ pc.T).double(), (pw @ u.T).double())    # (K+1, K+1), (K+1, U)
            pp, pu = blocks[j]
            out.append(((zp[i] @ pp) * zp[i]).sum(-1) + 2 * ((zp[i] @ pu) * zu).sum(-1)
                       + ((zu @ self.uu[j]) * zu).sum(-1))
        return torch.stack(out) / self.norm[:n, None, None]


def gram_sq_errors(coeffs, arkit, scale, basis: torch.nn.Linear, units_mm, weights) -> torch.Tensor:
    """The same as ``dense_sq_error`` for several vertex weightings at once, without offsets:
    coeffs (N, B, T, K), arkit (B, T, U), scale (B,), units_mm (U, V*3), weights (N, V) as
    ``GramErrors``. Returns (N,) mean weighted squared errors (mm^2)."""
    return GramErrors(units_mm, weights)(coeffs, arkit, scale, basis).mean((1, 2)).float()


def frame_rms(per_frame_sq: torch.Tensor) -> torch.Tensor:
    """Mean over frames of the root of each frame's mean squared error: per_frame_sq (..., B, T)
    mm^2 -> (...) mm. Unlike a mean squared error, whose minimiser under uncertainty is the
    mean of the possible shapes (a mouth half open where it is either open or shut), its
    minimiser is their median, which is what a per-frame error such as LVE rewards. The
    0.01 mm^2 under the root keeps its gradient finite where a frame is exact."""
    return (per_frame_sq + 0.01).sqrt().mean((-2, -1)).float()


def gap_vector(pairs: torch.Tensor, n_coords: int) -> torch.Tensor:
    """Linear functional on flattened offsets (V*3,) giving the change of the mean inner-lip
    gap: (upper z - lower z) averaged over the pairs (``core.pipeline.lip_gap_vector``)."""
    return torch.from_numpy(lip_gap_vector(pairs.numpy(), n_coords // 3)).float()


# the vertex weighting of each decoding in ``stage1_losses``, in its order; the last one (the
# swapped decoding's lips) is only scored when the lips' RMS term is on
DECODING_WEIGHTS = ("all", "lips", "eyelids", "mouth", "upper_face", "lips")


@dataclass
class LossGeometry:
    """What the losses need of the head: region masks name -> (V,) weights, the face units
    (52, V*3) mm, and the inner-lip gap functional (V*3,) (``gap_vector``); ``errors``, the
    ``GramErrors`` of DECODING_WEIGHTS, is made from them."""
    masks: dict
    units_mm: torch.Tensor
    gap_vec: torch.Tensor

    def __post_init__(self):
        some = next(iter(self.masks.values()))
        rows = [torch.ones_like(some) if k == "all" else self.masks[k] for k in DECODING_WEIGHTS]
        self.errors = GramErrors(self.units_mm, torch.stack(rows))

    @classmethod
    def of(cls, units_mm: torch.Tensor, device="cpu") -> "LossGeometry":
        head = load_default_head()
        pairs = torch.from_numpy(head.landmarks["lip_pairs"]).long()
        return cls({k: torch.from_numpy(v).to(device) for k, v in head.masks.items()},
                   units_mm.to(device), gap_vector(pairs, units_mm.shape[1]).to(device))


def code_usage_deficit(logits: torch.Tensor) -> torch.Tensor:
    """log C minus the entropy of each head's batch-average class distribution, averaged over
    heads (0 when a head spreads its use evenly over its classes): logits (..., H, C). Keeps
    the categorical heads from collapsing onto a few classes early in training."""
    p = logits.softmax(-1).flatten(0, -3).mean(0)                          # (H, C)
    entropy = -(p * p.clamp_min(1e-9).log()).sum(-1)
    return (torch.log(torch.tensor(float(logits.shape[-1]))) - entropy).mean()


def stage1_losses(model, out: dict, arkit, scale, neutral_gap, geo: LossGeometry, cfg,
                  phone=None, target=None) -> dict:
    """out: ``model(...)`` with swap; arkit (B, T, 52) and scale (B,) the ground truth (see the
    module doc); neutral_gap (B,) mm: each identity's inner-lip gap at rest; phone (B, T)
    phone indices, used when the model has a phone head and ``cfg.phone_weight`` > 0;
    target (B, T, Kt): the weights of ``geo.units_mm`` that give the true offsets (the ARKit
    weights when None; a captured corpus's dense coefficients)."""
    units_mm, gap_vec = geo.units_mm, geo.gap_vec
    ctx = model.decoder.ctx
    ark = _crop(arkit, ctx)
    tw = ark if target is None else _crop(target, ctx)
    full, swap_e, swap_a = (out[n]["coeffs"] for n in ("full", "swap_expr", "swap_audio"))
    decodings = [full, full, full, swap_e, swap_a]          # as DECODING_WEIGHTS weighs them
    if cfg.lip_rms_weight > 0:          # the lips of the swapped decoding too (row 5)
        decodings.append(swap_e)
    per_frame = geo.errors(torch.stack(decodings), tw, scale, model.basis)  # (N, B, T') mm^2
    sq = per_frame[:5].mean((1, 2)).float()
    gap_gt = scale[:, None] * (tw @ (units_mm @ gap_vec))                 # (B, T') mm
    w_gap = model.basis.weight.T @ gap_vec                                 # (K,)
    b_gap = model.basis.bias @ gap_vec
    closed = (neutral_gap[:, None] + gap_gt) < cfg.closed_mm              # truly closed frames
    gap = closure = 0.0
    for n in ("full", "swap_expr"):
        pred = out[n]["coeffs"] @ w_gap + b_gap
        gap = gap + (pred - gap_gt).abs().mean()
        # hinge: where the truth is closed, any opening above 0.3 mm costs (a lip seal is binary
        # to the eye; the plain L1 alone leaves closures a millimetre or two open)
        if closed.any():
            closure = closure + torch.relu(neutral_gap[:, None] + pred - 0.3)[closed].mean()
    losses = {"full": sq[0], "lips": sq[1], "eyelids": sq[2], "mouth_swap": sq[3],
              "upper_swap": sq[4], "gap": gap, "closure": torch.as_tensor(closure),
              "seal": torch.nn.functional.binary_cross_entropy_with_logits(
                  out["closure_logit"], closed.float(),
                  pos_weight=torch.tensor(SEAL_POS_WEIGHT)),
              "arkit": (out["full"]["arkit"] - ark).pow(2).mean(),
              "code_usage": code_usage_deficit(out["a_logits"]) + code_usage_deficit(out["e_logits"])}
    if cfg.lip_rms_weight > 0:
        losses["lip_rms"] = frame_rms(per_frame[[1, 5]]).mean()
    if "phone_logits" in out and phone is not None:
        losses["phone"] = torch.nn.functional.cross_entropy(
            out["phone_logits"].flatten(0, 1), _crop(phone, ctx).flatten())
    losses["total"] = (losses["full"] + cfg.lip_weight * losses["lips"]
                       + cfg.eyelid_weight * losses["eyelids"] + losses["mouth_swap"]
                       + losses["upper_swap"] + cfg.gap_weight * losses["gap"]
                       + cfg.closure_weight * losses["closure"] + cfg.seal_weight * losses["seal"]
                       + cfg.arkit_weight * losses["arkit"]
                       + cfg.usage_weight * losses["code_usage"]
                       + cfg.phone_weight * losses.get("phone", 0.0)
                       + cfg.lip_rms_weight * losses.get("lip_rms", 0.0))
    return losses


def batch_losses(model, b, targets, geo: LossGeometry, cfg, device="cpu") -> dict:
    """One training batch (``TrainingSet.batch``) through ``model`` (the module, or its DDP
    wrapper) with the cross-modality swap -> ``stage1_losses``."""
    net = model.module if hasattr(model, "module") else model
    expr_in = targets.columns(b.target, b.scale, net.expression.index.cpu()).to(device)
    out = model(b.mel.to(device), b.rel.to(device), expr_in, b.template.to(device), tau=cfg.tau,
                swap=torch.roll(torch.arange(len(b.mel)), 1))
    return stage1_losses(net, out, b.arkit.to(device), b.scale.to(device),
                         b.neutral_gap.to(device), geo, cfg, b.phone.to(device),
                         b.target.to(device))


@torch.no_grad()
def validate_stage1(model, val_set, cfg, geo: LossGeometry, device) -> dict:
    """Inference-like numbers on fixed validation crops (argmax codes, no Gumbel noise):
    val_lip_mm: mean over frames of the max lip-vertex error with the sequence's own expression;
    val_lip_swap_mm: the same with another crop's expression (what inference faces, since the
    expression then comes from the prior); val_gap*_mm: mean |inner-lip gap error|;
    val_eyelid_mm: mean eyelid-vertex error with the own expression (blinks)."""
    model.eval()
    gen = torch.Generator().manual_seed(12345)
    enc = model.audio
    b = val_set.batch(gen, cfg.val_crops, cfg.frames, enc.past, enc.future)
    gt_full = val_set.targets.dense(b.target, b.scale).to(device)
    audio_feat = model.audio_features(b.mel.to(device), b.rel.to(device))
    expr_feat = model.expression(gt_full)
    tfeat = model.decoder.template_features(b.template.to(device))
    lips, lids = geo.masks["lips"] > 0.5, geo.masks["eyelids"] > 0.5
    ctx = model.decoder.ctx
    gt = _crop(gt_full, ctx)
    neutral = b.neutral_gap.to(device)[:, None]
    gap_gt = gt @ geo.gap_vec
    closed = (neutral + gap_gt) < cfg.closed_mm
    res = {}
    for name, e in (("", expr_feat), ("_swap", torch.roll(expr_feat, 1, 0))):
        a_log, e_log = model.logits(audio_feat, e)
        codes = torch.cat([a_log.argmax(-1), e_log.argmax(-1)], -1)
        one_hot = torch.nn.functional.one_hot(codes, model.cfg.classes).float()
        _, off, _ = model.decode(one_hot, tfeat)
        err = (off - gt).unflatten(-1, (-1, 3)).norm(dim=-1)            # (B, T, V) mm
        gap = off @ geo.gap_vec
        res[f"val_lip{name}_mm"] = round(err[..., lips].amax(-1).mean().item(), 4)
        res[f"val_gap{name}_mm"] = round((gap - gap_gt).abs().mean().item(), 4)
        res[f"val_closed_gap{name}_mm"] = round((neutral + gap)[closed].mean().item(), 4)
        if not name:
            decoded = _crop(audio_feat, ctx)                           # the decoded frames
            pred_closed = model.closure(decoded)[..., 0] > 0
            res["val_seal_recall"] = round(pred_closed[closed].float().mean().item(), 3)
            res["val_seal_precision"] = round(closed[pred_closed].float().mean().item(), 3)
            if model.phones is not None:
                hit = model.phones(decoded).argmax(-1)
                res["val_phone_acc"] = round((hit == _crop(b.phone.to(device), ctx)).float()
                                             .mean().item(), 3)
            res["val_eyelid_mm"] = round(err[..., lids].mean().item(), 4)
            res["expr_combos"] = len(torch.unique(e_log.argmax(-1).flatten(0, 1), dim=0))
            res["audio_classes"] = round(sum(len(torch.unique(a_log.argmax(-1)[..., h]))
                                             for h in range(a_log.shape[-2])) / a_log.shape[-2], 1)
    return res
