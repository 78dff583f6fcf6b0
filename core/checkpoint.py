"""Checkpoints: one ``.safetensors`` file, weights plus JSON metadata. Never pickle.

Metadata keys (all strings, as safetensors requires):
  format "speechface-checkpoint", version "1", speechface (package version),
  model_config (JSON of ``ModelConfig``), data (JSON description of the training data),
  training (JSON: stage, step, losses, seed, command ...), contents ("model", "model+prior", ...).
Tensor names: ``model.<param>``, ``prior.<param>``; training checkpoints add ``optim.*`` and
``rng.*`` so an interrupted run resumes exactly.
"""
from __future__ import annotations

import json
import os
from pathlib import Path


from . import __version__
from .model import MeshTalkLite, ModelConfig
from .prior import CodePrior

FORMAT = "speechface-checkpoint"
VERSION = "1"


class CheckpointError(ValueError):
    """A file that is not a usable Speechface checkpoint; the message is one line."""


def save_checkpoint(path, tensors: dict, config: ModelConfig, data: dict | None = None,
                    training: dict | None = None, contents: str = "model") -> Path:
    """Write tensors + metadata atomically (temporary file, then rename). Returns the path."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "version": VERSION, "speechface": __version__,
            "model_config": json.dumps(config.to_dict()), "data": json.dumps(data or {}),
            "training": json.dumps(training or {}), "contents": contents}
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), meta)
    os.replace(tmp, path)
    return path


def read_checkpoint(path) -> tuple[dict, dict]:
    """-> (tensors by name, metadata with the JSON fields decoded). Raises CheckpointError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with safe_open(str(path), "pt") as f:
            meta = dict(f.metadata() or {})
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path}: not a safetensors checkpoint ({first})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: a safetensors file, but not a Speechface checkpoint "
                              "(no 'speechface-checkpoint' metadata)")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {meta.get('version')} is not "
                              f"supported by this Speechface (needs {VERSION})")
    try:
        for key in ("model_config", "data", "training"):
            meta[key] = json.loads(meta.get(key, "{}"))
        meta["model_config"] = ModelConfig.from_dict(meta["model_config"])
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: damaged checkpoint metadata ({exc})") from None
    return tensors, meta


def _sub(tensors: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def load_model(path, device="cpu", need_prior: bool = True):
    """-> (MeshTalkLite in eval mode, CodePrior or None, metadata). The expression encoder and
    the phone head are optional in the file (inference checkpoints leave them out)."""
    tensors, meta = read_checkpoint(path)
    cfg = meta["model_config"]
    weights = _sub(tensors, "model.")
    if "decoder.reference" not in weights:
        raise CheckpointError(f"{path}: checkpoint holds no model weights")
    model = MeshTalkLite(cfg, weights["decoder.reference"])
    try:
        missing, unexpected = model.load_state_dict(weights, strict=False)
        missing = [m for m in missing if not m.startswith(("expression.", "phones."))]
        if missing or unexpected:
            raise CheckpointError(f"{path}: weights do not match the model config "
                                  f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        prior = None
        prior_weights = _sub(tensors, "prior.")
        if prior_weights:
            prior = CodePrior(cfg)
            prior.load_state_dict(prior_weights)
            prior.to(device).eval()
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the model config "
                              f"({str(exc).splitlines()[0]})") from None
    ident = tensors.get("identity.template")
    # a fitted identity (python3 -m train fit-identity): the template animate() uses by default
    model.identity_template = ident.float().numpy() if ident is not None else None
    if need_prior and prior is None:
        raise CheckpointError(f"{path}: stage-1 checkpoint without a prior; train stage 2 "
                              "(`python3 -m train fit --stage 2`) before animating with it")
    return model.to(device).eval(), prior, meta
