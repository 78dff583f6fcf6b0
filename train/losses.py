"""Stage-1 losses (the cross-modality loss) and the stage-1 validation numbers, in millimetres.

With B crops, ground truth g (B, T, V*3) mm and the model's three decodings (``MeshTalkLite.
forward`` with ``swap``):
  full        audio i + expression i   -> all vertices (lips weighted up, eyelids included)
  swap_expr   audio i + expression j   -> mouth region must still match g_i (audio drives the mouth)
  swap_audio  audio j + expression i   -> upper face must still match g_i (expression drives it)
plus an L1 term on the inner-lip gap (full and swap_expr), which is what makes lips close,
and an MSE on the 52 ARKit weights of the full decoding.
"""
from __future__ import annotations

import torch

from core.model import mel_window


def _crop(x: torch.Tensor, ctx: int) -> torch.Tensor:
    return x[:, ctx:x.shape[1] - ctx]


def weighted_sq_error(pred: torch.Tensor, gt: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """pred, gt (B, T, V*3) mm; weight (V,) -> mean over frames of the weighted mean squared
    vertex error (mm^2)."""
    err = (pred - gt).unflatten(-1, (-1, 3)).pow(2).sum(-1)              # (B, T, V)
    return (err * weight).sum(-1).mean() / weight.sum()


def lip_gap_mm(offsets: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """Change of the mean inner-lip gap (mm) per frame: offsets (B, T, V*3) mm -> (B, T)."""
    z = offsets.unflatten(-1, (-1, 3))[..., 2]
    return (z[..., pairs[:, 0]] - z[..., pairs[:, 1]]).mean(-1)


def stage1_losses(out: dict, gt_mm, gt_arkit, masks: dict, pairs, ctx: int, cfg) -> dict:
    gt, ark = _crop(gt_mm, ctx), _crop(gt_arkit, ctx)
    w_full = 1.0 + cfg.lip_weight * masks["lips"]
    gap_gt = lip_gap_mm(gt, pairs)
    losses = {
        "full": weighted_sq_error(out["full"]["offsets"], gt, w_full),
        "mouth_swap": weighted_sq_error(out["swap_expr"]["offsets"], gt, masks["mouth"]),
        "upper_swap": weighted_sq_error(out["swap_audio"]["offsets"], gt, masks["upper_face"]),
        "gap": (lip_gap_mm(out["full"]["offsets"], pairs) - gap_gt).abs().mean()
        + (lip_gap_mm(out["swap_expr"]["offsets"], pairs) - gap_gt).abs().mean(),
        "arkit": (out["full"]["arkit"] - ark).pow(2).mean(),
    }
    losses["total"] = (losses["full"] + losses["mouth_swap"] + losses["upper_swap"]
                       + cfg.gap_weight * losses["gap"] + cfg.arkit_weight * losses["arkit"])
    return losses


@torch.no_grad()
def validate_stage1(model, val_set, cfg, masks, pairs, device) -> dict:
    """Inference-like numbers on fixed validation crops (argmax codes, no Gumbel noise):
    val_lip_mm: mean over frames of the max lip-vertex error with the sequence's own expression;
    val_lip_swap_mm: the same with another crop's expression (what inference faces, since the
    expression then comes from the prior); val_gap_mm: mean |inner-lip gap error|."""
    model.eval()
    gen = torch.Generator().manual_seed(12345)
    enc = model.audio
    b = val_set.batch(gen, cfg.val_crops, cfg.frames, enc.past, enc.future)
    mel, rel, gt_full = b.mel.to(device), b.rel.to(device), b.offsets_mm.to(device)
    audio_feat = model.audio_features(mel, rel)
    expr_feat = model.expression(gt_full)
    tfeat = model.decoder.template_features(b.template.to(device))
    lips = masks["lips"] > 0.5
    gt = _crop(gt_full, model.decoder.ctx)
    res = {}
    for name, e in (("", expr_feat), ("_swap", torch.roll(expr_feat, 1, 0))):
        a_log, e_log = model.logits(audio_feat, e)
        codes = torch.cat([a_log.argmax(-1), e_log.argmax(-1)], -1)
        one_hot = torch.nn.functional.one_hot(codes, model.cfg.classes).float()
        _, off, _ = model.decode(one_hot, tfeat)
        err = (off - gt).unflatten(-1, (-1, 3)).norm(dim=-1)            # (B, T, V) mm
        res[f"val_lip{name}_mm"] = round(err[..., lips].amax(-1).mean().item(), 4)
        res[f"val_gap{name}_mm"] = round((lip_gap_mm(off, pairs) - lip_gap_mm(gt, pairs))
                                         .abs().mean().item(), 4)
    res["val_mve_mm"] = None
    return {k: v for k, v in res.items() if v is not None}


__all__ = ["stage1_losses", "validate_stage1", "lip_gap_mm", "weighted_sq_error", "mel_window"]
