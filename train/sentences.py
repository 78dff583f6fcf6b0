"""Deterministic generator of phonetically rich sentences for the synthetic speech corpus.

- English: real CMUdict words (the dictionary shipped in the pocketsphinx wheel), ranked by the
  unigram probability of pocketsphinx's en-us LM, strung into sentence-like text: each next word
  is drawn from common function words plus sampled content words, scored by the LM's trigram
  log-probability plus a greedy coverage gain that rewards phones and phone pairs (diphones,
  across word boundaries too) seen least so far. Rare phones (ZH, OY, UH, ...) get pushed.
- Other languages (espeak-ng voices): pronounceable pseudo-words built from small, hand-written
  syllable inventories (onsets/nuclei/codas in each language's orthography), again preferring
  the units used least so far. There is no dictionary, so ``phones`` is empty; ``units`` holds
  the orthographic units used.

``make_sentences(language, n, seed)`` is deterministic; the first k of n sentences equal
``make_sentences(language, k, seed)``. Ids are stable hashes of language and text, and
:func:`split_of` maps an id to ``train``/``val``/``test`` the same way on every machine.
"""
from __future__ import annotations

import functools
import hashlib
import re
from collections import Counter
from dataclasses import dataclass

import numpy as np

from core.rig.phones import ARPABET


@dataclass(frozen=True)
class Sentence:
    """One sentence: text, language code (espeak-ng voice name), stable id, and content."""
    text: str
    language: str
    id: str
    words: tuple[str, ...]
    phones: tuple[str, ...] = ()  # expected canonical phones (English only, no SIL)
    units: tuple[str, ...] = ()  # coverage units: phones (en) or syllable pieces (others)


def sentence_id(language: str, text: str) -> str:
    """Stable id: language + 12 hex digits of SHA-1 over language and text."""
    return f"{language}-" + hashlib.sha1(f"{language}\n{text}".encode()).hexdigest()[:12]


def split_of(sid: str, val: float = 0.05, test: float = 0.05) -> str:
    """Hold-out split for a sentence id: 'val', 'test' or 'train' (stable hash, fractions)."""
    u = int(hashlib.sha1(("split:" + sid).encode()).hexdigest()[:8], 16) / 2.0 ** 32
    return "val" if u < val else "test" if u < val + test else "train"


# ----------------------------------------------------------------------------- English
FUNCTION_WORDS = (
    "the a an of to in on at by for with from into over under about after before near and but "
    "or so as than that this these those his her its their our my your is was are were be has "
    "had have will would can could may might should must not very then there here when while "
    "where who which we they he she it you all some every each no more most only also just "
    "because"
).split()
_AVOID = ("yeah", "huh", "wow", "sex", "porn", "rape", "fuck", "shit", "bitch", "cunt", "whore", "slut", "nazi", "kill",
          "murder", "suicid", "terror", "penis", "vagin", "nigg", "fag", "dick", "damn", "bastard",
          "crap", "piss", "ass", "dildo", "orgasm", "masturb", "nude", "naked", "molest", "abort")
_CONJ = ("and", "but", "or", "so", "while", "when", "which", "who", "where", "because")
VOCAB_SIZE = 12000  # content words: the most probable CMUdict words under the en-us LM
LM_WEIGHT = 1.0  # weight of the trigram ln-probability in a word's score
COVER_WEIGHT = 8.0  # weight of the coverage gain in a word's score
PHONE_WEIGHT = 6.0  # a phone's share of the gain relative to a diphone's
REPEAT_WEIGHT = 1.0  # penalty per ln(1 + times a word was used already, or began a sentence)


@functools.lru_cache(maxsize=1)
def _english():
    """(lm, pron {word: phones}, vocab [most common first], vocab sampling weights (V,),
    index {phone: [vocab words with it]}, function words)."""
    from pocketsphinx import Config, LogMath, NGramModel, get_model_path

    lm = NGramModel(Config(), LogMath(), get_model_path("en-us/en-us.lm.bin"))
    pron: dict[str, tuple[str, ...]] = {}
    with open(get_model_path("en-us/cmudict-en-us.dict"), encoding="utf-8") as f:
        for line in f:
            w, *ph = line.split()
            if w in pron or not re.fullmatch(r"[a-z]+", w):
                continue  # variants "word(2)", apostrophes, digits
            pron[w] = tuple(re.sub(r"\d", "", p) for p in ph)
    uni = {w: lm.prob([w]) for w in pron}
    ok = [w for w in pron if uni[w] > -5e8 and len(w) > 2 and re.search(r"[aeiouy]", w)
          and not w.startswith(_AVOID) and w not in FUNCTION_WORDS]
    vocab = sorted(ok, key=lambda w: (-uni[w], w))[:VOCAB_SIZE]
    weights = 1.0 / np.sqrt(np.arange(1, len(vocab) + 1))  # Zipf-flattened preference
    function = [w for w in FUNCTION_WORDS if w in pron]
    index: dict[str, list[str]] = {p: [] for p in ARPABET}
    for w in vocab:
        for p in dict.fromkeys(pron[w]):
            index[p].append(w)
    return lm, pron, vocab, weights / weights.sum(), index, function


def english_lexicon() -> dict[str, tuple[str, ...]]:
    """CMUdict primary pronunciations {lower-case word: canonical phones}, alphabetic words."""
    return _english()[1]


def _gain(phones, prev, counts: Counter, local: Counter) -> float:
    """Coverage gain (no unit) of a word's phones (n,) after phone ``prev``.

    Sum over phones of PHONE_WEIGHT/(1+n) and over diphones of 1/(1+n), n = times seen so far,
    divided by sqrt(len) so that long words do not win by length alone.
    """
    g = 0.0
    for p in phones:
        g += PHONE_WEIGHT / (1.0 + counts[p] + local[p])
        if prev is not None:
            d = prev + "-" + p
            g += 1.0 / (1.0 + counts[d] + local[d])
        prev = p
    return g / np.sqrt(len(phones))


def _english_sentence(rng, counts: Counter, n_words: int) -> list[str]:
    """Words of one sentence, chosen one by one by LM score + coverage gain (see module)."""
    lm, pron, vocab, weights, index, function = _english()
    rare = sorted(ARPABET, key=lambda p: (counts[p], p))[:4]
    words: list[str] = []
    local: Counter = Counter()
    for i in range(n_words):
        cands = [vocab[j] for j in rng.choice(len(vocab), 24, replace=False, p=weights)]
        for p in rare:
            cands += [index[p][j] for j in rng.choice(len(index[p]), 3, replace=False)]
        n_fn = sum(1 for w in words[-2:] if w in function)
        if i < n_words - 1 and n_fn < 2:
            cands += function
        hist = ["<s>"] + words
        prev = pron[words[-1]][-1] if words else None
        best, best_score = cands[0], -np.inf
        for w in dict.fromkeys(cands):
            if (w in words and w not in FUNCTION_WORDS) or (words and w == words[-1]):
                continue
            ctx = [w, hist[-1], hist[-2]] if len(hist) > 1 else [w, hist[-1]]
            score = LM_WEIGHT * lm.prob(ctx) * 1e-4  # logbase 1.0001 -> ~ln
            score += COVER_WEIGHT * _gain(pron[w], prev, counts, local)
            if i == n_words - 1:
                score += LM_WEIGHT * lm.prob(["</s>", w]) * 1e-4
            used = counts["w:" + w] + (counts["w0:" + w] if i == 0 else 0)
            score -= REPEAT_WEIGHT * np.log1p(used) * (0.2 if w in FUNCTION_WORDS else 1.0)
            score += rng.gumbel() * 0.5  # sampling, not argmax: variety
            if score > best_score:
                best, best_score = w, score
        words.append(best)
        local.update(pron[best])
        local.update(_diphones(pron[best], prev))
    return words


def _diphones(phones, prev=None) -> list[str]:
    seq = ([prev] if prev else []) + list(phones)
    return [a + "-" + b for a, b in zip(seq, seq[1:])]


def _english_text(words: list[str], rng) -> str:
    out = list(words)
    if len(out) >= 9 and rng.random() < 0.5:  # a comma (a pause) before a conjunction
        ks = [k for k in range(3, len(out) - 2) if words[k] in _CONJ] or [len(out) // 2]
        out[ks[int(rng.integers(len(ks)))] - 1] += ","
    return out[0][:1].upper() + " ".join(out)[1:] + "."


# ----------------------------------------------------------------------------- other languages
# Per language: onsets | nuclei | codas (word-final or syllable-final) | internal-only onsets |
# regex of spellings to reject. Written in each language's orthography, "-" = empty.
SYLLABLES = {
    "de": ("- b d f g h j k l m n p r s t w z sch pf schl schm schn schw schr st sp br bl dr fr fl "
           "gr gl kr kl kn pr pl tr zw spr str qu ch", "a e i o u ä ö ü au ei eu äu ie aa ee oo "
           "ah eh oh uh üh öh", "- - n m l r s t ch ng nk ck ff tz pf cht st sch rn lt nd mpf rz "
           "lf ß", "ss ll tt nn", r"^ch[aou]|[üö]u|quu"),
    "fr": ("- b d f g j l m n p r s t v ch br bl cr cl dr fr fl gr gl pr pl tr vr qu ph",
           "a é è i o ou u eu au oi ai an en on in un ui ê eau ien oin", "- - - re le r l que te "
           "ne se ge che gne ille", "gn ill ss", r"qu[ou]|^gn"),
    "es": ("- b c d f g j l ll m n ñ p r s t v y z ch br bl cr cl dr fr fl gr gl pr pl tr",
           "a e i o u ia ie io ue ua ai ei oi au", "- - - n s l r d z", "rr", r"[^s]z[ei]"),
    "it": ("- b c d f g l m n p r s t v z gl gn sc ch gh br bl cr dr fr gr pr tr st sp str",
           "a e i o u è ò ia io ie uo", "- - - - n l r", "tt ss ll nn mm cc zz pp gg rr",
           r"gl[aeou]|ch[aou]|gh[aou]|sch|[èò]."),
    "pt": ("- b c d f g j l lh m n nh p r s t v x z ch qu br bl cr cl dr fr gr pr pl tr",
           "a e i o u á é ê ó ô ã õ ão ei ou ai oi ui eu", "- - - s r l m ção ões", "rr ss",
           r"qu[ao]|ã[^o]|õ[^e]"),
    "nl": ("- b d f g h j k l m n p r s t v w z ch sch schr sl sm sn sp st str kr kl kn br bl dr "
           "fr fl gr gl pr pl tr zw tw wr", "a e i o u aa ee oo uu ie oe eu ui ij ei ou au",
           "- - n m l r s t k p f ch ng nk cht rd lk st ts", "", r"^ch"),
    "pl": ("- b c cz d dz dż f g h ch j k l ł m n p r rz s sz t w z ż ci si zi ni dzi br pr kr "
           "gr tr dr pł kł gł sł st szcz prz trz krz sk sm chw", "a e i o u ó y ą ę ie ia io iu",
           "- - k m n ł ś ć sz cz t s j ń st ść", "", r"i[iy]|[kg]y|jy|łi|[rsc]zi|żi"),
    "sv": ("- b d f g h j k l m n p r s t v sj skj stj tj kj sk st sp str spr skr br bl dr fr "
           "fl gr gl kr kl kn pr pl tr sv sl sm sn", "a e i o u y å ä ö", "- - n m l r s t k p "
           "ng nk ck tt ll rt rd rn rs st kt", "", r"^[kt]j[eiyäö]"),
}
LANGUAGES = ("en",) + tuple(SYLLABLES)


@functools.lru_cache(maxsize=None)
def _inventory(language: str):
    ons, nuc, cod, inner, bad = SYLLABLES[language]
    split = lambda s: tuple("" if x == "-" else x for x in s.split())  # noqa: E731
    cod = split(cod)
    mid = tuple(c for c in dict.fromkeys(cod) if len(c) <= 2 and not re.search(_VOWELS, c))
    return split(ons), split(nuc), cod, mid, split(inner), re.compile(bad)


_VOWELS = "[aeiouyäöüåéèêáóôíúãõąęóàòìù]"


def _pick(rng, items, kind: str, counts: Counter) -> str:
    """Draw an item: earlier (simpler) items preferred, least-used items pushed.

    Weight of item k: 1/(1 + k/8) / (1 + n), n = times ``kind:item`` was used so far.
    """
    w = np.array([1.0 / (1.0 + k / 8.0) / (1.0 + counts[f"{kind}:{x}"])
                  for k, x in enumerate(items)])
    return items[int(rng.choice(len(items), p=w / w.sum()))]


def _pseudo_word(rng, language: str, counts: Counter) -> tuple[str, list[str]]:
    """One pronounceable pseudo-word and its units ('o:'/'n:'/'c:' + onset/nucleus/coda)."""
    ons, nuc, cod, mid, inner, bad = _inventory(language)
    for _ in range(50):
        n_syl = int(rng.choice([1, 1, 2, 2, 2, 3]))
        parts, units = [], []
        for s in range(n_syl):
            last = s == n_syl - 1
            open_prev = s > 0 and re.search(_VOWELS + "$", parts[-1]) is not None
            o = _pick(rng, ons + inner if open_prev else ons, "o", counts)
            if s > 0 and not o and open_prev:
                o = ons[1]  # no vowel hiatus across syllables
            v = _pick(rng, nuc, "n", counts)
            c = _pick(rng, cod, "c", counts) if last else (
                _pick(rng, mid, "c", counts) if rng.random() < 0.25 else "")
            parts.append(o + v + c)
            units += [f"o:{o}", f"n:{v}", f"c:{c}"]
        word = "".join(parts)
        if len(word) > 1 and not bad.search(word):
            return word, units
    return word, units


def _other_sentence(rng, language: str, counts: Counter, n_words: int):
    words, units = [], []
    for _ in range(n_words):
        w, u = _pseudo_word(rng, language, counts)
        words.append(w)
        units += u
        counts.update(u)
    text = " ".join(words)
    if n_words >= 8 and rng.random() < 0.5:
        k = int(rng.integers(3, n_words - 3))
        text = " ".join(words[:k]) + ", " + " ".join(words[k:])
    return words, units, text[:1].upper() + text[1:] + "."


# ----------------------------------------------------------------------------- public API
def make_sentences(language: str, n: int, seed: int = 0) -> list[Sentence]:
    """``n`` sentences (5-14 words) for ``language`` ('en' or a key of SYLLABLES), seeded."""
    if language not in LANGUAGES:
        raise ValueError(f"unknown language {language!r}; have {', '.join(LANGUAGES)}")
    rng = np.random.default_rng([seed, sum(map(ord, language))])
    counts: Counter = Counter()
    out: list[Sentence] = []
    seen: set[str] = set()
    while len(out) < n:
        n_words = int(rng.integers(5, 15))
        if language == "en":
            words = _english_sentence(rng, counts, n_words)
            pron = english_lexicon()
            phones = tuple(p for w in words for p in pron[w])
            counts.update(phones)
            counts.update(_diphones(phones))
            counts.update(["w:" + w for w in words] + ["w0:" + words[0]])
            text, units = _english_text(words, rng), phones
        else:
            words, units, text = _other_sentence(rng, language, counts, n_words)
            phones = ()
        sid = sentence_id(language, text)
        if sid in seen:
            continue
        seen.add(sid)
        out.append(Sentence(text, language, sid, tuple(words), phones, tuple(units)))
    return out


def coverage(sentences) -> dict:
    """Coverage statistics: unit counts, diphone counts (English), missing ARPAbet phones.

    Returns ``{"sentences", "words", "units": {unit: n}, "diphones": {"A-B": n},
    "n_diphones", "missing": [phones never seen], "min_phone": (phone, n)}``.
    """
    units: Counter = Counter()
    diph: Counter = Counter()
    n_words = 0
    for s in sentences:
        units.update(s.units)
        diph.update(_diphones(s.phones))
        n_words += len(s.words)
    english = any(s.phones for s in sentences)
    missing = [p for p in ARPABET if units[p] == 0] if english else []
    low = min(ARPABET, key=lambda p: (units[p], p)) if english else None
    return {"sentences": len(sentences), "words": n_words, "units": dict(units.most_common()),
            "diphones": dict(diph.most_common()), "n_diphones": len(diph), "missing": missing,
            "min_phone": (low, units[low]) if low else None}
