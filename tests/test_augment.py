"""train.augment on real synthetic speech (espeak-ng) and measured test signals."""
import json
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf
from scipy import signal

from train import augment as A

SR = 16000


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> np.ndarray:
    """~4 s of espeak-ng speech at 16 kHz, float32, peak 0.5 (harmonic babble if no espeak-ng)."""
    if shutil.which("espeak-ng"):
        path = tmp_path_factory.mktemp("speech") / "s.wav"
        subprocess.run(["espeak-ng", "-w", str(path), "Pack my box with five dozen liquor jugs. "
                        "The beige hue on the waters of the loch impressed all."], check=True)
        x, rate = sf.read(path, dtype="float64")
        x = signal.resample_poly(x, SR, rate)
    else:  # pragma: no cover - fallback keeps the tests meaningful without espeak-ng
        t = np.arange(4 * SR) / SR
        f0 = 120 + 30 * np.sin(2 * np.pi * 0.7 * t)
        x = sum(np.sin(2 * np.pi * np.cumsum(f0 * k) / SR) / k for k in range(1, 12))
        x *= (np.sin(2 * np.pi * 3 * t) > 0)
    return (0.5 * x / np.max(np.abs(x))).astype(np.float32)


def measured_snr(clean: np.ndarray, noisy: np.ndarray) -> float:
    """SNR in dB after removing any common gain (least-squares projection on the clean)."""
    c, y = clean.astype(np.float64), noisy.astype(np.float64)
    gain = np.dot(y, c) / np.dot(c, c)
    return 10 * np.log10(np.mean((gain * c) ** 2) / np.mean((y - gain * c) ** 2))


def peak_frequency(x: np.ndarray, lo: float, hi: float) -> float:
    """Frequency (Hz) of the largest spectral peak in lo..hi, 1 M-point zero-padded FFT."""
    seg = x.astype(np.float64) * np.hanning(len(x))
    spec = np.abs(np.fft.rfft(seg, 1 << 20))
    freqs = np.fft.rfftfreq(1 << 20, 1 / SR)
    spec[(freqs < lo) | (freqs > hi)] = 0
    return float(freqs[np.argmax(spec)])


def schroeder_rt60(h: np.ndarray) -> float:
    """RT60 (s) from the backward-integrated energy decay, fitted -5..-25 dB (T20 x 3)."""
    energy = np.cumsum(h[::-1].astype(np.float64) ** 2)[::-1]
    db = 10 * np.log10(energy / energy[0] + 1e-30)
    i5, i25 = np.argmax(db <= -5), np.argmax(db <= -25)
    slope = np.polyfit(np.arange(i5, i25) / SR, db[i5:i25], 1)[0]
    return -60.0 / slope


@pytest.mark.parametrize("kind", ["white", "pink", "brown", "babble"])
@pytest.mark.parametrize("snr_db", [0.0, 10.0, 30.0])
def test_noise_snr_matches_request(speech, kind, snr_db):
    noisy = A.add_noise(speech, SR, snr_db, kind=kind, seed=1)
    assert noisy.dtype == np.float32 and noisy.shape == speech.shape
    assert np.max(np.abs(noisy)) <= 1.0
    assert abs(measured_snr(speech, noisy) - snr_db) < 0.5


def test_noise_colours_have_their_slopes():
    rng = np.random.default_rng(0)
    for kind, expected_db_per_octave in (("white", 0.0), ("pink", -3.0), ("brown", -6.0)):
        f, p = signal.welch(A.make_noise(rng, 8 * SR, SR, kind), SR, nperseg=4096)
        band = (f > 100) & (f < 6000)
        slope = np.polyfit(np.log2(f[band]), 10 * np.log10(p[band]), 1)[0]
        assert abs(slope - expected_db_per_octave) < 0.6, (kind, slope)
    f, p = signal.welch(A.make_noise(rng, 8 * SR, SR, "babble"), SR, nperseg=4096)
    assert f[np.argmax(p)] < 1500  # speech-shaped: energy peaks low


def test_telephone_band(speech):
    white = np.random.default_rng(2).standard_normal(4 * SR).astype(np.float32) * 0.1
    for x in (white, speech):
        for mulaw in (False, True):
            y = A.telephone(x, SR, mulaw=mulaw).astype(np.float64)
            power = np.abs(np.fft.rfft(y)) ** 2
            freqs = np.fft.rfftfreq(len(y), 1 / SR)
            assert power[freqs < 200].sum() / power.sum() < 1e-3
            assert power[freqs > 4000].sum() / power.sum() < 2e-3
    for y, cutoff in ((A.source_8k(white, SR), 4200), (A.codec(white, SR, 5500, -40), 6000)):
        power = np.abs(np.fft.rfft(y.astype(np.float64))) ** 2
        freqs = np.fft.rfftfreq(len(y), 1 / SR)
        assert len(y) == len(white) and power[freqs > cutoff].sum() / power.sum() < 1e-2


@pytest.mark.parametrize("factor", [0.8, 0.9, 1.15, 1.3])
def test_tempo_length_and_time_map(speech, factor):
    """10 ms clicks on speech land at t * time_scale (found with a matched filter)."""
    click = np.random.default_rng(0).uniform(-0.8, 0.8, 160).astype(np.float32)
    for click_s in (0.6, 1.234, 2.5):
        x = speech * 0.4
        x[int(click_s * SR): int(click_s * SR) + len(click)] += click
        y, time_scale = A.apply(x, SR, [{"op": "tempo", "factor": factor}])
        assert len(y) == round(len(x) / factor)
        assert time_scale == pytest.approx(1 / factor)
        found_s = np.argmax(np.abs(np.correlate(y, click, "valid"))) / SR
        assert abs(found_s - click_s * time_scale) < 0.012  # WSOLA search tolerance is 8 ms
    # pitch kept: the harmonic content does not move with tempo
    tone = np.sin(2 * np.pi * 220 * np.arange(2 * SR) / SR).astype(np.float32) * 0.5
    assert peak_frequency(A.tempo(tone, SR, factor), 100, 400) == pytest.approx(220, rel=0.005)


def test_speed_changes_pitch_and_time_together():
    tone = np.sin(2 * np.pi * 200 * np.arange(2 * SR) / SR).astype(np.float32) * 0.5
    y, time_scale = A.apply(tone, SR, [{"op": "speed", "factor": 1.1}])
    assert len(y) == round(len(tone) / 1.1) and time_scale == pytest.approx(1 / 1.1)
    assert peak_frequency(y, 100, 400) == pytest.approx(220, rel=0.005)


@pytest.mark.parametrize("semitones", [-4.0, -1.0, 2.0, 5.0])
def test_pitch_shift_moves_f0_keeps_length(semitones):
    t = np.arange(2 * SR) / SR
    tone = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 6))
    tone = (0.3 * tone).astype(np.float32)
    y = A.pitch_shift(tone, SR, semitones)
    assert y.shape == tone.shape and y.dtype == np.float32
    expected = 150 * 2 ** (semitones / 12)
    measured = peak_frequency(y[SR // 4: -SR // 4], 80, 400)
    assert measured == pytest.approx(expected, rel=0.005)


def test_pitch_shift_keeps_timing(speech):
    click = np.random.default_rng(1).uniform(-0.8, 0.8, 160).astype(np.float32)
    x = speech * 0.4
    x[2 * SR: 2 * SR + len(click)] += click
    for semitones in (-3.0, 3.0):
        y = A.pitch_shift(x, SR, semitones)
        squeezed = signal.resample(click, round(len(click) * 2 ** (-semitones / 12)))
        found_s = np.argmax(np.abs(signal.correlate(y, squeezed, "valid"))) / SR
        assert len(y) == len(x) and abs(found_s - 2.0) < 0.012


@pytest.mark.parametrize("rt60", [0.25, 0.6, 1.0])
def test_reverb_rt60(rt60):
    estimates = [schroeder_rt60(A.room_impulse_response(np.random.default_rng(s), SR, rt60))
                 for s in range(3)]
    assert np.median(estimates) == pytest.approx(rt60, rel=0.1)
    click = np.zeros(2 * SR, np.float32)
    click[0] = 0.5
    y = A.reverb(click, SR, rt60, seed=4)
    assert y.shape == click.shape and np.max(np.abs(y)) <= 1.0
    assert schroeder_rt60(y[: int(1.2 * rt60 * SR)]) == pytest.approx(rt60, rel=0.15)


def test_reverb_keeps_speech_aligned(speech):
    y = A.reverb(speech, SR, 0.5, drr_db=6, seed=0)
    lags = signal.correlation_lags(len(y), len(speech))
    xc = signal.correlate(y.astype(np.float64), speech.astype(np.float64))
    assert abs(lags[np.argmax(xc)]) <= 2  # direct path at sample 0


def test_loudness_hum_dc(speech):
    assert A.loudness(speech, SR, -6.0) == pytest.approx(speech * 10 ** (-6 / 20), abs=1e-6)
    loud = A.loudness(speech, SR, 20.0)
    assert np.max(np.abs(loud)) <= 1.0 and np.mean(np.abs(loud) > 0.9) > 0.01  # soft-clipped
    y = A.hum(speech * 0.5, SR, level_db=-10.0, mains_hz=60.0, dc=0.02)
    assert np.mean(y) == pytest.approx(np.mean(speech * 0.5) + 0.02, abs=2e-3)
    assert abs(peak_frequency(y - speech * 0.5, 30, 100) - 60.0) < 0.5


def test_random_chain_deterministic_and_json(speech):
    ops_a = A.random_chain(np.random.default_rng(7), strength=0.9)
    ops_b = A.random_chain(np.random.default_rng(7), strength=0.9)
    assert ops_a == ops_b
    restored = json.loads(json.dumps(ops_a))
    y1, s1 = A.apply(speech, SR, ops_a)
    y2, s2 = A.apply(speech, SR, restored)
    assert np.array_equal(y1, y2) and s1 == s2
    assert A.random_chain(np.random.default_rng(0), strength=0.0) == []
    chains = [json.dumps(A.random_chain(np.random.default_rng(s), 0.9)) for s in range(10)]
    assert len(set(chains)) == 10


def test_random_chains_keep_invariants(speech):
    seen = set()
    for seed in range(25):
        ops = A.random_chain(np.random.default_rng(seed), strength=1.0)
        seen.update(op["op"] for op in ops)
        y, time_scale = A.apply(speech, SR, ops)
        assert y.dtype == np.float32 and np.all(np.isfinite(y))
        assert np.max(np.abs(y)) <= 1.0
        assert abs(len(y) - len(speech) * time_scale) <= 2
    assert {"pitch", "tempo", "reverb", "noise", "loudness"} <= seen


def test_silence_and_short_input():
    silence = np.zeros(SR, np.float32)
    short = np.random.default_rng(0).uniform(-0.5, 0.5, 300).astype(np.float32)
    ops = [{"op": "pitch", "semitones": 2.0}, {"op": "tempo", "factor": 1.1},
           {"op": "reverb", "rt60": 0.3, "seed": 1}, {"op": "noise", "kind": "pink", "snr_db": 10},
           {"op": "telephone"}, {"op": "codec"}, {"op": "source_8k"}, {"op": "hum", "level_db": -20}]
    for x in (silence, short):
        y, time_scale = A.apply(x, SR, ops)
        assert np.all(np.isfinite(y)) and abs(len(y) - round(len(x) / 1.1)) <= 1
    with pytest.raises(ValueError, match="unknown"):
        A.apply(silence, SR, [{"op": "flanger"}])
