"""The phone ear (core/phone_ear.py): CMU Sphinx's acoustic model scored on real human speech,
and a model that hears it as extra input rows."""
import filecmp

import numpy as np
import pytest
import torch

from core.audio import MelConfig, resample, warp_mel
from core.phone_ear import LOG_FLOOR, N_EAR, SILENCE, ear_channels, ear_phones, phone_evidence
from train.align import force_align, load_audio
from train.real_clips import reference_timeline

BILABIALS = ("B", "M", "P")


def _labels(timeline, n):
    lab = np.array([SILENCE] * n, dtype=object)
    for ph, a, b in timeline:
        lab[int(round(a * 100)):int(round(b * 100))] = ph
    return lab


def _detect(items):
    """(bilabials, fraction found at 5 % false alarms on other speech frames, frame accuracy)
    for [(16 kHz samples, phone timeline)]: a bilabial counts as found when log P(B|M|P) in
    one of its frames beats the 95th percentile of that score on non-bilabial speech frames."""
    names = np.array(ear_phones())
    rows = [list(names).index(p) for p in BILABIALS]
    found, other, acc = [], [], []
    for x, tl in items:
        ev = phone_evidence(x).numpy()
        assert ev.shape == (N_EAR, len(x) // 160 + 1)
        lab = _labels(tl, ev.shape[1])
        logp = (ev - 1.0) * (LOG_FLOOR / 2)                # back to log posteriors
        bil = np.log(np.exp(logp[rows]).sum(0))
        for ph, a, b in tl:
            if ph in BILABIALS:
                i0 = int(round(a * 100))
                found.append(bil[i0:max(i0 + 1, int(round(b * 100)))].max())
        speech = np.array([p not in (SILENCE,) + BILABIALS for p in lab])
        other.append(bil[speech])
        voiced = lab != SILENCE
        acc.append((names[ev.argmax(0)][voiced] == lab[voiced]).mean())
    thr = np.quantile(np.concatenate(other), 0.95)
    return len(found), float((np.array(found) > thr).mean()), float(np.mean(acc))


@pytest.fixture(scope="module")
def real_items(clips):
    items = {}
    for name, (path, text) in sorted(clips.items()):
        x, sr = load_audio(path)
        x = resample(x if x.ndim == 1 else x.mean(1), sr, 16000).astype(np.float32)
        items[name] = (x, force_align(x, 16000, text))
    return items


def test_asset_matches_a_fresh_build_from_pocketsphinx(tmp_path):
    from core.assets import ASSETS
    from train.ear_builder import ASSET_NAME, build

    build(tmp_path)
    assert filecmp.cmp(tmp_path / ASSET_NAME, ASSETS / ASSET_NAME, shallow=False)
    assert len(ear_phones()) == N_EAR and SILENCE in ear_phones()


def test_ear_hears_bilabials_in_real_speech(real_items, cache_dir):
    """On the 8 real clips (38 bilabials, measured 37 found, 40 % of frames' argmax right against
    the forced alignment) and on arctic_a0009 against its hand-made reference labels, which do
    not come from pocketsphinx (measured 30 %; 42 phones, chance about 2-5 %)."""
    n, found, acc = _detect(list(real_items.values()))
    assert n == 38 and found >= 0.9 and acc >= 0.33
    x, _ = real_items["arctic_a0009"]
    ref = reference_timeline(cache_dir / "real", "arctic_a0009")
    n, found, acc = _detect([(x, ref)])
    assert n == 2 and found == 1.0 and acc >= 0.25


def test_evidence_follows_the_audio_in_time(real_items):
    """Frame j is centred at j * 10 ms: audio delayed by 10 ms moves the evidence one frame."""
    x, _ = real_items["arctic_a0007"]
    ev = phone_evidence(x).numpy()
    late = phone_evidence(np.concatenate([np.zeros(160, np.float32), x])).numpy()
    inner = slice(20, ev.shape[1] - 20)
    err_aligned = np.abs(late[:, 21:ev.shape[1] - 19] - ev[:, inner]).mean()
    err_same = np.abs(late[:, inner] - ev[:, inner]).mean()
    assert err_aligned < 0.05 < err_same
    assert np.all(ev >= -1.0) and np.all(ev <= 1.0)


def test_channels_pad_with_silence_and_mel_rows_are_unchanged(real_items):
    from core.model import PAD_FRAMES
    from core.pipeline import utterance_mel

    x, _ = real_items["arctic_a0007"]
    plain, eared = utterance_mel(x), utterance_mel(x, ear=True)
    assert eared.shape == (MelConfig.n_mels + N_EAR, plain.shape[1])
    assert torch.equal(eared[:MelConfig.n_mels], plain)
    ear = eared[MelConfig.n_mels:]
    sil = ear_phones().index(SILENCE)
    for cols in (slice(0, PAD_FRAMES), slice(-PAD_FRAMES, None)):
        assert torch.all(ear[sil, cols] == 1.0)
        assert torch.all(torch.cat([ear[:sil, cols], ear[sil + 1:, cols]]) == -1.0)
    speech = ear[:, PAD_FRAMES:PAD_FRAMES + len(x) // 160 + 1]
    assert torch.allclose(speech, phone_evidence(x))
    assert ear_channels(x, 10, 4).shape == (N_EAR, 10)      # longer than the frames: cut


def test_augmentation_and_warps_leave_the_ear_rows_alone():
    from train.data import augment_mel

    gen = torch.Generator().manual_seed(0)
    mel = torch.randn(6, MelConfig.n_mels + N_EAR, 50)
    aug = augment_mel(mel, gen, warp=0.1, freq_masks=4, mask_bins=8)
    assert torch.equal(aug[:, MelConfig.n_mels:], mel[:, MelConfig.n_mels:])
    assert not torch.equal(aug[:, :MelConfig.n_mels], mel[:, :MelConfig.n_mels])
    warped = warp_mel(mel[:1].expand(2, -1, -1), [0.9, 1.1])
    assert torch.equal(warped[:, MelConfig.n_mels:], mel[:1, MelConfig.n_mels:].expand(2, -1, -1))
