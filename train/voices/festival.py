"""festival backend: `festival -b` running a generated Scheme script (Debian ``festival`` with
``festvox-kallpc16k``, ``festvox-kdlpc16k``, ``festvox-us-slt-hts``).

The script selects the voice, synthesises each text as a Text utterance, saves the wave and
prints the Segment relation (``item.name`` and feature ``end``, seconds).  Labels are
festival's radio phone set (ARPAbet in lower case, ``pau``), mapped by
`core.rig.phones.normalize_arpabet`.  Rates: kal/ked 16000 Hz, slt (HTS) 32000 Hz.
`synthesize_many` runs many texts in one festival process (start-up and voice loading cost
~0.1-0.2 s per process, which is most of the time of a short sentence).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile

import soundfile as sf

from core.rig.phones import normalize_arpabet

from .base import Synthesis, SynthesisError, Voice, build_timeline, check_speech, to_float32

ENGINE = "festival"
VOICES = {  # name -> (festival voice, language, description)
    "kal": ("kal_diphone", "en-us", "festival kal diphone, US male"),
    "ked": ("ked_diphone", "en-us", "festival ked diphone, US male"),
    "slt": ("cmu_us_slt_arctic_hts", "en-us", "festival CMU ARCTIC slt HTS, US female"),
}
VOICE_DIRS = ("/usr/share/festival/voices", "/usr/lib/festival/voices")
TIMEOUT_S = 600


def _binary():
    return shutil.which("festival")


def is_installed(name: str) -> bool:
    """True when festival and the voice's folder are installed."""
    if _binary() is None or name not in VOICES:
        return False
    return any(glob.glob(os.path.join(d, "*", VOICES[name][0])) for d in VOICE_DIRS)


def list_voices() -> list[Voice]:
    """The festival voices of `VOICES` that are installed."""
    return [Voice(f"{ENGINE}:{n}", ENGINE, lang, desc)
            for n, (_, lang, desc) in VOICES.items() if is_installed(n)]


def _scheme_string(text: str) -> str:
    flat = " ".join(str(text).split())
    return '"' + flat.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _script(fest_voice: str, texts, folder: str, speed: float) -> str:
    lines = [f"(voice_{fest_voice})"]
    if speed != 1.0 and fest_voice.endswith("_hts"):  # HTS ignores Duration_Stretch
        lines.append(f"(set! hts_engine_params (append hts_engine_params "
                     f"(list (list \"-r\" {speed:.4f}))))")
    elif speed != 1.0:
        lines.append(f"(Parameter.set 'Duration_Stretch {1.0 / speed:.4f})")
    for i, text in enumerate(texts):
        wav = os.path.join(folder, f"{i}.wav")
        lines.append(
            f"(unwind-protect (begin (set! utt (Utterance Text {_scheme_string(text)}))"
            f" (utt.synth utt) (utt.save.wave utt \"{wav}\" 'riff)"
            f" (mapcar (lambda (s) (format t \"@@SEG {i} %s %f\\n\" (item.name s)"
            f" (item.feat s \"end\"))) (utt.relation.items utt 'Segment))"
            f" (format t \"@@OK {i}\\n\"))"
            f" (format t \"@@ERR {i}\\n\"))")
    return "\n".join(lines) + "\n"


def synthesize_many(name: str, texts, speed: float = 1.0) -> list:
    """Synthesise several texts in one festival process.

    Returns one entry per text, in order: a `Synthesis`, or a `SynthesisError` for a text
    that failed (the others still succeed).  Raises SynthesisError when the voice is missing
    or festival itself fails.
    """
    voice_id = f"{ENGINE}:{name}"
    texts = [str(t) for t in texts]
    if _binary() is None:
        raise SynthesisError(f"{voice_id}: the festival program is not installed")
    if not is_installed(name):
        raise SynthesisError(f"{voice_id}: unknown or uninstalled festival voice {name!r} "
                             f"(known: {', '.join(VOICES)})")
    fest_voice, lang, _ = VOICES[name]
    results: list = [None] * len(texts)
    with tempfile.TemporaryDirectory(prefix="sf-festival-") as tmp:
        todo = [i for i, t in enumerate(texts) if t.strip()]
        for i in set(range(len(texts))) - set(todo):
            results[i] = SynthesisError(f"{voice_id}: empty text")
        script = os.path.join(tmp, "run.scm")
        with open(script, "w", encoding="utf-8") as fh:
            fh.write(_script(fest_voice, [texts[i] for i in todo], tmp, speed))
        try:
            proc = subprocess.run(["festival", "-b", script], capture_output=True, text=True,
                                  timeout=TIMEOUT_S, cwd=tmp)
        except (OSError, subprocess.SubprocessError) as exc:
            raise SynthesisError(f"{voice_id}: festival failed to run: {exc}") from exc
        segs: dict = {}
        ok = set()
        for line in proc.stdout.splitlines():
            parts = line.split()
            if len(parts) == 4 and parts[0] == "@@SEG":
                segs.setdefault(int(parts[1]), []).append((parts[2], float(parts[3])))
            elif len(parts) == 2 and parts[0] == "@@OK":
                ok.add(int(parts[1]))
        detail = (proc.stderr or "").strip()[-300:]
        for k, i in enumerate(todo):
            wav = os.path.join(tmp, f"{k}.wav")
            if k not in ok or not os.path.exists(wav):
                results[i] = SynthesisError(f"{voice_id}: festival failed on text "
                                            f"{texts[i][:60]!r}: {detail}")
                continue
            results[i] = _build(voice_id, lang, texts[i], wav, segs.get(k, []), speed)
    return results


def _build(voice_id, lang, text, wav, ends, speed):
    samples, rate = sf.read(wav, dtype="int16", always_2d=False)
    samples = to_float32(samples)
    raw, t = [], 0.0
    for label, end in ends:
        raw.append((label, t, end))
        t = end
    if samples.size == 0 or not raw:
        return SynthesisError(f"{voice_id}: festival produced no audio for {text[:60]!r}")
    try:
        phones = build_timeline(raw, lambda lab: (normalize_arpabet(lab),), len(samples) / rate)
        check_speech(phones, voice_id, text)
    except (ValueError, SynthesisError) as exc:
        return SynthesisError(f"{voice_id}: {exc}")
    return Synthesis(samples, int(rate), phones, raw, voice_id, lang, text, {"speed": speed})


def synthesize(name: str, text: str, speed: float = 1.0) -> Synthesis:
    """Synthesise one text with festival voice ``name`` (kal, ked, slt); raise on failure."""
    result = synthesize_many(name, [text], speed)[0]
    if isinstance(result, SynthesisError):
        raise result
    return result
