"""flite backend: the `flite` command line (Debian package ``flite``).

``flite -voice X -psdur -t TEXT -o out.wav`` writes the audio and prints every segment as
``phone:end_seconds`` (CMU phone set: ARPAbet in lower case plus ``pau``), which
`core.rig.phones.normalize_arpabet` maps to canonical phones.  Times are in seconds; the
audio keeps the voice's native rate (kal: 8000 Hz, the others 16000 Hz).  The diphone voices
(kal, kal16) cut the trailing pause short, so their last end time can lie past the audio end:
the timeline is clipped to the audio.  One process per call (~10-30 ms start-up).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile

import soundfile as sf

from core.rig.phones import normalize_arpabet

from .base import Synthesis, SynthesisError, Voice, build_timeline, check_speech, to_float32

ENGINE = "flite"
VOICES = {  # name -> (language, description)
    "kal": ("en-us", "flite kal diphone, US male, 8 kHz"),
    "kal16": ("en-us", "flite kal16 diphone, US male, 16 kHz"),
    "awb": ("en-gb-scotland", "flite awb clunits, Scottish male"),
    "rms": ("en-us", "flite rms clunits, US male"),
    "slt": ("en-us", "flite slt clunits, US female"),
}
TIMEOUT_S = 120


def _binary():
    return shutil.which("flite")


@functools.lru_cache(maxsize=None)
def installed_voices() -> tuple[str, ...]:
    """Names of the flite voices this binary offers (``flite -lv``), [] without flite."""
    exe = _binary()
    if exe is None:
        return ()
    try:
        out = subprocess.run([exe, "-lv"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    return tuple(out.split(":", 1)[-1].split())


def list_voices() -> list[Voice]:
    """The flite voices of `VOICES` that are installed."""
    have = set(installed_voices())
    return [Voice(f"{ENGINE}:{n}", ENGINE, lang, desc)
            for n, (lang, desc) in VOICES.items() if n in have]


def parse_psdur(text: str):
    """``"pau:0.220 hh:0.295 ..."`` -> [(label, start_s, end_s), ...] (starts at 0)."""
    segs, t = [], 0.0
    for tok in text.split():
        label, sep, end = tok.rpartition(":")
        if not sep:
            continue
        try:
            end_s = float(end)
        except ValueError:
            continue
        segs.append((label, t, end_s))
        t = end_s
    return segs


def synthesize(name: str, text: str, speed: float = 1.0) -> Synthesis:
    """Synthesise ``text`` with flite voice ``name``; ``speed`` > 1 speaks faster."""
    voice_id = f"{ENGINE}:{name}"
    exe = _binary()
    if exe is None:
        raise SynthesisError(f"{voice_id}: the flite program is not installed")
    if name not in VOICES or name not in installed_voices():  # flite falls back to kal silently
        raise SynthesisError(f"{voice_id}: unknown or uninstalled flite voice {name!r} "
                             f"(known: {', '.join(VOICES)})")
    if not str(text).strip():
        raise SynthesisError(f"{voice_id}: empty text")
    with tempfile.TemporaryDirectory(prefix="sf-flite-") as tmp:
        wav = os.path.join(tmp, "out.wav")
        cmd = [exe, "-voice", name, "-psdur"]
        if speed != 1.0:  # else keep the voice's own default (kal: 1.1)
            cmd += ["--setf", f"duration_stretch={1.0 / speed:.4f}"]
        cmd += ["-t", str(text), "-o", wav]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
        except (OSError, subprocess.SubprocessError) as exc:
            raise SynthesisError(f"{voice_id}: flite failed to run: {exc}") from exc
        if proc.returncode != 0 or not os.path.exists(wav):
            raise SynthesisError(f"{voice_id}: flite exit {proc.returncode}: "
                                 f"{(proc.stderr or proc.stdout).strip()[:300]}")
        samples, rate = sf.read(wav, dtype="int16", always_2d=False)
    samples = to_float32(samples)
    raw = parse_psdur(proc.stdout)
    if samples.size == 0 or not raw:
        raise SynthesisError(f"{voice_id}: flite produced no audio for {str(text)[:60]!r}")
    try:
        phones = build_timeline(raw, lambda lab: (normalize_arpabet(lab),), len(samples) / rate)
    except ValueError as exc:
        raise SynthesisError(f"{voice_id}: {exc}") from exc
    check_speech(phones, voice_id, str(text))
    return Synthesis(samples, int(rate), phones, raw, voice_id, VOICES[name][0],
                     str(text), {"speed": speed})
