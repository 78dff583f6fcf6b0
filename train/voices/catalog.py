"""Default voice list of the synthetic corpus: every flite and festival voice, espeak-ng
English accents with several variants, and eight other languages with a few variants each.

Ids are ``engine:name``; `default_voices` keeps the ones installed here.  MBROLA voices are
left out on purpose (their licence forbids use in products: see shared/FACTS.md).
"""

from __future__ import annotations

FLITE = ("flite:kal", "flite:kal16", "flite:awb", "flite:rms", "flite:slt")
FESTIVAL = ("festival:kal", "festival:ked", "festival:slt")

# espeak-ng voice file names (lower case) and variants (files in espeak-ng-data/voices/!v).
ESPEAK_ENGLISH = ("en", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan",
                  "en-gb-x-gbcwmd", "en-us-nyc")
ESPEAK_ENGLISH_VARIANTS = ("", "+m1", "+m3", "+m7", "+f2", "+f4", "+klatt3")
ESPEAK_OTHER = ("de", "fr", "es", "it", "pt-br", "nl", "pl", "sv")
ESPEAK_OTHER_VARIANTS = ("", "+m3", "+f2", "+f4")

ESPEAK = tuple(f"espeak:{lang}{var}" for lang in ESPEAK_ENGLISH for var in ESPEAK_ENGLISH_VARIANTS) \
    + tuple(f"espeak:{lang}{var}" for lang in ESPEAK_OTHER for var in ESPEAK_OTHER_VARIANTS)

CORPUS_VOICE_IDS = FLITE + FESTIVAL + ESPEAK


def default_voices():
    """The `CORPUS_VOICE_IDS` usable on this machine, as `Voice` objects, in that order."""
    from . import get_voice, SynthesisError

    out = []
    for voice_id in CORPUS_VOICE_IDS:
        try:
            out.append(get_voice(voice_id))
        except SynthesisError:
            continue
    return out
