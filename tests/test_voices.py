"""Text-to-speech backends (train.voices) and phone normalisers (core.rig.phones).

Real synthesis with flite, festival and espeak-ng (no mocks).  Engines that are not installed
are skipped.  The espeak coverage test drives every phoneme of every espeak-ng language voice
(its phoneme tables, read from the compiled ``phontab``) and asserts each name maps.
"""

import dataclasses
import os
import struct
import unicodedata

import numpy as np
import pytest

from core.rig.phones import PHONES, espeak_to_arpabet, normalize_arpabet
from train import voices
from train.voices import SynthesisError, catalog, espeak, festival, flite
from train.voices.base import build_timeline

VOWELS = {"AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH",
          "UW"}
TEXT = "Please pass the paper, happy people. We keep a map; hope it helps."
OTHER = {"de": "Die Puppe, eine Lampe. Wir kaufen Papier.",
         "fr": "La pipe du papa. Une soupe, un peu.",
         "es": "El papa, la copa. Una sopa, el apio."}

need_flite = pytest.mark.skipif(not flite.list_voices(), reason="flite not installed")
need_festival = pytest.mark.skipif(not festival.list_voices(), reason="festival not installed")
need_espeak = pytest.mark.skipif(not espeak.available(), reason="libespeak-ng not installed")


def _db(x):
    return 10 * np.log10(np.mean(np.asarray(x, np.float64) ** 2) + 1e-12)


def check_synthesis(s, min_phones=8):
    """The contract every backend must meet."""
    assert s.samples.dtype == np.float32 and s.samples.ndim == 1 and s.samples.size > 0
    assert np.abs(s.samples).max() <= 1.0 and np.abs(s.samples).max() > 0.05
    assert s.sample_rate in (8000, 16000, 22050, 32000)
    phones = s.phones
    assert phones[0][1] == 0.0
    assert abs(phones[-1][2] - s.duration) <= 0.02
    for (p0, a0, b0), (p1, a1, b1) in zip(phones, phones[1:]):
        assert b0 == a1, f"gap/overlap between {p0}@{b0} and {p1}@{a1}"
    assert all(p in PHONES and e > b for p, b, e in phones)
    assert sum(p != "SIL" for p, _, _ in phones) >= min_phones
    assert s.raw_phones and all(len(r) == 3 for r in s.raw_phones)
    # silence is silent: SIL spans (40 ms or longer, edges trimmed) >= 20 dB under speech
    sr, x = s.sample_rate, s.samples
    sil = [x[int((a + .01) * sr):int((b - .01) * sr)] for p, a, b in phones
           if p == "SIL" and b - a >= 0.04]
    speech = [x[int(a * sr):int(b * sr)] for p, a, b in phones if p != "SIL"]
    assert sil, "expected leading/trailing or pause silence"
    assert _db(np.concatenate(sil)) < _db(np.concatenate(speech)) - 20
    return s


def p_closures(s, head=None):
    """dB by which each vowel is louder than the start of the P after it: its first 60 %, or
    its first ``head`` seconds."""
    x, sr, out = s.samples, s.sample_rate, []
    for (p0, a0, b0), (p1, a1, b1) in zip(s.phones, s.phones[1:]):
        if p1 == "P" and p0 in VOWELS:
            end = a1 + (head if head else 0.6 * (b1 - a1))
            out.append(_db(x[int(a0 * sr):int(b0 * sr)]) - _db(x[int(a1 * sr):int(end * sr)]))
    return out


def vowel_tails(s, tail=0.01):
    """dB by which each vowel before a P is louder than its own last ``tail`` seconds."""
    x, sr, out = s.samples, s.sample_rate, []
    for (p0, a0, b0), (p1, _, _) in zip(s.phones, s.phones[1:]):
        if p1 == "P" and p0 in VOWELS:
            out.append(_db(x[int(a0 * sr):int(b0 * sr)]) - _db(x[int((b0 - tail) * sr):int(b0 * sr)]))
    return out


# ----------------------------------------------------------------------------- normalisers
@pytest.mark.parametrize("label,phone", [
    ("pau", "SIL"), ("sil", "SIL"), ("SIL", "SIL"), ("h#", "SIL"), ("+NSN+", "SIL"),
    ("ax", "AH"), ("AH0", "AH"), ("ey1", "EY"), ("ix", "IH"), ("axr", "ER"), ("dx", "D"),
    ("nx", "N"), ("el", "L"), ("em", "M"), ("en", "N"), ("hv", "HH"), ("pcl", "P"),
    ("ng", "NG"), ("zh", "ZH"), ("Oy2", "OY")])
def test_normalize_arpabet(label, phone):
    assert normalize_arpabet(label) == phone


def test_normalize_arpabet_covers_arpabet_and_rejects_unknown():
    for p in PHONES:
        assert normalize_arpabet(p.lower()) == p
    with pytest.raises(ValueError, match="xq"):
        normalize_arpabet("xq")


@pytest.mark.parametrize("name,phones", [
    ("", ("SIL",)), ("(en)", ()), ("ː", ()), ("əʊ", ("OW",)), ("aɪ", ("AY",)),
    ("tʃ", ("CH",)), ("dʒ", ("JH",)), ("ts", ("T", "S")), ("pf", ("P", "F")),
    ("y", ("UW",)), ("øː", ("OW",)), ("ɑ̃", ("AA",)), ("ʁ", ("G",)), ("r", ("R",)),
    ("ɾ", ("D",)), ("kʰ", ("K",)), ("kʷ", ("K", "W")), ("ᵐb", ("M", "B")), ("ʘ", ("P",)),
    ("ɓ", ("B",)), ("ɸ", ("F",)), ("β", ("V",)), ("ʔu", ("UW",)), ("tS", ("CH",)),
    ("ɐ̃ʊ̃", ("AW",)), ("d̻͡z̪", ("D", "Z")), ("ɜː", ("ER",)), ("??", ("UH", "AH"))])
def test_espeak_to_arpabet_examples(name, phones):
    assert espeak_to_arpabet(name) == phones


def test_espeak_to_arpabet_covers_the_ipa_chart():
    letters = [chr(c) for c in range(0x250, 0x2B0)] + list("abcdefghijklmnopqrstuvwxyz")
    letters += list("æçðøħŋœǀǁǂǃβθχ")
    for c in letters:
        if unicodedata.category(c) in ("Ll", "Lo"):
            out = espeak_to_arpabet(c)
            assert out and all(p in PHONES for p in out), c
    with pytest.raises(ValueError, match="Ж"):
        espeak_to_arpabet("Ж")


# ----------------------------------------------------------------------------- espeak coverage
def _phoneme_tables(data):
    """phontab -> {table name: (parent index, [(mnemonic, type), ...])}, in file order."""
    blob = open(os.path.join(data, "phontab"), "rb").read()
    tables, pos = [], 4
    for _ in range(blob[0]):
        n, parent = blob[pos], blob[pos + 1]
        name = blob[pos + 4:pos + 36].split(b"\0")[0].decode()
        pos += 36
        phs = []
        for _ in range(n):
            mnem, _flags, program, _code, kind = struct.unpack_from("<IIHBB", blob, pos)
            pos += 16
            text = mnem.to_bytes(4, "little").split(b"\0")[0].decode("latin-1")
            if program and kind >= 2 and text:  # real phonemes, not pauses/stress marks
                phs.append(text)
        tables.append((name, parent - 1, phs))
    assert pos == len(blob)
    return tables


def _voice_tables(data, names):
    """(voice file name, phoneme table name) for every espeak-ng language voice."""
    out = []
    for root, _, files in os.walk(os.path.join(data, "lang")):
        for f in files:
            table = lang = None
            for line in open(os.path.join(root, f), encoding="utf-8", errors="replace"):
                w = line.split()
                if len(w) >= 2 and w[0] == "phonemes":
                    table = w[1]
                if len(w) >= 2 and w[0] == "language" and lang is None:
                    lang = w[1]
            table = table or lang or f.lower()
            while table not in names and "-" in table:
                table = table.rsplit("-", 1)[0]  # en-gb -> en, pt-br -> pt
            out.append((f.lower(), table))
    return sorted(out)


@need_espeak
def test_every_espeak_phoneme_maps():
    data = espeak._STATE["data"]
    tables = _phoneme_tables(data)
    index = {name: i for i, (name, _, _) in enumerate(tables)}
    seen, languages = set(), 0
    for voice, table in _voice_tables(data, index):
        if table not in index:
            continue
        mnems, i = set(), index[table]
        while i >= 0:  # a table includes its parents' phonemes
            mnems.update(tables[i][2])
            i = tables[i][1]
        _, events, _ = espeak.run(voice, "[[" + " ".join(sorted(mnems)) + "]]",
                                  speed=3.0, phoneme_input=True)
        # and ordinary text, for context-dependent names and language switches
        _, more, _ = espeak.run(voice, "Ça, naïve Øre! Zürich 1984: quick jumps.", speed=3.0)
        seen.update(n for n, _ in events + more)
        languages += 1
    assert languages >= 100 and len(seen) >= 300
    bad = {}
    for name in seen:
        try:
            out = espeak_to_arpabet(name)
            assert all(p in PHONES for p in out)
        except (ValueError, AssertionError) as exc:
            bad[name] = str(exc)
    assert not bad, bad


# ----------------------------------------------------------------------------- engines
@need_flite
@pytest.mark.parametrize("name", sorted(flite.VOICES))
def test_flite_voice(name):
    s = check_synthesis(voices.synthesize(f"flite:{name}", TEXT))
    assert s.voice == f"flite:{name}" and s.language.startswith("en")
    assert min(p_closures(s)) > 5


@need_festival
def test_festival_voices_batch():
    for v in festival.list_voices():
        out = voices.synthesize_many(v.id, [TEXT, "   ", "Good morning."])
        check_synthesis(out[0])
        assert min(p_closures(out[0])) > 5
        assert isinstance(out[1], SynthesisError) and "empty" in str(out[1])
        check_synthesis(out[2], min_phones=4)
        assert out[0].raw_phones[0][0] == "pau"


@need_espeak
@pytest.mark.parametrize("voice_id", ["espeak:en-us", "espeak:en-gb-scotland+m3",
                                      "espeak:en+f2", "espeak:en-029+klatt3", "espeak:de",
                                      "espeak:fr+f4", "espeak:es+m3"])
def test_espeak_voice(voice_id):
    lang = voice_id.split(":")[1][:2]
    s = check_synthesis(voices.synthesize(voice_id, OTHER.get(lang, TEXT)))
    assert s.sample_rate == 22050 and s.voice == voice_id
    assert s.language.startswith(lang)
    assert min(p_closures(s)) > 10  # the closure silence now belongs to the P
    assert np.median(p_closures(s, head=0.01)) > 20


@need_espeak
def test_espeak_timing_correction():
    raw = espeak.synthesize("en-us", TEXT, correct=False)
    sr, names = raw.sample_rate, [n for n, _, _ in raw.raw_phones]
    starts = [round(a * sr) for _, a, _ in raw.raw_phones] + [len(raw.samples)]
    new = espeak.refine_boundaries(names, starts, raw.samples, sr)
    moved = (np.array(starts) - np.array(new)) / sr
    assert moved.min() >= 0 and 0.02 < moved.max() < 0.08  # only earlier, by tens of ms
    fixed = dataclasses.replace(raw, phones=build_timeline(
        [(n, new[k] / sr, new[k + 1] / sr) for k, n in enumerate(names)], espeak_to_arpabet,
        raw.duration))
    assert [p for p, _, _ in raw.phones] == [p for p, _, _ in fixed.phones]
    # uncorrected, P starts at the burst and the vowel before it ends in the closure silence
    assert np.median(vowel_tails(raw)) > 40 > max(vowel_tails(fixed))
    assert min(p_closures(fixed, head=0.01)) > 30


@need_espeak
def test_espeak_repeated_calls_and_voice_switches():
    a = espeak.synthesize("en-us", TEXT)
    b = voices.synthesize("espeak:de+f2", OTHER["de"])
    c = espeak.synthesize("en-us", TEXT)
    assert b.language == "de" and a.language == c.language == "en-us"
    assert a.phones == c.phones and np.array_equal(a.samples, c.samples)  # reproducible
    d = espeak.synthesize("en-us", TEXT, isolated=False)  # in-process works too
    assert [p for p, _, _ in a.phones] == [p for p, _, _ in d.phones]


@pytest.mark.parametrize("voice_id,text,match", [
    ("slt", TEXT, "malformed"), ("nope:slt", TEXT, "unknown engine"),
    ("flite:nope", TEXT, "flite voice"), ("festival:nope", TEXT, "festival voice"),
    ("espeak:xx-nope", TEXT, "no espeak-ng voice"), ("espeak:en+nope", TEXT, "variant"),
    ("flite:slt", "  ", "empty"), ("espeak:en", "", "empty"), ("festival:kal", "", "empty")])
def test_failures_raise_synthesis_error(voice_id, text, match):
    with pytest.raises(SynthesisError, match=match):
        voices.synthesize(voice_id, text)


@need_espeak
def test_espeak_without_speech_raises():
    with pytest.raises(SynthesisError, match="no speech|no audio"):
        voices.synthesize("espeak:en", " ... , ")


def test_voice_lists():
    listed = {v.id: v for v in voices.list_voices()}
    default = catalog.default_voices()
    assert {v.id for v in default} <= set(listed)
    for v in default:
        assert v.engine == v.id.split(":")[0] and v.language and v.description
    if espeak.available():
        langs = {v.name.split("+")[0] for v in default if v.engine == "espeak"}
        assert len(langs - set(catalog.ESPEAK_ENGLISH)) >= 6
        assert len(listed) > 100
    for v in flite.list_voices() + festival.list_voices():
        assert v.id in {d.id for d in default}


@pytest.mark.parametrize("voice_id", ["flite:slt", "festival:kal", "festival:slt", "espeak:en-us"])
def test_speed_shortens(voice_id):
    try:
        voices.get_voice(voice_id)
    except SynthesisError:
        pytest.skip(f"{voice_id} not installed")
    normal = voices.synthesize(voice_id, "Hello there, my friend.")
    fast = check_synthesis(voices.synthesize(voice_id, "Hello there, my friend.", speed=1.5),
                           min_phones=6)
    assert fast.duration < 0.85 * normal.duration
