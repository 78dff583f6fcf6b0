"""Text-to-speech voices that return audio plus exact, canonical phone timings.

``synthesize("flite:slt", "Hello.")`` -> `Synthesis` (float32 mono samples in -1..1,
sample_rate in Hz, ``phones`` = contiguous ``(phone, start_s, end_s)`` over the whole audio
with phone in `core.rig.phones.PHONES`, ``raw_phones`` = the engine's labels and times).
Engines, one module each: `flite` (command line), `festival` (command line, batch-capable),
`espeak` (libespeak-ng via ctypes, in-process, not parallel within one process).
Failures raise `SynthesisError` with the voice id and the reason.
"""

from __future__ import annotations

from . import espeak, festival, flite
from .base import Synthesis, SynthesisError, Voice, split_voice_id

__all__ = ["Synthesis", "SynthesisError", "Voice", "get_voice", "list_voices", "synthesize",
           "synthesize_many"]

_ENGINES = {"flite": flite, "festival": festival, "espeak": espeak}


def list_voices() -> list[Voice]:
    """Every usable voice: flite and festival voices installed, every espeak-ng language,
    and the espeak variant voices of the corpus catalog."""
    from .catalog import ESPEAK

    voices = flite.list_voices() + festival.list_voices()
    languages = espeak.list_languages()
    voices += languages
    seen = {v.id for v in voices}
    base = {v.name: v for v in languages}
    have_variants = set(espeak.variants())
    for voice_id in ESPEAK:
        name = voice_id.split(":", 1)[1]
        lang, _, variant = name.partition("+")
        if voice_id not in seen and lang in base and variant in have_variants:
            b = base[lang]
            voices.append(Voice(voice_id, "espeak", b.language, f"{b.description} +{variant}"))
    return voices


def get_voice(voice_id: str) -> Voice:
    """The `Voice` for an id, checked to be usable here; SynthesisError if not."""
    engine, name = split_voice_id(voice_id)
    if engine == "espeak":
        lang, _, variant = name.partition("+")
        langs = {v.name: v for v in espeak.list_languages()}
        if lang not in langs:
            raise SynthesisError(f"{voice_id}: no espeak-ng voice {lang!r} installed")
        if variant and variant not in espeak.variants():
            raise SynthesisError(f"{voice_id}: no espeak-ng voice variant {variant!r}")
        b = langs[lang]
        return Voice(voice_id, "espeak", b.language,
                     b.description + (f" +{variant}" if variant else ""))
    if engine not in _ENGINES:
        raise SynthesisError(f"{voice_id}: unknown engine {engine!r} "
                             f"(known: {', '.join(_ENGINES)})")
    for v in _ENGINES[engine].list_voices():
        if v.id == voice_id:
            return v
    raise SynthesisError(f"{voice_id}: voice not installed or unknown")


def synthesize(voice_id: str, text: str, speed: float = 1.0) -> Synthesis:
    """Synthesise ``text`` with a voice id (``"flite:slt"``, ``"festival:kal"``,
    ``"espeak:de+f2"``); ``speed`` > 1 speaks faster.  Raises SynthesisError on failure."""
    engine, name = split_voice_id(voice_id)
    if engine not in _ENGINES:
        raise SynthesisError(f"{voice_id}: unknown engine {engine!r} "
                             f"(known: {', '.join(_ENGINES)})")
    if not speed or speed <= 0:
        raise SynthesisError(f"{voice_id}: speed must be positive, got {speed!r}")
    return _ENGINES[engine].synthesize(name, text, speed=speed)


def synthesize_many(voice_id: str, texts, speed: float = 1.0) -> list:
    """One entry per text: a `Synthesis` or the `SynthesisError` for that text.  festival
    runs all texts in one process (several times faster for short sentences)."""
    engine, name = split_voice_id(voice_id)
    if engine == "festival":
        return festival.synthesize_many(name, list(texts), speed=speed)
    out = []
    for text in texts:
        try:
            out.append(synthesize(voice_id, text, speed=speed))
        except SynthesisError as exc:
            out.append(exc)
    return out
