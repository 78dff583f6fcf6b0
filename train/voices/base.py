"""Types shared by the text-to-speech backends, and the timeline builder they all use.

Units everywhere: seconds for times, Hz for sample rates.  A timeline is a list of
``(phone, start_s, end_s)`` tuples, contiguous (each start is the previous end), starting at
0.0 and ending at the audio duration ``len(samples) / sample_rate``, with ``phone`` in
`core.rig.phones.PHONES` (leading, trailing and inner pauses as ``"SIL"``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from core.rig.phones import SILENCE

MIN_SEGMENT_S = 1e-4  # shorter pieces are dropped when a timeline is built


class SynthesisError(RuntimeError):
    """Synthesis failed: unknown or missing voice, engine error, or no speech in the output."""


@dataclass(frozen=True)
class Voice:
    """One usable voice.

    ``id`` is ``"<engine>:<name>"`` (``"flite:slt"``, ``"festival:kal"``,
    ``"espeak:en-gb-scotland+m3"``); ``language`` a lower-case language tag (``"en-us"``,
    ``"de"``); ``description`` free text for logs.
    """

    id: str
    engine: str
    language: str
    description: str = ""

    @property
    def name(self) -> str:
        """The engine's own name for the voice (the part of ``id`` after the colon)."""
        return self.id.split(":", 1)[1]


@dataclass
class Synthesis:
    """Audio plus its exact phone timeline.

    samples: float32 array, shape (n,), mono, in -1..1.  sample_rate: Hz (the engine's
    native rate: 8000, 16000, 22050 or 32000).  phones: canonical timeline (see module doc).
    raw_phones: the engine's own labels with the engine's own (uncorrected) times in
    seconds, ``(label, start_s, end_s)``.  voice: voice id.  language: language tag.
    """

    samples: np.ndarray
    sample_rate: int
    phones: list
    raw_phones: list
    voice: str
    language: str
    text: str = ""
    info: dict = field(default_factory=dict)

    @property
    def duration(self) -> float:
        """Audio duration in seconds."""
        return len(self.samples) / float(self.sample_rate)


def split_voice_id(voice_id: str) -> tuple[str, str]:
    """``"flite:slt"`` -> ``("flite", "slt")``; raises SynthesisError when malformed."""
    engine, sep, name = str(voice_id).partition(":")
    if not sep or not engine or not name:
        raise SynthesisError(f"malformed voice id {voice_id!r} (expected 'engine:name')")
    return engine, name


def to_float32(samples: np.ndarray) -> np.ndarray:
    """int16 or float samples -> float32 mono in -1..1, shape (n,)."""
    a = np.asarray(samples)
    if a.ndim == 2:
        a = a.mean(axis=1)
    if a.dtype.kind in "iu":
        a = a.astype(np.float32) / 32768.0
    return np.clip(a.astype(np.float32), -1.0, 1.0)


def build_timeline(raw, to_phones, duration):
    """Canonical contiguous timeline from an engine's labelled segments.

    raw: iterable of ``(label, start_s, end_s)`` in time order.  to_phones(label) returns a
    tuple of canonical phones: one phone takes the whole segment, several share it equally,
    an empty tuple gives its time to the previous segment (or the next one at the start).
    Gaps and the audio before the first and after the last segment become SIL when longer
    than 20 ms, else widen the neighbour; everything is clipped to ``[0, duration]``.
    Adjacent SIL segments are merged, pieces shorter than 0.1 ms dropped.
    """
    pieces = []  # [phone, start, end]
    pending = None  # start of a zero-articulation span waiting for a next segment
    for label, start, end in raw:
        start, end = max(0.0, float(start)), min(float(duration), float(end))
        if end <= start:
            continue
        phones = tuple(to_phones(label))
        if not phones:
            if pieces:
                pieces[-1][2] = max(pieces[-1][2], end)
            elif pending is None:
                pending = start
            continue
        if pending is not None:
            start, pending = pending, None
        step = (end - start) / len(phones)
        for k, phone in enumerate(phones):
            pieces.append([phone, start + k * step, end if k == len(phones) - 1 else start + (k + 1) * step])
    out = []
    t = 0.0
    for phone, start, end in pieces:
        if start < t:
            start = t
        if end - start < MIN_SEGMENT_S:
            continue
        if start - t > 0.02:
            out.append([SILENCE, t, start])
        elif out:
            out[-1][2] = start
        else:
            start = 0.0
        if out and out[-1][0] == phone == SILENCE:
            out[-1][2] = end
        else:
            out.append([phone, start, end])
        t = end
    if duration - t > 0.02 or not out:
        if out and out[-1][0] == SILENCE:
            out[-1][2] = duration
        else:
            out.append([SILENCE, t, duration])
    else:
        out[-1][2] = duration
    return [(p, round(s, 6), round(e, 6)) for p, s, e in out]


def check_speech(phones, voice_id: str, text: str) -> None:
    """Raise SynthesisError when a timeline holds no speech phone at all."""
    if not any(p != SILENCE for p, _, _ in phones):
        raise SynthesisError(f"{voice_id}: no speech produced for text {text[:60]!r}")
