"""Inference: speech -> ``Animation`` on a template. ``animate()`` is what the add-on and
``python3 -m core animate`` call.

Long audio is processed window by window. Every temporal layer of the model has a known, finite
context ("valid" convolutions), and each window is fed exactly the context it needs, so the
result equals a single pass over the whole file: there is no seam to hide. The prior's state is
carried from window to window, so the upper face flows on as well. Memory is bounded by the
window size plus the (T, K) coefficients; the (T, V, 3) offsets are only produced on request,
a few frames at a time (``Animation.offsets``, ``write_npz``).
"""
from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from .arkit import ARKIT_NAMES
from .assets import ASSETS, load_default_head
from .audio import MODEL_RATE, load_speech, log_mel, normalize_utterance, warp_mel
from .checkpoint import load_model
from .model import MM, PAD_FRAMES, PAD_SECONDS, SEAL_POS_WEIGHT, mel_window
from .phone_ear import ear_channels

DEFAULT_CHECKPOINT = ASSETS / "default_model.safetensors"
SILENCE_DBFS = -60.0          # a file whose loudest 25 ms stays below this is treated as silence
SEAL_GAP_MM = 0.2             # inner-lip gap a predicted lip seal closes to (as the rig does)
# Chosen on the corpus's validation split (never the test split): of 72 settings, this one
# raised bilabial closure from 72.9 % (no seal) to 80.9 % for +0.03 mm LVE (1.87 -> 1.90).
SEAL_PROB = (0.2, 0.3)        # seal strength ramps from 0 to 1 over this closure probability
SEAL_MAX_GAP_MM = (5.0, 7.0)  # ... and from 1 to 0 over this predicted gap
SEAL_MAX_GAP_REL = (0.5, 0.7)  # ... or over these fractions of the clip's 95th-percentile gap,
                               # whichever is wider (a character whose mouth opens wider)
SEAL_SURE_PROB = (0.3, 0.5)     # ... a head this sure of a seal (ramping in) may shut a gap up to
SEAL_SURE_GAP_MM = (10.0, 12.0)  # these instead (validation: bilabial closure 89.2 -> 90.2 %,
                                 # lip error +0.008 mm, pauses unchanged; on real speech the
                                 # decoder opens wider before a bilabial than on the corpus voices)
SEAL_WARPS = (0.9, 1.1)       # the closure head also hears the speech with its formants moved
                              # by these factors, and the most confident hearing counts
                              # (validation: bilabial closure 85.4 -> 89.2 %, lip error +0.02 mm)


def lip_gap_vector(pairs: np.ndarray, n_vertices: int) -> np.ndarray:
    """(V*3,) functional on flattened offsets: the change of the mean inner-lip gap (upper z -
    lower z over the pairs) that the offsets cause."""
    g = np.zeros(n_vertices * 3)
    np.add.at(g, np.asarray(pairs)[:, 0] * 3 + 2, 1.0 / len(pairs))
    np.add.at(g, np.asarray(pairs)[:, 1] * 3 + 2, -1.0 / len(pairs))
    return g


def seal_direction(basis_mm: np.ndarray, pairs: np.ndarray, n_vertices: int):
    """What ``seal_lips`` needs from the decoder's basis: (w (K,) mm of inner-lip gap per unit of
    each coefficient, u (K,) the least-squares smallest change of the face, over all vertices,
    that opens the gap by 1 mm, g (V*3,) the gap functional). basis_mm (K, V*3) millimetres."""
    g = lip_gap_vector(pairs, n_vertices)
    b = torch.from_numpy(np.ascontiguousarray(basis_mm, np.float32))
    w = (b @ torch.from_numpy(g.astype(np.float32))).double().numpy()      # gap per coefficient
    gram = (b @ b.T).double().numpy()
    u = np.linalg.solve(gram + 1e-6 * np.trace(gram) / len(gram) * np.eye(len(gram)), w)
    return w, u / (w @ u), g


def _model_seal_direction(net, pairs: np.ndarray, n_vertices: int):
    """``seal_direction`` of a model's basis, computed once per set of weights (7 ms each time
    otherwise, a tenth of a minute-long ``animate``)."""
    weight = net.basis.weight
    key = (weight.data_ptr(), weight._version, pairs.tobytes(), n_vertices)
    cached = getattr(net, "_seal_cache", None)
    if cached is None or cached[0] != key:
        cached = (key, seal_direction(weight.detach().T.numpy(), pairs, n_vertices))
        object.__setattr__(net, "_seal_cache", cached)
    return cached[1]


def seal_lips(coeffs: np.ndarray, seal_prob: np.ndarray, basis_mm: np.ndarray, bias_mm: np.ndarray,
              template: np.ndarray, pairs: np.ndarray, direction=None) -> np.ndarray:
    """Close the lips where the model says they are sealed.

    coeffs (N, K); seal_prob (N,) from the closure head; basis_mm (K, V*3), bias_mm (V*3,)
    millimetres; template (V, 3) m; direction: ``seal_direction(basis_mm, pairs, V)`` if
    already known. Where the probability is high, the inner-lip gap is brought
    down to SEAL_GAP_MM by the smallest change of the face (least squares over all vertices)
    that the decoder's basis can make, blended in between probabilities SEAL_PROB, and only
    where the predicted gap is already small (full below 5 mm, none above 7 mm,
    SEAL_MAX_GAP_MM, or below 0.5 and above 0.7 of the clip's 95th-percentile gap when that is
    wider, SEAL_MAX_GAP_REL: a fitted character whose mouth opens wider; where the head is sure,
    probability 0.5 and up, SEAL_SURE_*, up to 10-12 mm), so a wrong guess of the head cannot
    shut an open vowel. Returns the new coefficients (N, K)."""
    w, u, g = direction or seal_direction(basis_mm, pairs, len(template))
    neutral = 1000.0 * float(g @ template.reshape(-1))                   # the gap at rest, mm
    gap = neutral + coeffs.astype(np.float64) @ w + float(bias_mm @ g)
    ref = float(np.percentile(gap, 95)) if len(gap) else 0.0
    lo, hi = (max(a, r * ref) for a, r in zip(SEAL_MAX_GAP_MM, SEAL_MAX_GAP_REL))
    if SEAL_SURE_GAP_MM:                                                  # per frame from here
        sure = np.clip((seal_prob - SEAL_SURE_PROB[0]) / (SEAL_SURE_PROB[1] - SEAL_SURE_PROB[0]), 0, 1)
        lo = lo + sure * max(0.0, SEAL_SURE_GAP_MM[0] - lo)
        hi = hi + sure * max(0.0, SEAL_SURE_GAP_MM[1] - hi)
    strength = (np.clip((seal_prob - SEAL_PROB[0]) / (SEAL_PROB[1] - SEAL_PROB[0]), 0.0, 1.0)
                * np.clip((hi - gap) / np.maximum(hi - lo, 1e-6), 0, 1))
    delta = strength * np.maximum(0.0, gap - SEAL_GAP_MM)
    return (coeffs - delta[:, None] * u[None]).astype(np.float32)


class Cancelled(RuntimeError):
    """Raised by ``animate`` when its ``cancel`` callable returns True."""


@dataclass
class Animation:
    """Per-frame offsets on ``template``, stored low-rank:
    offsets[t] = coeffs[t] @ basis + bias, reshaped to (V, 3), metres.

    fps: frames per second; frame k shows time k / fps. template (V, 3) float32 m; faces (F, 4)
    int32; lip_pairs (K, 2) int32 inner-lip (upper, lower) vertex pairs; coeffs (T, R) float32;
    basis (R, V*3) float32 m; bias (V*3,) float32 m; arkit_weights (T, 52) float32 in 0..1."""
    fps: float
    template: np.ndarray
    faces: np.ndarray
    lip_pairs: np.ndarray
    coeffs: np.ndarray
    basis: np.ndarray
    bias: np.ndarray
    arkit_weights: np.ndarray
    duration_s: float

    @property
    def n_frames(self) -> int:
        return len(self.coeffs)

    def offsets(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Offsets (n, V, 3) float32 metres of frames start..stop-1 (all frames by default:
        mind the size, 10 minutes at 30 fps on the default head is ~1 GB)."""
        c = torch.from_numpy(np.ascontiguousarray(self.coeffs[start:stop], np.float32))
        out = torch.addmm(torch.from_numpy(self.bias), c, torch.from_numpy(self.basis))
        return out.numpy().reshape(len(c), -1, 3)

    def iter_offsets(self, chunk: int = 256):
        """Yield (start, offsets (n, V, 3)) blocks of at most ``chunk`` frames."""
        for s in range(0, self.n_frames, chunk):
            yield s, self.offsets(s, s + chunk)


@lru_cache(maxsize=4)
def _cached_model(path: str, mtime: float):
    return load_model(path)


def get_model(checkpoint=None):
    """(model, prior, metadata) for a checkpoint path, the shipped default model if None."""
    path = Path(checkpoint) if checkpoint else DEFAULT_CHECKPOINT
    if not path.is_file():
        from .checkpoint import CheckpointError
        raise CheckpointError(f"{path}: no such checkpoint" + (
            "; the default model is missing from core/assets, see README 'Training'"
            if checkpoint is None else ""))
    return _cached_model(str(path.resolve()), path.stat().st_mtime)


def is_silent(samples16k: np.ndarray) -> bool:
    """True when no 25 ms block reaches SILENCE_DBFS (RMS re full scale)."""
    n = len(samples16k) // 400 * 400
    if n == 0:
        return float(np.sqrt(np.mean(samples16k ** 2))) < 10 ** (SILENCE_DBFS / 20)
    rms = np.sqrt(np.mean(samples16k[:n].reshape(-1, 400).astype(np.float64) ** 2, axis=1))
    return float(rms.max()) < 10 ** (SILENCE_DBFS / 20)


def _resample_frames(x: np.ndarray, fps_in: float, fps_out: float, n_out: int) -> np.ndarray:
    """Linear interpolation of per-frame values (N, D) from fps_in to n_out frames at fps_out."""
    pos = np.arange(n_out) * (fps_in / fps_out)
    i0 = np.clip(np.floor(pos).astype(np.int64), 0, len(x) - 1)
    i1 = np.clip(i0 + 1, 0, len(x) - 1)
    w = (pos - i0)[:, None].astype(np.float32)
    return (x[i0] * (1 - w) + x[i1] * w).astype(np.float32)


@torch.no_grad()
def animate(samples, sample_rate: int | None = None, fps: float = 30.0, template=None,
            model=None, seed: int = 0, progress=None, cancel=None,
            temperature: float | None = 1.0, window_s: float = 20.0, seal: bool = True) -> Animation:
    """Speech -> Animation.

    samples: a path (any file soundfile reads) or an array (S,) / (S, channels) with
    ``sample_rate``; fps: output frame rate; template: (V, 3) metres on the default head's
    topology (an identity); if None, the checkpoint's fitted identity, else the default head; model: (model, prior, meta) from
    ``get_model``, the shipped default if None; seed: draws the upper face (blinks, brows);
    the mouth's codes do not depend on it (the lips move by < 1 mm between seeds);
    temperature: prior sampling temperature (None: argmax);
    seal: close the lips where the closure head predicts a seal (``seal_lips``);
    progress(fraction 0..1) is called after each window; cancel() -> True stops with
    ``Cancelled``. T = ceil(duration * fps) frames."""
    if not (isinstance(fps, (int, float)) and 1 <= fps <= 1000):
        raise ValueError(f"fps must be between 1 and 1000, got {fps!r}")
    head = load_default_head()
    net, prior, _ = model or get_model()
    if template is None:               # a fitted identity's checkpoint carries its own face
        template = getattr(net, "identity_template", None)
    template = head.vertices if template is None else np.asarray(template, np.float32)
    if template.shape != head.vertices.shape:
        raise ValueError(f"template has shape {template.shape}, the model animates meshes with "
                         f"the default head's {head.vertices.shape}; retarget other meshes")
    cfg = net.cfg
    x = load_speech(samples, sample_rate)
    duration = len(x) / MODEL_RATE
    n_out = max(1, math.ceil(duration * fps))
    basis_mm, bias_mm = net.basis.weight.T.numpy(), net.basis.bias.numpy()
    basis, bias = basis_mm / MM, bias_mm / MM
    if is_silent(x):
        if progress:
            progress(1.0)
        return Animation(float(fps), template, head.faces, head.landmarks["lip_pairs"],
                         np.zeros((n_out, cfg.rank), np.float32), basis, np.zeros_like(bias),
                         np.zeros((n_out, len(ARKIT_NAMES)), np.float32), duration)
    mel = utterance_mel(x, cfg.phone_ear)[None]                       # (1, rows, M)
    del x
    ctx = net.decoder.ctx
    n_model = math.ceil(duration * cfg.fps) + 1            # one spare frame to interpolate into
    window = max(8 * ctx + 8, int(window_s * cfg.fps))
    n_steps = 2 * math.ceil((n_model + 2 * ctx) / window)
    done = 0

    def tick():
        nonlocal done
        done += 1
        if cancel is not None and cancel():
            raise Cancelled("animation cancelled")
        if progress:
            progress(min(1.0, done / n_steps))

    # phase A: codes for frames -ctx .. n_model+ctx-1 (audio heads argmax, expression heads prior)
    warped = seal_hearings(mel) if seal else None
    codes, seal_logit = inference_codes(mel, net, prior, n_model, window, seed, temperature, tick,
                                        warped)
    del warped
    # phase B: decode windows of frames, each with ctx frames of codes on both sides
    tfeat = net.decoder.template_features(torch.from_numpy(template)[None])
    coeffs = np.zeros((n_model, cfg.rank), np.float32)
    for k0 in range(0, n_model, window):
        k1 = min(n_model, k0 + window)
        one_hot = torch.nn.functional.one_hot(codes[k0:k1 + 2 * ctx], cfg.classes).float()[None]
        coeffs[k0:k1] = net.decoder(one_hot, tfeat)[0].numpy()
        tick()
    if seal:
        logit = seal_logit[ctx:ctx + n_model] - np.log(SEAL_POS_WEIGHT)
        prob = 1 / (1 + np.exp(-logit))
        pairs = head.landmarks["lip_pairs"]
        coeffs = seal_lips(coeffs, prob, basis_mm, bias_mm, template, pairs,
                           _model_seal_direction(net, pairs, len(template)))
    coeffs = _resample_frames(coeffs, cfg.fps, fps, n_out)
    arkit = np.clip(coeffs @ net.arkit.weight.T.numpy() + net.arkit.bias.numpy(), 0, 1)
    return Animation(float(fps), template, head.faces, head.landmarks["lip_pairs"], coeffs,
                     basis, bias, arkit.astype(np.float32), duration)


def utterance_mel(samples16k: np.ndarray, ear: bool = False) -> torch.Tensor:
    """What the model hears of a clip: mono 16 kHz float32 (S,) with PAD_SECONDS of zeros on
    both sides -> normalised log-mel (n_mels, M), M = (S + 2 pad) // hop + 1; with ``ear``
    (``ModelConfig.phone_ear``) the phone evidence of ``core.phone_ear`` stacked under it,
    (n_mels + N_EAR, M). Training, inference and the identity fit all make it here, so none
    hears a clip differently."""
    pad = np.zeros(int(PAD_SECONDS * MODEL_RATE), np.float32)
    mel = normalize_utterance(log_mel(np.concatenate([pad, samples16k, pad])))
    if ear:
        mel = torch.cat([mel, ear_channels(samples16k, mel.shape[1], PAD_FRAMES)])
    return mel


def seal_hearings(mel: torch.Tensor) -> torch.Tensor | None:
    """The other hearings of a clip the closure head gets: mel (1, n_mels, M) -> its formants
    moved by each of ``SEAL_WARPS`` (W, n_mels, M), or None without warps."""
    return warp_mel(mel.expand(len(SEAL_WARPS), -1, -1), SEAL_WARPS) if SEAL_WARPS else None


@torch.no_grad()
def inference_codes(mel, net, prior, n_model: int, window: int, seed: int = 0,
                    temperature: float | None = 1.0, tick=None, warped=None):
    """The codes inference decodes: audio heads by argmax, expression heads drawn by the prior,
    window by window with its state carried over. mel (1, n_mels, M) padded normalised log-mel;
    warped: optional (W, n_mels, M) other hearings of it (``SEAL_WARPS``) whose closure logits
    count where they are higher. -> (codes (n_model + 2 ctx, H) long tensor for frames
    -ctx .. n_model + ctx - 1, closure logits (n_model + 2 ctx,) numpy)."""
    cfg, ctx = net.cfg, net.decoder.ctx
    rng = np.random.default_rng(seed)
    codes, seal_logit, state = [], [], None
    for a in range(-ctx, n_model + ctx, window):
        n = min(window, n_model + ctx - a)
        start, length, rel = mel_window(a, n, cfg.fps, net.audio.past, net.audio.future)
        feat = net.audio_features(mel[:, :, start:start + length], rel)               # (1, n, Da)
        a_codes = net.logits(feat)[0][0].argmax(-1)                                    # (n, Ha)
        e_codes, state = prior.sample(feat[0], a_codes, rng, temperature, state)
        codes.append(np.concatenate([a_codes.numpy(), e_codes], 1))
        logit = net.closure(feat[0])[:, 0]
        if warped is not None:
            other = net.closure(net.audio_features(warped[:, :, start:start + length], rel))
            logit = torch.maximum(logit, other[..., 0].amax(0))
        seal_logit.append(logit.numpy())
        if tick is not None:
            tick()
    return torch.from_numpy(np.concatenate(codes)), np.concatenate(seal_logit)


def _write_npy(zf: zipfile.ZipFile, name: str, shape: tuple, dtype, blocks) -> None:
    """Stream an array into an open zip as NAME.npy from an iterable of C-ordered blocks."""
    dtype = np.dtype(dtype)
    with zf.open(f"{name}.npy", "w", force_zip64=True) as fh:
        np.lib.format.write_array_header_2_0(fh, {"descr": np.lib.format.dtype_to_descr(dtype),
                                                  "fortran_order": False, "shape": tuple(shape)})
        for block in blocks:
            fh.write(np.ascontiguousarray(block, dtype).tobytes())


def write_npz(anim: Animation, path) -> Path:
    """Save the ``python3 -m core animate`` contract: offsets (T, V, 3) float32 m, template
    (V, 3) float32 m, faces int32, fps, lip_pairs int32 (K, 2), arkit_weights (T, 52) float32,
    arkit_names. Offsets are streamed, so memory stays at a few hundred frames. Written to a
    temporary name and renamed, so a failed run never leaves a partial file behind."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    small = {"template": anim.template.astype(np.float32), "faces": anim.faces.astype(np.int32),
             "fps": np.array(anim.fps, np.float64), "lip_pairs": anim.lip_pairs.astype(np.int32),
             "arkit_weights": anim.arkit_weights.astype(np.float32),
             "arkit_names": np.array(ARKIT_NAMES)}
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            _write_npy(zf, "offsets", (anim.n_frames,) + anim.template.shape, np.float32,
                       (o for _, o in anim.iter_offsets()))
            for name, arr in small.items():
                _write_npy(zf, name, arr.shape, arr.dtype, [arr])
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
