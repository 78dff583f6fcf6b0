"""The record every dataset loader yields, plus the shared audio reading and checks."""
from __future__ import annotations

from dataclasses import dataclass, field
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy import signal

SAMPLE_RATE = 16000  # Hz, the rate of every Sequence.audio


@dataclass
class Sequence:
    """One spoken sentence with its tracked face motion.

    audio: float32 (N,) mono samples in -1..1 at `sample_rate` Hz (always 16000).
    offsets: float32 (T, V, 3) per-frame vertex positions minus `template`, metres.
    template: float32 (V, 3) the subject's neutral face, metres.
    fps: frames per second of `offsets`; frame t shows time t / fps seconds of `audio`.
    faces: int32 (F, 3) or (F, 4) template faces when the dataset has them, else None.
    """

    audio: np.ndarray
    offsets: np.ndarray
    template: np.ndarray
    fps: float
    subject: str
    sentence: str
    source: str
    sample_rate: int = SAMPLE_RATE
    faces: np.ndarray | None = field(default=None, repr=False)

    @property
    def duration(self) -> float:
        """Audio length in seconds."""
        return len(self.audio) / self.sample_rate

    @property
    def n_frames(self) -> int:
        return int(self.offsets.shape[0])


def read_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Read any file soundfile can open; mix to mono, resample (polyphase) to `sample_rate` Hz.
    Returns float32 (N,) in -1..1. Raises ValueError naming the file when unreadable or empty."""
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises LibsndfileError / RuntimeError variants
        raise ValueError(f"{path}: cannot read audio ({exc})") from exc
    if data.shape[0] == 0:
        raise ValueError(f"{path}: audio file is empty")
    mono = data.mean(axis=1)
    if rate != sample_rate:
        g = gcd(int(rate), int(sample_rate))
        mono = signal.resample_poly(mono, sample_rate // g, int(rate) // g)
    return np.clip(np.nan_to_num(mono), -1.0, 1.0).astype(np.float32)


def check_sequence(seq: Sequence, max_mismatch_s: float = 0.5, max_mismatch_frac: float = 0.05) -> None:
    """Raise ValueError naming `seq.source` when the record is unusable: offsets not (T, V, 3)
    matching template (V, 3), NaN/inf in motion or template, or audio and motion durations
    (seconds) differing by more than max(max_mismatch_s, max_mismatch_frac * audio duration)."""
    where = seq.source
    if seq.template.ndim != 2 or seq.template.shape[1] != 3:
        raise ValueError(f"{where}: template has shape {seq.template.shape}, expected (V, 3)")
    if seq.offsets.ndim != 3 or seq.offsets.shape[1:] != seq.template.shape:
        raise ValueError(f"{where}: motion has shape {seq.offsets.shape} but the template has "
                         f"{seq.template.shape[0]} vertices (expected (T, {seq.template.shape[0]}, 3))")
    if seq.n_frames == 0:
        raise ValueError(f"{where}: motion has no frames")
    for name, arr in (("motion", seq.offsets), ("template", seq.template)):
        bad = ~np.isfinite(arr)
        if bad.any():
            frames = np.unique(np.nonzero(bad)[0])[:5].tolist()
            raise ValueError(f"{where}: {name} contains NaN/inf ({int(bad.sum())} values; "
                             f"first rows {frames})")
    motion_s, audio_s = seq.n_frames / seq.fps, seq.duration
    tolerance = max(max_mismatch_s, max_mismatch_frac * audio_s)
    if abs(motion_s - audio_s) > tolerance:
        raise ValueError(f"{where}: audio lasts {audio_s:.2f} s but motion {motion_s:.2f} s "
                         f"({seq.n_frames} frames at {seq.fps:g} fps); tolerance {tolerance:.2f} s. "
                         f"Wrong fps, or audio and motion files that do not belong together?")


def resample_motion(positions: np.ndarray, fps: float, target_fps: float) -> np.ndarray:
    """Change the frame rate of (T, V, 3) motion: an integer ratio takes every k-th frame, any
    other ratio interpolates linearly. Returns (T', V, 3) with T' = floor((T-1)*target/fps) + 1."""
    ratio = fps / target_fps
    if abs(ratio - round(ratio)) < 1e-6 and round(ratio) >= 1:
        return positions[:: int(round(ratio))]
    n_out = int(np.floor((len(positions) - 1) / ratio + 1e-9)) + 1
    src = np.arange(n_out) * ratio
    i0 = np.minimum(np.floor(src).astype(int), len(positions) - 1)
    i1 = np.minimum(i0 + 1, len(positions) - 1)
    w = (src - i0)[:, None, None].astype(positions.dtype)
    return positions[i0] * (1 - w) + positions[i1] * w


class SequenceDataset:
    """What every loader shares: finishing a record (frame-rate change, checks) and iterating
    with ``skip_invalid``. Subclasses set ``fps``, ``target_fps``, ``mismatch`` (seconds,
    fraction), ``skip_invalid`` and define ``__len__`` and ``__getitem__``."""

    fps: float
    target_fps: float | None
    mismatch: tuple
    skip_invalid: bool

    def finish(self, audio_path, offsets: np.ndarray, template: np.ndarray, subject: str,
               sentence: str, source: str, faces=None) -> Sequence:
        """Offsets (T, V, 3) metres at ``self.fps`` -> a checked Sequence (at ``target_fps``)."""
        fps = self.fps
        if self.target_fps and abs(self.target_fps - fps) > 1e-9:
            offsets, fps = resample_motion(offsets, fps, self.target_fps), float(self.target_fps)
        seq = Sequence(audio=read_audio(audio_path), offsets=offsets.astype(np.float32),
                       template=template, fps=fps, subject=subject, sentence=sentence,
                       source=source, faces=faces)
        check_sequence(seq, *self.mismatch)
        return seq

    def __iter__(self):
        import logging

        for i in range(len(self)):
            try:
                yield self[i]
            except (ValueError, KeyError, FileNotFoundError) as exc:
                if not self.skip_invalid:
                    raise
                logging.getLogger(type(self).__module__).warning(
                    "skipping invalid sequence: %s", exc)
