"""The articulation rig on real synthesized sentences (flite, festival, espeak-ng timings)."""
import math

import numpy as np
import pytest

from core.arkit import ARKIT_INDEX, ARKIT_NAMES
from core.assets import load_default_head
from core.rig import lip_gap, rig_offsets, rig_weights
from core.rig.phones import PHONES
from core.rig.upper_face import upper_face_weights

SENTENCES = [
    ("flite:slt", "Bob and Mary fought a few brave battles, then they went home."),
    ("flite:awb", "Please move the big map of the bay to the very top."),
    ("festival:kal", "My mom bought five puppies; above them, a vivid blue moon."),
    ("espeak:en-us", "Pam moved the boxes, and we ate plums from the farm."),
]
UPPER = [i for i, n in enumerate(ARKIT_NAMES) if n.startswith(("brow", "eye", "cheekSquint", "nose"))]
LOWER = [i for i, n in enumerate(ARKIT_NAMES) if n.startswith(("jaw", "mouth", "tongue"))]


@pytest.fixture(scope="module")
def head():
    return load_default_head()


@pytest.fixture(scope="module")
def spoken():
    from train.voices import list_voices, synthesize

    have = {v.id for v in list_voices()}
    out = [synthesize(v, t) for v, t in SENTENCES if v in have]
    assert len(out) >= 3, f"voices missing: have {sorted(have)[:10]}..."
    return out


def n_frames(syn, fps):
    return int(math.ceil(len(syn.samples) / syn.sample_rate * fps))


def frames_in(start, end, fps, T):
    """Frames showing a time inside [start, end], or the frame nearest its centre."""
    ks = [k for k in range(T) if start <= k / fps <= end]
    return ks or [min(T - 1, int(round(0.5 * (start + end) * fps)))]


@pytest.mark.parametrize("fps", [24.0, 30.0, 60.0])
def test_every_bilabial_closes_on_every_identity(head, spoken, fps):
    checked = 0
    for ident in range(len(head.identity_names)):
        template = head.identity(ident)
        for syn in spoken:
            T = n_frames(syn, fps)
            w = rig_weights(syn.phones, fps, T, seed=ident, template=template)
            gap = np.abs(lip_gap(template[None] + rig_offsets(w, template)))
            for phone, start, end in syn.phones:
                if phone in ("P", "B", "M"):
                    closest = gap[frames_in(start, end, fps, T)].min()
                    assert closest < 0.0015, (head.identity_names[ident], phone, start, closest)
                    checked += 1
    assert checked > 50


def test_silence_is_rest(head, spoken):
    from train.synth import pad_timeline

    fps = 30.0
    for syn in spoken:
        # half a second of silence around the sentence, as the corpus generator adds
        duration = len(syn.samples) / syn.sample_rate
        phones = pad_timeline(syn.phones, 0.5, duration + 1.0)
        T = int(math.ceil((duration + 1.0) * fps))
        w = rig_weights(phones, fps, T, seed=1)
        gap = lip_gap(head.vertices[None] + rig_offsets(w, head.vertices))
        neutral = lip_gap(head.vertices)
        deep = []
        for phone, start, end in phones:
            if phone == "SIL" and end - start > 0.4:
                # back at rest 200 ms into a pause (and still there 200 ms before speech)
                deep += [k for k in range(T) if start + 0.2 <= k / fps <= end - 0.2]
        for k in deep:
            assert np.abs(w[k, LOWER]).max() < 0.02
            assert abs(gap[k] - neutral) < 0.0002
        # the ARCHITECTURE metric: mean gap over non-speech frames within 1 mm of neutral
        # (pauses of 0.3 s or more; a 50 ms break between words keeps the mouth in place)
        sil = [k for p, s, e in phones if p == "SIL" and e - s >= 0.3
               for k in frames_in(s, e, fps, T)]
        assert sil and abs(gap[sil].mean() - neutral) < 0.001


def test_open_vowels_open_jaw_and_labiodentals_tuck(spoken):
    """Jaw opening follows vowel height; /f v/ tuck the lower lip back under the teeth."""
    fps = 100.0
    jaw, roll = ARKIT_INDEX["jawOpen"], ARKIT_INDEX["mouthRollLower"]
    open_jaw, close_jaw, tuck = [], [], []
    for syn in spoken:
        w = rig_weights(syn.phones, fps, n_frames(syn, fps), seed=0, upper_face=False)
        for phone, start, end in syn.phones:
            k = int(round(0.5 * (start + end) * fps))
            if phone in ("AA", "AE", "AO"):
                open_jaw.append(w[k, jaw])
            elif phone in ("IY", "UW", "S", "Z"):
                close_jaw.append(w[k, jaw])
            elif phone in ("F", "V"):
                tuck.append((w[k, roll], w, k))
    assert open_jaw and close_jaw and tuck
    assert min(open_jaw) > 0.2 and np.mean(open_jaw) > 2 * np.mean(close_jaw)
    assert min(r for r, _, _ in tuck) > 0.45
    # geometry: the lower lip is drawn back under the upper teeth, the jaw nearly closed
    head = load_default_head()
    low = head.landmarks["lip_lower"]
    for _, weights, k in tuck:
        off = rig_offsets(weights[k:k + 1], head.vertices)[0]
        assert off[low, 1].mean() > 0.0005 and weights[k, jaw] < 0.15


def test_coarticulation_and_anticipatory_rounding():
    """Same consonants, different following vowel: rounding starts during the consonants."""
    fps = 100.0
    def timeline(vowel):
        return [("SIL", 0, 0.3), ("S", 0.3, 0.42), ("T", 0.42, 0.48), ("R", 0.48, 0.55),
                (vowel, 0.55, 0.75), ("SIL", 0.75, 1.2)]
    rounded = rig_weights(timeline("UW"), fps, 120, seed=0, upper_face=False)
    spread = rig_weights(timeline("IY"), fps, 120, seed=0, upper_face=False)
    pucker, smile = ARKIT_INDEX["mouthPucker"], ARKIT_INDEX["mouthSmileLeft"]
    s_mid = 36   # the middle of /s/, 190 ms before the vowel
    assert rounded[s_mid, pucker] > spread[s_mid, pucker] + 0.1
    assert spread[s_mid, smile] > rounded[s_mid, smile]
    # not step holds: no jump between neighbouring frames bigger than a small step
    for w in (rounded, spread):
        assert np.abs(np.diff(w[:, LOWER], axis=0)).max() < 0.12
    # the rounding builds up before the vowel starts
    assert rounded[50, pucker] > rounded[40, pucker] > rounded[30, pucker]


def test_any_fps_agrees(spoken):
    syn = spoken[0]
    w30 = rig_weights(syn.phones, 30.0, n_frames(syn, 30.0), seed=3, upper_face=False)
    w60 = rig_weights(syn.phones, 60.0, n_frames(syn, 60.0), seed=3, upper_face=False)
    w2997 = rig_weights(syn.phones, 30000 / 1001, n_frames(syn, 30000 / 1001), seed=3,
                        upper_face=False)
    assert len(w60) in (2 * len(w30) - 1, 2 * len(w30), 2 * len(w30) + 1)
    close = ARKIT_INDEX["mouthClose"]
    others = [i for i in LOWER if i != close]   # mouthClose is pinned per frame at closures
    np.testing.assert_allclose(w60[::2][:len(w30), others], w30[:len(w60[::2]), others], atol=1e-5)
    assert np.abs(w2997[:50, others] - w30[:50, others]).max() < 0.2


def test_blinks_present_with_human_durations():
    fps = 200.0
    w = upper_face_weights(int(60 * fps), fps, seed=11)
    blink = w[:, ARKIT_INDEX["eyeBlinkLeft"]]
    closed = blink > 0.05
    starts = np.flatnonzero(np.diff(closed.astype(int)) == 1)
    ends = np.flatnonzero(np.diff(closed.astype(int)) == -1)
    lengths = (ends[: len(starts)] - starts[: len(ends)]) / fps
    assert 8 <= len(starts) <= 35, "about 10-30 blinks a minute"
    assert lengths.min() >= 0.08 and lengths.max() <= 0.4
    assert blink.max() > 0.95


def test_upper_face_does_not_depend_on_phones(spoken):
    """Blinks, brows and squints come from the seed (and loudness), never from the phones."""
    fps = 30.0
    a, b = spoken[0], spoken[1]
    T = min(n_frames(a, fps), n_frames(b, fps))
    wa = rig_weights(a.phones, fps, T, seed=5)
    wb = rig_weights(b.phones, fps, T, seed=5)
    np.testing.assert_array_equal(wa[:, UPPER], wb[:, UPPER])
    assert np.abs(wa[:, LOWER] - wb[:, LOWER]).max() > 0.1
    # and across seeds the upper face changes
    wc = rig_weights(a.phones, fps, T, seed=6)
    assert np.abs(wa[:, UPPER] - wc[:, UPPER]).max() > 0.3
    # upper-face motion is not correlated with the mouth
    long = []
    for syn in spoken:
        long.append(rig_weights(syn.phones, fps, n_frames(syn, fps), seed=2))
    w = np.concatenate(long)
    jaw = w[:, ARKIT_INDEX["jawOpen"]]
    for name in ("eyeBlinkLeft", "browInnerUp", "eyeSquintLeft", "cheekSquintLeft"):
        ch = w[:, ARKIT_INDEX[name]]
        if ch.std() > 0:
            assert abs(np.corrcoef(ch, jaw)[0, 1]) < 0.35, name


def test_phone_table_complete_and_bad_input_rejected():
    fps = 30.0
    t = 0.0
    timeline = []
    for phone in PHONES:
        timeline.append((phone, t, t + 0.08))
        t += 0.08
    w = rig_weights(timeline, fps, int(t * fps) + 1, seed=0)
    assert np.isfinite(w).all() and w.min() >= 0 and w.max() <= 1
    with pytest.raises(ValueError, match="unknown phone"):
        rig_weights([("XX", 0, 0.1)], fps, 3, seed=0)
    with pytest.raises(ValueError, match="bad times"):
        rig_weights([("AA", 0.2, 0.1)], fps, 3, seed=0)
    assert rig_weights([], fps, 10, seed=0, upper_face=False).max() == 0
