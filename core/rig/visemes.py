"""Viseme table: what every canonical phone does to the lower face.

The lower face is split into articulator *groups*; each group owns a few ARKit channels. A phone
gives every group a target (ARKit weights for that group's channels) and a dominance alpha
(0..1, how strongly the phone insists on that target; low alpha lets neighbours show through,
which is how coarticulation and anticipatory rounding arise). Diphthongs are two targets played
one after the other. Values are for the default head's CC0 face units.
"""
from __future__ import annotations

from .phones import PHONES

# group -> ARKit channels it owns (symmetric channels are set on both sides)
GROUPS = {
    "jaw": ("jawOpen",),
    "round": ("mouthPucker", "mouthFunnel"),
    "spread": ("mouthSmileLeft", "mouthSmileRight", "mouthStretchLeft", "mouthStretchRight"),
    "upper_lip": ("mouthUpperUpLeft", "mouthUpperUpRight", "mouthRollUpper", "mouthShrugUpper"),
    "lower_lip": ("mouthLowerDownLeft", "mouthLowerDownRight", "mouthRollLower",
                  "mouthShrugLower"),
    "tongue": ("tongueOut",),
}
# Anticipation/carry-over time constants (s) per group: rounding spreads furthest ahead.
TAU_BEFORE = {"jaw": 0.07, "round": 0.16, "spread": 0.09, "upper_lip": 0.06, "lower_lip": 0.06,
              "tongue": 0.04}
TAU_AFTER = {"jaw": 0.06, "round": 0.07, "spread": 0.07, "upper_lip": 0.05, "lower_lip": 0.05,
             "tongue": 0.04}

BILABIALS = frozenset({"P", "B", "M"})
LABIODENTALS = frozenset({"F", "V"})
OPEN_VOWELS = frozenset({"AA", "AE", "AH", "AO", "AW", "AY"})
DIPHTHONGS = {"AW": ("AA", "UH"), "AY": ("AA", "IY"), "EY": ("EH", "IY"), "OW": ("AO", "UH"),
              "OY": ("AO", "IY")}


def _v(jaw, rnd=(0.0, 0.0), spread=(0.0, 0.0), up=(0.0, 0.0, 0.0), low=(0.0, 0.0, 0.0),
       tongue=0.0, alpha=None):
    """A viseme: targets per group and dominance per group (defaults: a vowel, all strong)."""
    targets = {
        "jaw": {"jawOpen": jaw},
        "round": {"mouthPucker": rnd[0], "mouthFunnel": rnd[1]},
        "spread": {"mouthSmileLeft": spread[0], "mouthSmileRight": spread[0],
                   "mouthStretchLeft": spread[1], "mouthStretchRight": spread[1]},
        "upper_lip": {"mouthUpperUpLeft": up[0], "mouthUpperUpRight": up[0],
                      "mouthRollUpper": up[1], "mouthShrugUpper": up[2]},
        "lower_lip": {"mouthLowerDownLeft": low[0], "mouthLowerDownRight": low[0],
                      "mouthRollLower": low[1], "mouthShrugLower": low[2]},
        "tongue": {"tongueOut": tongue},
    }
    dominance = {g: 0.8 for g in GROUPS}
    dominance.update(alpha or {})
    return targets, dominance


# Consonant dominance profiles: weak on jaw and rounding unless the consonant needs them.
_CONS = {"jaw": 0.35, "round": 0.15, "spread": 0.25, "upper_lip": 0.3, "lower_lip": 0.3,
         "tongue": 0.2}
_cons = lambda **over: {**_CONS, **over}  # noqa: E731

VISEMES = {
    # vowels: (jaw, (pucker, funnel), (smile, stretch), (upperUp, rollUpper, shrugUpper),
    #          (lowerDown, rollLower, shrugLower))
    "AA": _v(0.50, spread=(0.0, 0.05), up=(0.10, 0, 0), low=(0.30, 0, 0)),
    "AE": _v(0.40, spread=(0.15, 0.25), up=(0.20, 0, 0), low=(0.30, 0, 0)),
    "AH": _v(0.28, up=(0.05, 0, 0), low=(0.15, 0, 0)),
    "AO": _v(0.42, rnd=(0.10, 0.35), low=(0.15, 0, 0)),
    "EH": _v(0.30, spread=(0.15, 0.20), up=(0.10, 0, 0), low=(0.20, 0, 0)),
    "ER": _v(0.20, rnd=(0.20, 0.35), up=(0.10, 0, 0)),
    "IH": _v(0.20, spread=(0.25, 0.15), low=(0.10, 0, 0)),
    "IY": _v(0.12, spread=(0.45, 0.25), low=(0.05, 0, 0)),
    "UH": _v(0.20, rnd=(0.35, 0.30)),
    "UW": _v(0.12, rnd=(0.75, 0.30), alpha={"round": 0.95}),
    # bilabials: the closure itself is enforced by coarticulation.seal_bilabials
    "P": _v(0.05, low=(0, 0.10, 0.15), alpha=_cons(jaw=0.7, lower_lip=0.8, upper_lip=0.8)),
    "B": _v(0.05, low=(0, 0.10, 0.10), alpha=_cons(jaw=0.7, lower_lip=0.8, upper_lip=0.8)),
    "M": _v(0.05, low=(0, 0.05, 0.05), alpha=_cons(jaw=0.6, lower_lip=0.8, upper_lip=0.8)),
    # labiodentals: lower lip tucked up under the upper teeth
    "F": _v(0.06, up=(0.15, 0, 0), low=(0.0, 0.60, 0.0),
            alpha=_cons(jaw=0.6, lower_lip=0.95, upper_lip=0.6)),
    "V": _v(0.06, up=(0.12, 0, 0), low=(0.0, 0.55, 0.0),
            alpha=_cons(jaw=0.6, lower_lip=0.95, upper_lip=0.6)),
    "TH": _v(0.15, low=(0.10, 0, 0), tongue=0.25, alpha=_cons(tongue=0.9, jaw=0.5)),
    "DH": _v(0.12, low=(0.10, 0, 0), tongue=0.20, alpha=_cons(tongue=0.9, jaw=0.5)),
    "S": _v(0.05, spread=(0.20, 0.15), alpha=_cons(jaw=0.7, spread=0.4)),
    "Z": _v(0.05, spread=(0.20, 0.15), alpha=_cons(jaw=0.7, spread=0.4)),
    "SH": _v(0.10, rnd=(0.30, 0.45), up=(0.20, 0, 0), low=(0.10, 0, 0),
             alpha=_cons(jaw=0.6, round=0.85)),
    "ZH": _v(0.10, rnd=(0.30, 0.45), up=(0.20, 0, 0), low=(0.10, 0, 0),
             alpha=_cons(jaw=0.6, round=0.85)),
    "CH": _v(0.10, rnd=(0.30, 0.40), up=(0.20, 0, 0), low=(0.10, 0, 0),
             alpha=_cons(jaw=0.6, round=0.8)),
    "JH": _v(0.10, rnd=(0.30, 0.40), up=(0.20, 0, 0), low=(0.10, 0, 0),
             alpha=_cons(jaw=0.6, round=0.8)),
    "T": _v(0.12, alpha=_cons(jaw=0.45)),
    "D": _v(0.12, alpha=_cons(jaw=0.45)),
    "N": _v(0.12, alpha=_cons(jaw=0.4)),
    "L": _v(0.18, tongue=0.05, alpha=_cons(jaw=0.4)),
    "K": _v(0.18, alpha=_cons(jaw=0.35)),
    "G": _v(0.18, alpha=_cons(jaw=0.35)),
    "NG": _v(0.15, alpha=_cons(jaw=0.35)),
    "HH": _v(0.20, alpha={g: 0.1 for g in GROUPS}),
    "R": _v(0.15, rnd=(0.35, 0.25), alpha=_cons(round=0.7)),
    "W": _v(0.08, rnd=(0.80, 0.20), alpha=_cons(round=0.95, jaw=0.5)),
    "Y": _v(0.10, spread=(0.35, 0.10), alpha=_cons(spread=0.7)),
    "SIL": _v(0.0, alpha={g: 0.9 for g in GROUPS}),
}
for _name, (_first, _second) in DIPHTHONGS.items():
    VISEMES[_name] = VISEMES[_first]   # onset; the offglide is added by expand_diphthongs

missing = set(PHONES) - set(VISEMES)
if missing:
    raise RuntimeError(f"viseme table misses phones {sorted(missing)}")


def expand_diphthongs(phones):
    """Split diphthongs into onset (60 %) and glide (40 %): [(phone, start_s, end_s)] -> same."""
    out = []
    for phone, start, end in phones:
        if phone in DIPHTHONGS:
            a, b = DIPHTHONGS[phone]
            mid = start + 0.6 * (end - start)
            out += [(a, start, mid), (b, mid, end)]
        else:
            out.append((phone, start, end))
    return out
