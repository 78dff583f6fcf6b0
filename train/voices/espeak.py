"""espeak-ng backend: the C library (``libespeak-ng.so.1``) through ctypes.

The library is initialised once per process with AUDIO_OUTPUT_SYNCHRONOUS and phoneme events
in IPA (espeakINITIALIZE_PHONEME_EVENTS | espeakINITIALIZE_PHONEME_IPA); a synth callback
collects the int16 samples (22050 Hz) and the phoneme events (type 7: IPA name, start
sample).  Each event starts a raw segment that ends at the next event; names map to
canonical phones with `core.rig.phones.espeak_to_arpabet`.  Voice ids are
``espeak:<language>[+<variant>]`` (``espeak:en-gb-scotland+m3``), set on every call.

Timing corrections (`refine_boundaries`).  espeak-ng emits a stop's closure silence *before*
the stop's event (so raw stops start at the burst, ~35-50 ms late), and the event of a vowel
after a nasal or liquid *after* the vowel's onset transition (~5-30 ms late).  So (1) a stop
or affricate takes over the quiet run (20 dB under the previous phone: digital silence, or
breath noise in the f-variants) that ends at its event; (2) a vowel after a nasal/liquid
starts where the energy last rises above half-way (in dB) from the consonant's level to the
vowel's (at most 30 ms earlier).  Other events match the audio: against pocketsphinx forced
alignment their boundaries sit +7..+9 ms (median) where flite's and festival's sit +0..+6 ms,
so there is no constant offset to remove.  raw_phones keep the uncorrected times.

espeak-ng keeps global state: calls are serialised by a lock, so threads are safe but gain
nothing; use processes for parallel work.  Its waveform generator also carries state (pitch
flutter phase) from one call to the next, so in one process the same text comes out a few
ms different each time.  `synthesize` therefore runs each call in a forked child by default
(``isolated=True``, ~20-40 ms extra): every call then starts from the same state and is
reproducible, as long as this process itself never synthesises in-process (`run`,
``isolated=False``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import pickle
import threading

import numpy as np

from core.rig.phones import espeak_to_arpabet, is_vowel

from .base import Synthesis, SynthesisError, Voice, build_timeline, check_speech

ENGINE = "espeak"
SAMPLE_RATE = 22050
DEFAULT_WPM = 175
MAX_ONSET_SHIFT_S = 0.030  # vowel-onset correction cap (measured shifts: ~5-30 ms)
_STOPS = frozenset(("P", "B", "T", "D", "K", "G", "CH", "JH"))
_SONORANTS = frozenset(("M", "N", "NG", "L", "R", "W", "Y"))


class _Event(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint),
                ("text_position", ctypes.c_int), ("length", ctypes.c_int),
                ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", ctypes.c_char * 8)]


class _Voice(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("languages", ctypes.c_char_p),
                ("identifier", ctypes.c_char_p), ("gender", ctypes.c_ubyte),
                ("age", ctypes.c_ubyte), ("variant", ctypes.c_ubyte), ("xx1", ctypes.c_ubyte),
                ("score", ctypes.c_int), ("spare", ctypes.c_void_p)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                             ctypes.POINTER(_Event))
_LOCK = threading.RLock()
_STATE: dict = {}


def _on_synth(wav, n, events):
    if n > 0:
        _STATE["chunks"].append(np.ctypeslib.as_array(wav, (n,)).copy())
    i = 0
    while events[i].type != 0:
        if events[i].type == 7:
            _STATE["events"].append((events[i].id.decode("utf-8", "ignore"), events[i].sample))
        i += 1
    return 0


def _lib():
    """Load and initialise libespeak-ng once; raise SynthesisError when unavailable."""
    with _LOCK:
        if "lib" in _STATE:
            return _STATE["lib"]
        if "error" in _STATE:
            raise SynthesisError(_STATE["error"])
        path = os.environ.get("SPEECHFACE_ESPEAK_LIB") or ctypes.util.find_library("espeak-ng")
        try:
            lib = ctypes.CDLL(path or "libespeak-ng.so.1")
        except OSError as exc:
            _STATE["error"] = f"espeak-ng library not found: {exc}"
            raise SynthesisError(_STATE["error"]) from exc
        options = 0x0001 | 0x0002 | 0x8000  # PHONEME_EVENTS | PHONEME_IPA | DONT_EXIT
        rate = lib.espeak_Initialize(2, 100, None, options)  # 2 = AUDIO_OUTPUT_SYNCHRONOUS
        if rate <= 0:
            _STATE["error"] = f"espeak_Initialize failed ({rate})"
            raise SynthesisError(_STATE["error"])
        lib.espeak_Info.restype = ctypes.c_char_p
        data = ctypes.c_char_p()
        lib.espeak_Info(ctypes.byref(data))
        lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_GetCurrentVoice.restype = ctypes.POINTER(_Voice)
        _STATE.update(callback=_CALLBACK(_on_synth), rate=rate, chunks=[], events=[],
                      data=(data.value or b"").decode())
        lib.espeak_SetSynthCallback(_STATE["callback"])
        _STATE["lib"] = lib
        return lib


def available() -> bool:
    """True when the espeak-ng library loads."""
    try:
        _lib()
    except SynthesisError:
        return False
    return True


def list_languages() -> list[Voice]:
    """Every espeak-ng language voice installed (no MBROLA, no variants)."""
    if not available():
        return []
    with _LOCK:
        voices, out, i = _lib().espeak_ListVoices(None), [], 0
        while voices[i]:
            v = voices[i].contents
            ident = (v.identifier or b"").decode()
            langs = (v.languages or b"\x05").decode("utf-8", "ignore")
            i += 1
            if ident.startswith("mb/") or not ident:
                continue
            name = ident.rsplit("/", 1)[-1].lower()
            out.append(Voice(f"{ENGINE}:{name}", ENGINE, langs[1:] or name,
                             f"espeak-ng {(v.name or b'').decode()}"))
        return out


def variants() -> list[str]:
    """Names of the installed voice variants (``m1``, ``f2``, ``klatt`` ...)."""
    if not available():
        return []
    folder = os.path.join(_STATE["data"], "voices", "!v")
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def _set_voice(lib, name: str) -> None:
    language, _, variant = name.partition("+")
    if variant and not os.path.isfile(os.path.join(_STATE["data"], "voices", "!v", variant)):
        raise SynthesisError(f"espeak:{name}: no espeak-ng voice variant {variant!r}")
    if not language or lib.espeak_SetVoiceByName(name.encode()) != 0:
        raise SynthesisError(f"espeak:{name}: no espeak-ng voice {language!r}")


def _energy_db(x: np.ndarray, sr: int, hop_s=0.001, win_s=0.010):
    """Short-time energy in dB: frame j covers [j*hop, j*hop + win), smoothed over 3 frames."""
    hop, win = int(hop_s * sr), int(win_s * sr)
    if len(x) < win + hop:
        return np.zeros(0), hop, win
    c = np.concatenate(([0.0], np.cumsum(x.astype(np.float64) ** 2)))
    starts = np.arange(0, len(x) - win, hop)
    e = 10 * np.log10((c[starts + win] - c[starts]) / win + 1e-10)
    return np.convolve(e, np.ones(3) / 3, "same"), hop, win


def refine_boundaries(names, starts, x: np.ndarray, sr: int) -> list[int]:
    """Corrected start samples for espeak segments ``names[i]`` starting at ``starts[i]``.

    ``starts`` has one more entry than ``names`` (the end of the audio).  See the module
    docstring for the two corrections; every boundary only moves earlier and never past the
    middle region of the previous segment.
    """
    phones = [espeak_to_arpabet(n) for n in names]
    new = list(starts)
    power = np.concatenate(([0.0], np.cumsum(x.astype(np.float64) ** 2)))
    w = max(1, int(0.002 * sr))  # 2 ms power window for closure edges
    energy, hop, win = None, 1, 1

    def frame(sample):  # energy frame centred nearest to a sample index
        return int(np.clip((sample - win // 2) // hop, 0, max(len(energy) - 1, 0)))

    for i in range(1, len(names)):
        prev, cur = phones[i - 1], phones[i]
        a0, b = new[i - 1], starts[i]
        if not prev or not cur or prev == ("SIL",) or b - a0 < int(0.01 * sr):
            continue
        if cur[0] in _STOPS:  # (1) closure (silence or breath noise) queued before the event
            lo = a0 + int(0.005 * sr)
            ends = np.arange(lo + w, b + 1)
            level = 10 * np.log10((power[ends] - power[ends - w]) / w + 1e-12)
            loud = np.flatnonzero(level > np.percentile(level, 75) - 20.0)
            nb = lo + w + (loud[-1] if loud.size else 0)  # end of the last loud window
            if b - nb >= int(0.005 * sr):
                new[i] = nb
        elif is_vowel(cur[0]) and (prev[-1] in _SONORANTS or any(c in names[i - 1] for c in "ɾɽ")):
            if energy is None:  # (2) the vowel's onset is synthesised before its event
                energy, hop, win = _energy_db(x, sr)
            v1 = starts[i + 1]
            mid = a0 + (b - a0) * 2 // 5
            cons = energy[frame(a0 + int(0.003 * sr)):frame(mid) + 1]
            vow = energy[frame(b):frame(v1 - int(0.003 * sr)) + 1]
            if len(cons) < 3 or len(vow) < 3:
                continue
            lc, lv = np.median(cons), np.median(vow)
            if lv - lc < 6.0:
                continue
            seg = energy[frame(mid):frame(b) + 1]
            low = np.flatnonzero(seg <= (lc + lv) / 2)  # the last rise above half-way wins
            k = low[-1] + 1 if low.size else 0
            if k < len(seg):
                nb = (frame(mid) + k) * hop + win // 2
                if b - nb >= int(0.001 * sr):
                    new[i] = max(nb, mid, b - int(MAX_ONSET_SHIFT_S * sr))
    return new


def run(name: str, text: str, speed: float = 1.0, phoneme_input: bool = False):
    """Low level: synthesise and return ``(samples, events, language)``.

    samples: float32 (n,) at `SAMPLE_RATE`; events: ``[(ipa_name, start_sample), ...]`` as
    espeak-ng reports them; with ``phoneme_input`` text inside ``[[ ]]`` is read as espeak
    phoneme mnemonics (espeakPHONEMES).  Raises SynthesisError for a missing voice.
    """
    lib = _lib()
    with _LOCK:
        _set_voice(lib, name)
        lib.espeak_SetParameter(1, int(np.clip(round(DEFAULT_WPM * speed), 80, 450)), 0)
        _STATE["chunks"], _STATE["events"] = [], []
        data = text.encode("utf-8")
        flags = 1 | (0x100 if phoneme_input else 0)  # espeakCHARS_UTF8 | espeakPHONEMES
        err = lib.espeak_Synth(data, len(data) + 1, 0, 1, 0, flags, None, None)
        chunks, events = _STATE["chunks"], _STATE["events"]
        _STATE["chunks"], _STATE["events"] = [], []
        current = lib.espeak_GetCurrentVoice().contents
        langs = (current.languages or b"\x05").decode("utf-8", "ignore")[1:]
    if err != 0:
        raise SynthesisError(f"espeak:{name}: espeak_Synth returned {err}")
    x = np.concatenate(chunks).astype(np.float32) / 32768.0 if chunks else np.zeros(0, np.float32)
    return x, events, langs


def run_isolated(name: str, text: str, speed: float = 1.0):
    """`run` in a forked child process, so that no synthesis state is left behind here."""
    _lib()  # initialise (no synthesis) in the parent: children start from this state
    with _LOCK:  # no other thread of ours is inside espeak while we fork
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: synthesise, send the result, exit without cleanup
            os.close(read_fd)
            try:
                try:
                    payload = pickle.dumps(("ok", run(name, text, speed)))
                except BaseException as exc:  # noqa: BLE001 - report anything to the parent
                    payload = pickle.dumps(("error", SynthesisError(str(exc))))
                with os.fdopen(write_fd, "wb") as fh:
                    fh.write(payload)
            finally:
                os._exit(0)
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as fh:
            payload = fh.read()
        _, status = os.waitpid(pid, 0)
    if not payload:
        raise SynthesisError(f"espeak:{name}: synthesis process died (status {status})")
    kind, value = pickle.loads(payload)
    if kind == "error":
        raise value
    return value


def synthesize(name: str, text: str, speed: float = 1.0, correct: bool = True,
               isolated: bool | None = None) -> Synthesis:
    """Synthesise ``text`` with espeak-ng voice ``name`` (``"de"``, ``"en-us+f2"``).

    ``speed`` scales the default 175 words per minute (clipped to 80..450);
    ``correct=False`` keeps espeak's event times in ``phones`` too (for measurements);
    ``isolated`` (default: where os.fork exists) runs the call in a forked child.
    """
    voice_id = f"{ENGINE}:{name}"
    if not str(text).strip():
        raise SynthesisError(f"{voice_id}: empty text")
    if isolated is None:
        isolated = hasattr(os, "fork")
    x, events, langs = (run_isolated if isolated else run)(name, str(text), speed)
    if x.size == 0 or not events:
        raise SynthesisError(f"{voice_id}: espeak-ng produced no audio for {str(text)[:60]!r}")
    sr = _STATE["rate"]
    names = [n for n, _ in events]
    starts = [min(max(int(s), 0), len(x)) for _, s in events] + [len(x)]
    for k in range(1, len(starts)):
        starts[k] = max(starts[k], starts[k - 1])
    raw = [(n, starts[k] / sr, starts[k + 1] / sr) for k, n in enumerate(names)]
    try:
        fixed = refine_boundaries(names, starts, x, sr) if correct else starts
        seg = [(n, fixed[k] / sr, fixed[k + 1] / sr) for k, n in enumerate(names)]
        phones = build_timeline(seg, espeak_to_arpabet, len(x) / sr)
    except ValueError as exc:
        raise SynthesisError(f"{voice_id}: {exc}") from exc
    check_speech(phones, voice_id, str(text))
    return Synthesis(x, int(sr), phones, raw, voice_id, langs or name.split("+")[0],
                     str(text), {"speed": speed, "corrected": correct})
