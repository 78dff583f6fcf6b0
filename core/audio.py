"""Speech audio in, model features out: reading, checking, resampling and the log-mel front end.

Pure numpy/torch/soundfile (no scipy, no bpy), CPU, float32. Times are in seconds, rates in Hz,
samples are floats in [-1, 1]. Long inputs are processed in blocks so that memory stays bounded.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

MODEL_RATE = 16000  # Hz, the rate of the model's audio
MIN_RATE, MAX_RATE = 4000, 192000  # Hz, accepted input sample rates
MAX_SECONDS = 4 * 3600  # longest accepted input
READ_BLOCK = 1 << 16  # frames per block when reading a file


class AudioError(ValueError):
    """Unusable audio; the message is one line: what is wrong and what to do."""


def _fail(name: str, problem: str, fix: str) -> AudioError:
    return AudioError(f"{name}: {problem}; {fix}".replace("\n", " "))


def _check_rate(sample_rate, name: str) -> int:
    try:
        rate = int(sample_rate)
        whole = rate == sample_rate and not isinstance(sample_rate, bool)
    except (TypeError, ValueError, OverflowError):
        whole = False
    if not whole:
        raise _fail(name, f"sample rate {sample_rate!r} is not a whole number of Hz",
                    "pass the rate in Hz as an int")
    if not MIN_RATE <= rate <= MAX_RATE:
        raise _fail(name, f"sample rate {rate} Hz is outside {MIN_RATE}..{MAX_RATE} Hz",
                    f"re-export it at {MODEL_RATE} Hz")
    return rate


def _check_length(n: int, sample_rate: int, name: str) -> None:
    if n <= 0:
        raise _fail(name, "contains no audio", "give a recording with at least one sample")
    if n / sample_rate > MAX_SECONDS:
        raise _fail(name, f"is {n / sample_rate / 60:.1f} min long, over the "
                    f"{MAX_SECONDS / 60:g} min limit", "split it into shorter parts")


def _check_finite(x: np.ndarray, name: str) -> None:
    if not np.isfinite(x).all():
        raise _fail(name, "contains NaN or infinite samples", "repair or re-export the recording")


def read_audio(path) -> tuple[np.ndarray, int]:
    """Read any file soundfile reads (wav, flac, ogg, ...; any rate, bit depth, channel count).

    Returns ``(samples, sample_rate)``: float32 ``(S,)`` mono (mean of the channels, in
    [-1, 1]) and the rate in Hz. Reads in blocks of ``READ_BLOCK`` frames: peak memory is the
    result plus one block. Raises :class:`AudioError` for a missing, unreadable, empty, too long
    or non-finite file or a rate outside ``MIN_RATE..MAX_RATE``.
    """
    path = Path(path)
    name = path.name
    if not path.is_file():
        raise _fail(name, f"file not found ({path})", "check the path")
    try:
        f = sf.SoundFile(str(path))
    except Exception as exc:  # LibsndfileError, RuntimeError, TypeError
        why = str(getattr(exc, "error_string", exc)).strip().rstrip(".").lower()
        raise _fail(name, f"cannot read audio ({why.splitlines()[0] if why else 'unknown'})",
                    "convert it to wav, flac or ogg") from None
    with f:
        rate = _check_rate(f.samplerate, name)
        _check_length(f.frames, rate, name)
        out = np.empty(f.frames, dtype=np.float32)
        pos = 0
        while pos < len(out):
            block = f.read(min(READ_BLOCK, len(out) - pos), dtype="float32", always_2d=True)
            if len(block) == 0:
                break
            _check_finite(block, name)
            out[pos:pos + len(block)] = block.mean(axis=1) if block.shape[1] > 1 else block[:, 0]
            pos += len(block)
    _check_length(pos, rate, name)
    return out[:pos], rate


def check_samples(samples, sample_rate, name: str = "audio array") -> np.ndarray:
    """Validate in-memory audio and return it as float32 mono ``(S,)``.

    ``samples``: ``(S,)`` or ``(S, channels)``, float in [-1, 1] or int (int8/16/32 are scaled
    by ``2**(bits-1)``, uint8 is offset-binary). ``sample_rate`` in Hz. Same checks as
    :func:`read_audio`; raises :class:`AudioError`.
    """
    x, rate = np.asarray(samples), _check_rate(sample_rate, name)
    if x.ndim not in (1, 2):
        raise _fail(name, f"has shape {x.shape}", "pass (samples,) or (samples, channels)")
    if x.ndim == 2 and x.shape[1] > x.shape[0] > 0:
        raise _fail(name, f"has shape {x.shape}, more channels than samples",
                    "pass (samples, channels), e.g. the transpose")
    _check_length(x.shape[0], rate, name)
    if x.dtype == np.uint8:
        x = (x.astype(np.float32) - 128.0) / 128.0
    elif x.dtype in (np.int8, np.int16, np.int32):
        x = x.astype(np.float32) / float(2 ** (8 * x.dtype.itemsize - 1))
    elif np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32, copy=False)
    else:
        raise _fail(name, f"has dtype {x.dtype}", "pass float or int16/int32 samples")
    _check_finite(x, name)
    if x.ndim == 2:
        x = x.mean(axis=1, dtype=np.float32)
    return np.array(x, dtype=np.float32)  # always a fresh array


ZEROS, ROLLOFF, BETA = 16, 0.95, 8.0  # resampling filter: zero crossings a side, cutoff, Kaiser
MAX_BANK = 1 << 22  # most polyphase coefficients; rate pairs needing more use the direct path


def _lowpass(tau: torch.Tensor, cutoff: float, half: float) -> torch.Tensor:
    """Kaiser-windowed sinc at offsets ``tau`` (input samples); ``cutoff`` in input Nyquists."""
    ramp = (1.0 - (tau / half) ** 2).clamp_min(0.0).sqrt()
    window = torch.special.i0(BETA * ramp) / torch.special.i0(torch.tensor(BETA, dtype=tau.dtype))
    return cutoff * torch.sinc(cutoff * tau) * window * (tau.abs() <= half)


def resample(x: np.ndarray, sr_in: int, sr_out: int, *, chunk: int = 1 << 17) -> np.ndarray:
    """Band-limited rational resampling of float ``(S,)`` from ``sr_in`` to ``sr_out`` Hz.

    Returns float32 ``(ceil(S * sr_out / sr_in),)``; a copy when the rates are equal. Kaiser-sinc
    low-pass (cutoff 0.95 of the lower Nyquist, 16 zero crossings a side) on the gcd-reduced
    ``up/down`` grid, run over blocks of about ``chunk`` input samples with overlap, so memory
    stays bounded and the result does not depend on ``chunk``.
    """
    x = np.asarray(x, dtype=np.float32).reshape(-1)
    if sr_in == sr_out:
        return x.copy()
    g = math.gcd(int(sr_in), int(sr_out))
    up, down = int(sr_out) // g, int(sr_in) // g
    cutoff = ROLLOFF * min(1.0, up / down)  # in units of the input Nyquist
    half = ZEROS / cutoff  # filter half-width, input samples
    pad = int(math.ceil(half))
    n_out = -(-len(x) * up // down)
    run = _polyphase if up * (2 * pad + down) <= MAX_BANK else _direct
    with torch.no_grad():
        return run(x, up, down, cutoff, half, pad, n_out, chunk)


def _polyphase(x, up, down, cutoff, half, pad, n_out, chunk) -> np.ndarray:
    """Strided conv1d, ``(up, 1, 2*pad + down)`` bank: kernel i makes outputs ``j*up + i``."""
    d = torch.arange(2 * pad + down) - pad  # input offset from j*down
    phase = torch.arange(up, dtype=torch.float64)[:, None] * down / up  # output time - j*down
    bank = _lowpass(phase - d, cutoff, half).float()[:, None]
    n_blocks = -(-n_out // up)
    step = max(1, chunk // down)
    out = np.empty(n_blocks * up, dtype=np.float32)
    for j0 in range(0, n_blocks, step):
        j1 = min(n_blocks, j0 + step)
        seg = _padded_slice(x, j0 * down - pad, (j1 - 1) * down + pad + down)
        y = torch.nn.functional.conv1d(torch.from_numpy(seg)[None, None], bank, stride=down)
        out[j0 * up:j1 * up] = y[0].T.reshape(-1).numpy()  # (up, j1 - j0) -> time order
    return out[:n_out]


def _direct(x, up, down, cutoff, half, pad, n_out, chunk) -> np.ndarray:
    """Same filter as a compact ``(up, 2*pad + 1)`` bank, taps gathered per output sample."""
    taps = torch.arange(-pad, pad + 1)
    phase = torch.arange(up, dtype=torch.float64)[:, None] / up
    bank = _lowpass(phase - taps, cutoff, half).float()
    step = max(1, chunk * up // down // 4)
    out = np.empty(n_out, dtype=np.float32)
    for m0 in range(0, n_out, step):
        num = torch.arange(m0, min(n_out, m0 + step), dtype=torch.int64) * down
        base = num // up  # output time is base + phase / up input samples
        start = int(base[0]) - pad
        seg = torch.from_numpy(_padded_slice(x, start, int(base[-1]) + pad + 1))
        y = (bank[num - base * up] * seg[base[:, None] + taps - start]).sum(dim=1)
        out[m0:m0 + len(num)] = y.numpy()
    return out


def _padded_slice(x: np.ndarray, start: int, stop: int) -> np.ndarray:
    """``x[start:stop]`` with zeros where the range runs past either end (float32)."""
    seg = np.zeros(stop - start, dtype=np.float32)
    lo, hi = max(start, 0), min(stop, len(x))
    if hi > lo:
        seg[lo - start:hi - start] = x[lo:hi]
    return seg


def load_speech(source, sample_rate: int | None = None) -> np.ndarray:
    """Speech for the model: float32 ``(S,)`` mono at ``MODEL_RATE`` (16 kHz).

    ``source`` is a file path (read with :func:`read_audio`; leave ``sample_rate`` out) or an
    array ``(S,)``/``(S, channels)`` with its ``sample_rate`` in Hz (:func:`check_samples`).
    """
    if isinstance(source, (str, os.PathLike)):
        if sample_rate is not None:
            raise _fail(Path(source).name, "sample_rate was given for a file",
                        "leave it out, the file's own rate is used")
        x, sample_rate = read_audio(source)
    else:
        if sample_rate is None:
            raise _fail("audio array", "sample_rate is missing", "pass the array's rate in Hz")
        x = check_samples(source, sample_rate)
    return resample(x, sample_rate, MODEL_RATE)


@dataclass(frozen=True)
class MelConfig:
    """Log-mel settings: 25 ms Hann windows every 10 ms (100 frames/s), 80 HTK mel bins."""
    sample_rate: int = MODEL_RATE  # Hz
    n_fft: int = 512  # samples
    win_length: int = 400  # samples (25 ms)
    hop_length: int = 160  # samples (10 ms)
    n_mels: int = 80
    f_min: float = 40.0  # Hz
    f_max: float = 7600.0  # Hz
    log_floor: float = 1e-6  # added to the mel power before the log


def hz_to_mel(f):
    """HTK mel of frequencies ``f`` Hz (array-like) -> float64 array."""
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m):
    """Inverse of :func:`hz_to_mel`: mel -> Hz, float64 array."""
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def _mel_edges_hz(cfg: MelConfig) -> np.ndarray:
    """(n_mels + 2,) Hz: the filters' corners, equally spaced in mel from f_min to f_max."""
    return mel_to_hz(np.linspace(hz_to_mel(cfg.f_min), hz_to_mel(cfg.f_max), cfg.n_mels + 2))


def mel_filterbank(cfg: MelConfig = MelConfig()) -> torch.Tensor:
    """HTK triangular mel filters, float32 ``(n_mels, n_fft // 2 + 1)``, peak weight <= 1.

    Filter centres are equally spaced on ``mel = 2595 log10(1 + f / 700)`` between ``f_min``
    and ``f_max`` Hz; filter k rises from centre k-1 to centre k and falls to centre k+1.
    """
    edges = _mel_edges_hz(cfg)
    freqs = np.linspace(0.0, cfg.sample_rate / 2, cfg.n_fft // 2 + 1)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    fb = np.maximum(0.0, np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)))
    return torch.from_numpy(fb.astype(np.float32))


def mel_bin_hz(n_mels: int = MelConfig.n_mels) -> np.ndarray:
    """Centre frequencies (n_mels,) Hz of :func:`mel_filterbank`'s filters."""
    return _mel_edges_hz(MelConfig(n_mels=n_mels))[1:-1]


def warp_mel(mel: torch.Tensor, factors) -> torch.Tensor:
    """Vocal-tract length warp of (normalised) log-mel spectra along frequency.

    mel (B, n_mels, M); factors (B,) floats: crop b's spectrum stretched by factors[b] (> 1:
    formants move up, as for a shorter vocal tract): bin k takes the value at f_k / factor,
    linearly between bins, the edge bins held. Rows past MelConfig.n_mels (the phone ear's,
    ``core.phone_ear``) are not spectra and pass through unwarped. -> (B, n_mels, M)."""
    b, n, _ = mel.shape
    if n > MelConfig.n_mels:
        return torch.cat([warp_mel(mel[:, :MelConfig.n_mels], factors),
                          mel[:, MelConfig.n_mels:].expand(b, -1, -1)], 1)
    hz = mel_bin_hz(n)
    f = np.asarray(factors, np.float64).reshape(b, 1)
    pos = np.interp(hz_to_mel(hz[None] / f).ravel(), hz_to_mel(hz), np.arange(n, dtype=np.float64))
    pos = torch.from_numpy(pos.reshape(b, n))
    j0 = pos.floor().long().clamp(0, n - 2)
    w = (pos - j0).clamp(0, 1).to(mel.dtype)[..., None]
    rows = torch.arange(b)[:, None]
    return mel[rows, j0] * (1 - w) + mel[rows, j0 + 1] * w


def log_mel(samples16k, cfg: MelConfig = MelConfig(), *, chunk_frames: int = 3000) -> torch.Tensor:
    """Log-mel spectrogram, float32 ``(n_mels, M)`` with ``M = S // hop_length + 1``.

    ``samples16k``: float ``(S,)`` at ``cfg.sample_rate``. Frame j is centred at
    ``j * hop_length / sample_rate`` s (as torch.stft ``center=True``, zero padding); value is
    ``log(mel power + log_floor)``. Computed ``chunk_frames`` frames (30 s) at a time, each chunk
    reading ``n_fft`` samples of overlap, so the result does not depend on the chunking.
    """
    x = torch.as_tensor(samples16k, dtype=torch.float32).reshape(-1).numpy()
    hop, half = cfg.hop_length, cfg.n_fft // 2
    n_frames = len(x) // hop + 1
    window = torch.hann_window(cfg.win_length, periodic=True)
    fb = mel_filterbank(cfg)
    out = torch.empty(cfg.n_mels, n_frames)
    for j0 in range(0, n_frames, chunk_frames):
        j1 = min(n_frames, j0 + chunk_frames)
        seg = _padded_slice(x, j0 * hop - half, (j1 - 1) * hop - half + cfg.n_fft)
        spec = torch.stft(torch.from_numpy(seg), cfg.n_fft, hop, cfg.win_length, window,
                          center=False, return_complex=True)  # (n_fft // 2 + 1, j1 - j0)
        out[:, j0:j1] = torch.log(fb @ spec.abs().square() + cfg.log_floor)
    return out


def normalize_utterance(logmel: torch.Tensor, *, range_db: float = 50.0, floor_db: float = 80.0,
                        log_floor: float = MelConfig.log_floor) -> torch.Tensor:
    """Per mel bin, subtract the mean and divide by ``max(std, 0.1)`` over frames: ``(n_mels, M)``.

    This makes loudness and microphone gain irrelevant. ``logmel`` is :func:`log_mel` output made
    with ``log_floor``; that fixed floor is swapped for one ``floor_db`` dB below the loudest
    frame's total mel power, so scaling the audio only shifts the log values (which the mean
    removes). Statistics use only frames within ``range_db`` dB of the loudest frame, so long
    silences do not dominate. If no frame's mel power exceeds ``log_floor`` (digital silence),
    the result is all zeros.
    """
    mel = logmel.float().exp().sub_(log_floor).clamp_min_(0.0)  # mel power, fixed floor removed
    power = mel.sum(dim=0)  # (M,) total mel power per frame
    loudest = float(power.max())
    keep = (power > log_floor) & (power >= loudest * 10.0 ** (-range_db / 10.0))
    if not bool(keep.any()):
        return torch.zeros(logmel.shape)
    rel = mel.add_(loudest * 10.0 ** (-floor_db / 10.0)).log_()  # in place: one (n_mels, M) copy
    ref = rel[:, keep]
    std = ref.std(dim=1, unbiased=False, keepdim=True).clamp_min(0.1)
    return rel.sub_(ref.mean(dim=1, keepdim=True)).div_(std)
