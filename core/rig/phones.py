"""Canonical phone inventory of the articulation rig.

Every phone source (flite, festival, espeak-ng, pocketsphinx, CMUdict, user timelines) is
normalised to these labels before it reaches the rig: the 39 ARPAbet phones without stress
marks, upper case, plus ``SIL`` for silence and pauses.

Normalisers: `normalize_arpabet` (flite, festival, CMUdict, pocketsphinx, TIMIT labels -> one
phone) and `espeak_to_arpabet` (espeak-ng IPA phoneme names, any language -> a tuple of
phones).  Pure Python, no bpy.
"""

import unicodedata

ARPABET = (
    "AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY", "F", "G",
    "HH", "IH", "IY", "JH", "K", "L", "M", "N", "NG", "OW", "OY", "P", "R", "S", "SH",
    "T", "TH", "UH", "UW", "V", "W", "Y", "Z", "ZH",
)
SILENCE = "SIL"
PHONES = ARPABET + (SILENCE,)

_PHONE_SET = frozenset(PHONES)
_VOWELS = frozenset(("AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW",
                     "OY", "UH", "UW"))

# ---------------------------------------------------------------------------------------------
# ARPAbet-like labels (flite, festival, CMUdict, pocketsphinx, TIMIT)
# ---------------------------------------------------------------------------------------------
_ARPA_ALIASES = {
    # silence, pauses, breath and non-speech
    "PAU": SILENCE, "H#": SILENCE, "SP": SILENCE, "SPN": SILENCE, "#": SILENCE, "_": SILENCE,
    "BRTH": SILENCE, "BREATH": SILENCE, "EPI": SILENCE, "PAUSE": SILENCE, "SSIL": SILENCE,
    "<SIL>": SILENCE, "<S>": SILENCE, "</S>": SILENCE, "NSN": SILENCE, "GARBAGE": SILENCE,
    # reduced / allophonic variants of festival's radio set, TIMIT and flite's cmu set
    "AX": "AH", "AX-H": "AH", "IX": "IH", "AXR": "ER", "UX": "UW", "DX": "D", "NX": "N",
    "EL": "L", "EM": "M", "EN": "N", "ENG": "NG", "HV": "HH", "Q": "HH", "WH": "W",
    # TIMIT stop closures belong to their stop (the visible part of a bilabial)
    "BCL": "B", "DCL": "D", "GCL": "G", "PCL": "P", "TCL": "T", "KCL": "K",
}


def normalize_arpabet(label):
    """Map an ARPAbet-style phone label to the canonical set `PHONES`.

    Accepts flite/festival (``pau``, ``ax``, lower case), CMUdict/pocketsphinx (``AH0``,
    ``SIL``, ``+NSN+``) and TIMIT-style labels (``h#``, ``dx``, ``pcl``): case and stress
    digits are ignored, reduced vowels map to their full vowel (``ax`` -> AH, ``ix`` -> IH,
    ``axr`` -> ER), flaps to D/N, syllabic ``el/em/en`` to L/M/N, and every pause or
    non-speech label to ``SIL``.  Returns one label of `PHONES`; raises ValueError naming the
    label when it is unknown.
    """
    raw = str(label)
    key = raw.strip().upper()
    if key.startswith("+") and key.endswith("+") and len(key) > 2:
        return SILENCE  # pocketsphinx fillers: +NSN+, +SPN+, +BREATH+ ...
    if len(key) > 1 and key[-1] in "012" and key[:-1].isalpha():
        key = key[:-1]  # CMUdict stress
    if key in _PHONE_SET:
        return key
    if key in _ARPA_ALIASES:
        return _ARPA_ALIASES[key]
    raise ValueError(f"unknown ARPAbet phone label {raw!r}")


# ---------------------------------------------------------------------------------------------
# IPA (espeak-ng phoneme events with espeakINITIALIZE_PHONEME_IPA)
# ---------------------------------------------------------------------------------------------
# One IPA letter -> canonical phones, chosen by what the face shows: lip rounding and
# protrusion, bilabial closure, labiodental contact, jaw opening, tongue visibility.
_IPA_LETTERS = {}
for _row in """
i IY|y UW|ɨ IH|ʉ UW|ɯ IH|u UW|ɪ IH|ʏ UH|ʊ UH|ᵻ IH|ɩ IH|ɷ UH|ɿ IH|ʅ IH
e EY|ø OW|ɘ AH|ɵ UH|ɤ AH|o OW|ə AH|ɚ ER|ɝ ER|ɛ EH|œ AO|ɜ ER|ɞ AO|ʌ AH|ɔ AO
æ AE|ɐ AH|a AA|ɶ AO|ɑ AA|ɒ AO|ε EH
p P|b B|t T|d D|ʈ T|ɖ D|c K|ɟ G|k K|g G|ɡ G|q K|ɢ G|ʡ HH|ʔ HH
m M|ɱ M|n N|ɳ N|ɲ N|ŋ NG|ɴ NG
r R|ʀ R|ⱱ V|ɾ D|ɽ D|ɺ L
ɸ F|Φ F|β V|f F|v V|θ TH|ð DH|s S|z Z|ʃ SH|ʒ ZH|ʂ SH|ʐ ZH|ɕ SH|ʑ ZH|ç HH|ʝ Y|ɧ SH
x HH|ɣ G|χ HH|ʁ G|ħ HH|ʕ HH|h HH|ɦ HH|ʜ HH|ʢ HH
ɬ L|ɮ L|ʋ V|ɹ R|ɻ R|j Y|ɰ G|l L|ɭ L|ʎ L|ʟ L|ɫ L|w W|ʍ W|ɥ W
ɓ B|ɗ D|ʄ G|ɠ G|ʛ G|ʘ P|ǀ T|ǃ T|ǂ T|ǁ L
ʆ SH|ʓ ZH|ʙ B|ʚ AO|ʇ T|ʗ T|ʖ L|ʞ K|ʠ K
ʦ T S|ʣ D Z|ʧ CH|ʤ JH|ʨ CH|ʥ JH|ʩ F|ʪ L|ʫ L|ʬ P|ʭ T|ʮ IH|ʯ IH|ȵ N|ȶ T|ȡ D|ɼ R
""".replace("\n", "|").split("|"):
    if _row.strip():
        _sym, *_phones = _row.split()
        _IPA_LETTERS[_sym] = tuple(_phones)

# Plain ASCII that espeak-ng emits where a voice's data spells an IPA name in its Kirshenbaum
# mnemonic (e.g. "dZ", "tS", "A", "N"): read as the IPA letter of that mnemonic.
_KIRSHENBAUM = {"A": "ɑ", "B": "β", "C": "ç", "D": "ð", "E": "ɛ", "F": "f", "G": "ɢ",
                "H": "ħ", "I": "ɪ", "J": "ɟ", "K": "k", "L": "ɫ", "M": "ɱ", "N": "ŋ", "O": "ɔ",
                "P": "ɸ", "Q": "ɣ", "R": "ʀ", "S": "ʃ", "T": "θ", "U": "ʊ", "V": "ʌ", "W": "œ",
                "X": "χ", "Y": "ø", "Z": "ʒ", "@": "ə", "&": "æ", "?": "ʔ", "*": "ɾ"}

# Two letters that make one canonical phone: affricates, English-like diphthongs, r-schwa.
_IPA_PAIRS = {}
for _phone, _pairs in (("CH", "tʃ tɕ ʈʂ cç"), ("JH", "dʒ dʑ ɖʐ ɟʝ"),
                       ("AY", "aɪ ai ɑɪ ɑi ʌɪ äɪ"), ("AW", "aʊ au ɑʊ ɑu æʊ æu"),
                       ("OY", "ɔɪ ɔi oɪ oi ɔʏ ɔy ɔø"), ("EY", "eɪ ei ɛɪ ɛi"),
                       ("OW", "oʊ ou əʊ əu ɔʊ ɔu"), ("ER", "əɹ ər ɜɹ ɜr ɚɹ"),
                       ("AW", "ɐʊ"), ("NG", "nɡ ng"), ("UW", "ɯᵝ"), ("UH", "eo"), ("AO", "oe")):
    for _pair in _pairs.split():
        _IPA_PAIRS[_pair] = _phone

# Superscript letters: attached to a letter they are secondary articulations (kept: lip
# rounding and prenasalisation, which show on the face; dropped: aspiration, palatalisation,
# velarisation, pharyngealisation, Japanese lip compression); alone they are a phone.
_SUPERSCRIPTS = {"ʷ": "W", "ᵐ": "M", "ⁿ": "N", "ᵑ": "NG", "ʰ": "HH", "ʱ": "HH", "ʲ": "Y",
                 "ˡ": "L", "ˠ": "", "ˤ": "", "ᵝ": "", "ˀ": "", "ʼ": "", "˞": ""}
_KEEP_ATTACHED = {"ʷ": "after", "ᵐ": "before", "ⁿ": "before", "ᵑ": "before"}

# Names whose IPA was lost when espeak-ng 1.51 compiled its data ("?" for IPA letters,
# control bytes): de "UR" -> "??", bg "dz;" -> "\x01".
_ESPEAK_BROKEN = {"??": ("UH", "AH"), "\x01": ("D", "Z")}


def _ipa_tokens(name):
    """Base letters and superscripts of an IPA phoneme name, diacritics and marks removed."""
    tokens = []
    for char in name:
        char = _KIRSHENBAUM.get(char, char)
        if char in _IPA_LETTERS or char in _SUPERSCRIPTS:
            tokens.append(char)
            continue
        base = unicodedata.normalize("NFD", char)[0]
        if base != char and base in _IPA_LETTERS:
            tokens.append(base)  # nasal, long, creaky ... vowel letters: the plain vowel
        elif unicodedata.category(char)[0] in "MPSNZC" or unicodedata.category(char) == "Lm":
            continue  # length, stress, tone letters, ties, ASCII variant marks, digits
        else:
            raise ValueError(f"espeak phoneme {name!r}: unknown symbol {char!r}")
    return tokens


def espeak_to_arpabet(phoneme):
    """Map one espeak-ng phoneme name (IPA, as in its phoneme events) to canonical phones.

    ``phoneme`` is the name espeak-ng gives a phoneme event when initialised with
    ``espeakINITIALIZE_PHONEME_IPA``: IPA letters with diacritics, length, stress and tone
    marks, sometimes ASCII leftovers of its mnemonics; possibly cut at 8 bytes.  Diacritics
    and suprasegmentals are stripped (nasal vowels -> the vowel); every letter maps by
    articulation (front rounded vowels -> rounded UW/OW/AO, uvular and velar fricatives -> G
    or HH, flaps -> D, clicks and implosives -> the stop at their place, ejectives -> the
    plain stop); affricates become CH/JH or two phones (``ts`` -> T S, ``pf`` -> P F).

    Returns a tuple of `PHONES` labels, in order: ``("SIL",)`` for a pause (empty name),
    ``()`` for zero-width events that carry no articulation (language switches such as
    ``"(en)"``, a bare length or tone mark): callers give their time to the neighbour.
    Raises ValueError naming the symbol for a letter outside the IPA chart.
    """
    name = phoneme.split("\x00")[0] if phoneme else ""
    if name in _ESPEAK_BROKEN:
        return _ESPEAK_BROKEN[name]
    name = name.strip()
    if not name or set(name) <= set("_"):
        return (SILENCE,)
    if name.startswith("(") and name.endswith(")"):
        return ()  # language switch marker
    tokens = _ipa_tokens(name)
    letters = [t for t in tokens if t not in _SUPERSCRIPTS]
    if not letters:
        return tuple(_SUPERSCRIPTS[t] for t in tokens[:1] if _SUPERSCRIPTS[t])
    phones, i = [], 0
    while i < len(tokens):
        tok = tokens[i]
        if tok in _SUPERSCRIPTS:
            side = _KEEP_ATTACHED.get(tok)
            if side:
                phones.append(_SUPERSCRIPTS[tok])
            i += 1
            continue
        pair = tok + tokens[i + 1] if i + 1 < len(tokens) else ""
        if pair in _IPA_PAIRS:
            phones.append(_IPA_PAIRS[pair])
            i += 2
        else:
            phones.extend(_IPA_LETTERS[tok])
            i += 1
    if any(p != "HH" for p in phones):  # aspiration, glottal onsets: not phones of their own
        phones = [p for p in phones if p != "HH"]
    return tuple(p for k, p in enumerate(phones) if k == 0 or p != phones[k - 1])


def is_vowel(phone):
    """True for the canonical vowels (monophthongs, diphthongs and ER)."""
    return phone in _VOWELS
