"""Real speech -> phone timeline with pocketsphinx 5.1.1 (en-us acoustic model, CMUdict).

A timeline is ``list[(phone, start_s, end_s)]``: canonical phones (``core.rig.phones.PHONES``,
silence as ``SIL``), contiguous, covering the whole clip from 0 s to its duration in seconds.
pocketsphinx works on 10 ms frames, so boundaries fall on multiples of 0.01 s (except the end).

- :func:`force_align` aligns a known transcript (about 10-14 ms mean boundary error).
- :func:`recognize_phones` recognises phones without a transcript (phone loop LM; rough,
  roughly half of the phones wrong): a baseline only.
- :func:`load_audio` reads any file soundfile can read; :func:`main_align` is the CLI.
"""
from __future__ import annotations

import argparse
import difflib
import functools
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from core.rig.phones import SILENCE, normalize_arpabet

SAMPLE_RATE = 16000  # Hz, the rate of the en-us acoustic model
FRAME_S = 0.01  # seconds per pocketsphinx frame
WIDE_BEAMS = dict(beam=1e-120, wbeam=1e-100, pbeam=1e-120)
PASSES = ({}, WIDE_BEAMS)  # beam settings tried in turn by force_align (default beams first)


class AlignError(RuntimeError):
    """Bad input or a failed alignment; the message is one line meant for the user."""


def canonical_phone(label: str) -> str:
    """Map a pocketsphinx/CMUdict/flite label ('aa1', 'SIL', '+SPN+', 'ax', 'pau') to PHONES.

    Uses ``core.rig.phones.normalize_arpabet``; labels it does not know (``<sil>`` and other
    decoder-internal non-speech names) become SIL.
    """
    try:
        return normalize_arpabet(label)
    except ValueError:
        return SILENCE


def load_audio(path) -> tuple[np.ndarray, int]:
    """Read an audio file (any format/bit depth/channel count soundfile reads).

    Returns ``(samples, sample_rate)``: float32 mono samples of shape ``(n,)`` in [-1, 1]
    (channels averaged) and the rate in Hz. Raises :class:`AlignError` for a missing,
    unreadable or empty file.
    """
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise AlignError(f"audio file not found: {path}")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises LibsndfileError/RuntimeError/TypeError
        raise AlignError(f"cannot read audio {path}: {str(exc).splitlines()[0]}") from None
    if data.shape[0] == 0:
        raise AlignError(f"audio file is empty: {path}")
    return data.mean(axis=1).astype(np.float32), int(sr)


def _to_pcm16k(samples, sample_rate: int) -> tuple[bytes, float]:
    """float/int samples (n,) or (n, channels) at ``sample_rate`` Hz -> (16 kHz int16 bytes, s)."""
    from scipy.signal import resample_poly

    x = np.asarray(samples)
    if x.ndim == 2:
        x = x.mean(axis=1)
    if x.ndim != 1 or x.size == 0:
        raise AlignError("audio must be a non-empty 1-D (or frames x channels) array")
    if np.issubdtype(x.dtype, np.integer):
        x = x.astype(np.float64) / float(np.iinfo(x.dtype).max)
    x = x.astype(np.float64)
    duration = x.size / float(sample_rate)
    if int(sample_rate) != SAMPLE_RATE:
        g = np.gcd(int(sample_rate), SAMPLE_RATE)
        x = resample_poly(x, SAMPLE_RATE // g, int(sample_rate) // g)
    pcm = (np.clip(x, -1.0, 1.0) * 32767.0).astype("<i2")
    return pcm.tobytes(), duration


def _decoder(**kw):
    from pocketsphinx import Decoder

    return Decoder(samprate=SAMPLE_RATE, loglevel="FATAL", **kw)


def _decode(dec, pcm: bytes) -> None:
    dec.start_utt()
    dec.process_raw(pcm, full_utt=True)
    dec.end_utt()


def text_words(text: str) -> list[str]:
    """Transcript -> lower-case dictionary words (punctuation dropped, inner apostrophes kept)."""
    words = re.findall(r"[a-z0-9]+(?:'[a-z0-9]+)*", text.lower().replace("\u2019", "'"))
    if not words:
        raise AlignError(f"transcript has no words: {text!r}")
    return words


@functools.lru_cache(maxsize=1024)
def letter_to_sound(word: str) -> tuple[str, ...] | None:
    """Canonical phones for a word via flite's ``t2p`` (None when t2p is missing or fails)."""
    exe = shutil.which("t2p")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, word], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    phones = [canonical_phone(p) for p in out.split()]
    return tuple(p for p in phones if p != SILENCE) or None


def _prepare_words(dec, words: list[str], allow_lts: bool) -> None:
    """Make every word known to ``dec``: CMUdict, else letter-to-sound, else AlignError."""
    for w in dict.fromkeys(words):
        if dec.lookup_word(w) is not None:
            continue
        phones = letter_to_sound(w) if allow_lts else None
        if phones is None:
            raise AlignError(f"word {w!r} is not in the pronunciation dictionary")
        dec.add_word(w, " ".join(phones), True)


def _finish(segments, duration: float) -> list[tuple[str, float, float]]:
    """(phone, start_frame, end_frame_exclusive) list -> contiguous timeline over [0, duration]."""
    out: list[list] = []
    t = 0.0
    for phone, f0, f1 in segments:
        s, e = min(f0 * FRAME_S, duration), min(f1 * FRAME_S, duration)
        if e <= s:
            continue
        if s > t + 1e-9:  # a gap: silence
            out.append([SILENCE, t, s])
        s = max(s, t)
        if out and out[-1][0] == phone == SILENCE:
            out[-1][2] = e
        elif e > s:
            out.append([phone, s, e])
        t = max(t, e)
    if not out:
        return [(SILENCE, 0.0, duration)]
    if duration > t + 1e-9:
        if out[-1][0] == SILENCE or duration - t < FRAME_S + 1e-9:
            out[-1][2] = duration  # pocketsphinx drops the last partial frame
        else:
            out.append([SILENCE, t, duration])
    return [(p, round(s, 6), round(e, 6)) for p, s, e in out]


def force_align(samples, sample_rate: int, text: str, *, allow_lts: bool = True):
    """Align a transcript to speech; returns a timeline ``[(phone, start_s, end_s), ...]``.

    ``samples``: float (-1..1) or integer PCM, shape (n,) or (n, channels), at ``sample_rate``
    Hz (resampled to 16 kHz). Words missing from CMUdict get flite's letter-to-sound when
    ``allow_lts`` (else AlignError names the word). A first pass with default beams is retried
    with wide beams; AlignError if both fail.
    """
    words = text_words(text)
    pcm, duration = _to_pcm16k(samples, sample_rate)
    if not np.frombuffer(pcm, dtype="<i2").any():
        raise AlignError(f"audio is silent ({duration:.2f} s of zeros)")
    align = None
    for beams in PASSES:
        dec = _decoder(lm=None, bestpath=False, **beams)
        _prepare_words(dec, words, allow_lts)
        try:
            dec.set_align_text(" ".join(words))
            _decode(dec, pcm)
            if dec.hyp() is None:
                continue
            dec.set_alignment()
            _decode(dec, pcm)
            align = dec.get_alignment()
        except RuntimeError:
            align = None
        if align is not None:
            break
    if align is None:
        raise AlignError(f"alignment failed ({duration:.2f} s audio, {len(words)} words):"
                         " transcript does not match the audio or the audio is too short")
    segs = [(canonical_phone(p.name), p.start, p.start + p.duration)
            for w in align for p in w]
    return _finish(segs, duration)


def recognize_phones(samples, sample_rate: int):
    """Phone recognition without a transcript (en-us phone-loop LM); returns a timeline.

    Same input conventions as :func:`force_align`. Expect ~45-55 % phone errors: a baseline.
    """
    from pocketsphinx import get_model_path

    pcm, duration = _to_pcm16k(samples, sample_rate)
    dec = _decoder(allphone=get_model_path("en-us/en-us-phone.lm.bin"), lm=None,
                   lw=2.0, beam=1e-20, pbeam=1e-20)
    _decode(dec, pcm)
    segs = [(canonical_phone(s.word), s.start_frame, s.end_frame + 1) for s in dec.seg()]
    return _finish(segs, duration)


def boundary_errors(hyp, ref, ignore=(SILENCE,)) -> np.ndarray:
    """Absolute start-time differences (s), shape (k,), over phones matched in order.

    The two timelines' phone strings (without ``ignore`` labels) are matched with difflib;
    each matched phone contributes |start_hyp - start_ref| and |end_hyp - end_ref|.
    """
    h = [x for x in hyp if x[0] not in ignore]
    r = [x for x in ref if x[0] not in ignore]
    sm = difflib.SequenceMatcher(a=[x[0] for x in h], b=[x[0] for x in r], autojunk=False)
    errs = []
    for blk in sm.get_matching_blocks():
        for k in range(blk.size):
            a, b = h[blk.a + k], r[blk.b + k]
            errs += [abs(a[1] - b[1]), abs(a[2] - b[2])]
    return np.asarray(errs, dtype=np.float64)


def _read_text(arg: str) -> str:
    p = Path(arg)
    if arg.endswith(".txt") or (len(arg) < 4096 and p.is_file()):
        if not p.is_file():
            raise AlignError(f"transcript file not found: {p}")
        return p.read_text(encoding="utf-8")
    return arg


def main_align(argv=None) -> int:
    """CLI: ``align AUDIO TEXT [-o out.json]``; TEXT is a transcript or a .txt file path."""
    ap = argparse.ArgumentParser(prog="python3 -m train align",
                                 description="Force-align a transcript to speech (pocketsphinx).")
    ap.add_argument("audio", help="audio file (wav, flac, ogg, ...)")
    ap.add_argument("text", help="transcript, or path to a .txt file holding it")
    ap.add_argument("-o", "--output", help="JSON output (default: AUDIO with .phones.json)")
    ap.add_argument("--no-lts", action="store_true",
                    help="fail on words missing from CMUdict instead of guessing (t2p)")
    ap.add_argument("--rig", metavar="NPZ",
                    help="also drive the articulation rig and write pseudo ground truth here: "
                         "arkit_weights (T, 52), offsets (T, V, 3) m on the default head, fps")
    ap.add_argument("--fps", type=float, default=30.0, help="frame rate for --rig")
    ap.add_argument("--seed", type=int, default=0, help="upper-face seed for --rig")
    args = ap.parse_args(argv)
    try:
        text = _read_text(args.text)
        samples, sr = load_audio(args.audio)
        phones = force_align(samples, sr, text, allow_lts=not args.no_lts)
    except AlignError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.output) if args.output else Path(args.audio).with_suffix(".phones.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = ",\n  ".join(json.dumps(list(x)) for x in phones)  # one phone per line
    out.write_text(f'{{"phones": [\n  {rows}\n ],\n "text": {json.dumps(text.strip())},\n'
                   f' "audio": {json.dumps(str(args.audio))}}}\n')
    n_speech = sum(p != SILENCE for p, _, _ in phones)
    print(f"aligned {n_speech} phones over {phones[-1][2]:.2f} s -> {out}")
    if args.rig:
        write_rig_truth(Path(args.rig), phones, len(samples) / sr, args.fps, args.seed)
        print(f"rig pseudo ground truth -> {args.rig}")
    return 0


def write_rig_truth(path: Path, phones, duration_s: float, fps: float, seed: int) -> None:
    """Drive the rig with an aligned timeline on the default head and save an .npz with
    arkit_weights (T, 52), arkit_names, offsets (T, V, 3) float32 m, template, faces, fps,
    lip_pairs, phones (the same keys as the `python3 -m core animate` output)."""
    import math

    from core.arkit import ARKIT_NAMES
    from core.assets import load_default_head
    from core.rig import rig_offsets, rig_weights

    head = load_default_head()
    n = int(math.ceil(duration_s * fps))
    weights = rig_weights(phones, fps, n, seed, head.vertices)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, arkit_weights=weights, arkit_names=np.array(ARKIT_NAMES),
                        offsets=rig_offsets(weights, head.vertices), template=head.vertices,
                        faces=head.faces, fps=np.float32(fps),
                        lip_pairs=head.landmarks["lip_pairs"],
                        phones=np.array([f"{p} {s:.4f} {e:.4f}" for p, s, e in phones]))
