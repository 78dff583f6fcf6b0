"""core.audio on real speech: reading all formats, checks and their errors, resampling, log-mel."""
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from core import audio
from core.audio import (MODEL_RATE, AudioError, MelConfig, check_samples, load_speech, log_mel,
                        mel_filterbank, normalize_utterance, read_audio, resample)

CODEC2_16K = Path("/usr/share/codec2/raw/speech_orig_16k.wav")  # Harvard sentences, 10.8 s
CODEC2_8K = Path("/usr/share/codec2/wav/hts1a.wav")  # 3 s at 8 kHz


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Small tensors: one thread is as fast, and on a busy machine 2+ threads spin and crawl."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def speech(clips):
    """ARCTIC a0009: float32 (S,) at 16 kHz, 3.1 s of real 16-bit speech."""
    x, sr = read_audio(clips["arctic_a0009"][0])
    assert sr == MODEL_RATE and x.dtype == np.float32 and x.ndim == 1
    return x


def _corr(a, b):
    n = min(len(a), len(b))
    return float(np.corrcoef(a[:n], b[:n])[0, 1])


def _one_line_error(call, name):
    with pytest.raises(AudioError) as info:
        call()
    msg = str(info.value)
    assert isinstance(info.value, ValueError) and "\n" not in msg and name in msg and ";" in msg
    return msg


# --- reading ------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt,subtype,ext", [
    ("WAV", "PCM_16", "wav"), ("WAV", "PCM_24", "wav"), ("WAV", "PCM_32", "wav"),
    ("WAV", "FLOAT", "wav"), ("FLAC", "PCM_16", "flac"), ("FLAC", "PCM_24", "flac")])
def test_read_lossless_formats(tmp_path, speech, fmt, subtype, ext):
    path = tmp_path / f"speech.{ext}"
    sf.write(path, speech, MODEL_RATE, format=fmt, subtype=subtype)
    x, sr = read_audio(path)
    assert sr == MODEL_RATE and x.dtype == np.float32 and x.shape == speech.shape
    np.testing.assert_array_equal(x, speech)  # 16-bit source: every format holds it exactly


def test_read_ogg_vorbis(tmp_path, speech):
    path = tmp_path / "speech.ogg"
    sf.write(path, speech, MODEL_RATE, format="OGG", subtype="VORBIS")
    x, sr = read_audio(path)
    assert sr == MODEL_RATE and abs(len(x) - len(speech)) <= 64
    assert _corr(x, speech) > 0.95  # lossy


@pytest.mark.parametrize("channels", [2, 4])
def test_read_multichannel_is_mean(tmp_path, speech, channels, monkeypatch):
    monkeypatch.setattr(audio, "READ_BLOCK", 1000)  # several blocks, a short last one
    gains = np.linspace(1.0, 0.25, channels, dtype=np.float32)
    path = tmp_path / "stereo.wav"
    sf.write(path, speech[:, None] * gains, MODEL_RATE, subtype="FLOAT")
    x, _ = read_audio(path)
    np.testing.assert_allclose(x, speech * gains.mean(), atol=1e-6)


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_other_rates_round_trip(tmp_path, speech, rate):
    path = tmp_path / f"speech_{rate}.wav"
    sf.write(path, resample(speech, MODEL_RATE, rate), rate, subtype="PCM_16")
    x, sr = read_audio(path)
    assert sr == rate and len(x) == -(-len(speech) * rate // MODEL_RATE)
    y = load_speech(path)
    assert y.dtype == np.float32 and abs(len(y) - len(speech)) <= 1
    assert _corr(y, speech) > (0.95 if rate == 8000 else 0.999)  # 8 kHz drops 3.8-8 kHz


def test_load_speech_real_8k_file_has_no_images():
    if not CODEC2_8K.is_file():
        pytest.skip("codec2-examples not installed")
    y = load_speech(CODEC2_8K)
    assert len(y) == 2 * sf.info(str(CODEC2_8K)).frames
    power = log_mel(y).double().exp()
    centre_hz = mel_filterbank().argmax(dim=1).numpy() * MODEL_RATE / MelConfig.n_fft
    above, below = power[centre_hz > 4300].sum(), power[centre_hz < 3700].sum()
    assert 10 * torch.log10(above / below) < -50  # 4-8 kHz images of the 8 kHz file suppressed


def test_load_speech_array_and_path_agree(tmp_path, speech):
    stereo = (np.stack([speech, speech], axis=1) * 32767).astype(np.int16)
    path = tmp_path / "s.wav"
    sf.write(path, stereo, 22050)
    from_array = load_speech(stereo, 22050)
    np.testing.assert_allclose(load_speech(path), from_array, atol=1e-4)
    np.testing.assert_allclose(load_speech(speech, MODEL_RATE), speech)


# --- errors -------------------------------------------------------------------------------------

def _text_as_wav(p):
    p.write_text("this is not audio\n")


def _empty_wav(p):
    sf.write(p, np.zeros(0, np.float32), MODEL_RATE)


def _nan_wav(p):
    x = np.full(4000, 0.1, np.float32)
    x[1234] = np.nan
    sf.write(p, x, MODEL_RATE, subtype="FLOAT")


def _rate_2k(p):
    sf.write(p, np.full(4000, 0.1, np.float32), 2000)


def _two_seconds(p):
    sf.write(p, np.full(32000, 0.1, np.float32), MODEL_RATE)


@pytest.mark.parametrize("make,expect", [(None, "not found"), (_text_as_wav, "cannot read audio"),
                                         (_empty_wav, "contains no audio"),
                                         (_nan_wav, "NaN"), (_rate_2k, "2000 Hz"),
                                         (_two_seconds, "limit")])
def test_file_errors(tmp_path, monkeypatch, make, expect):
    monkeypatch.setattr(audio, "MAX_SECONDS", 1.5)
    path = tmp_path / "speech_input.wav"
    if make is not None:
        make(path)
    assert expect in _one_line_error(lambda: read_audio(path), "speech_input.wav")
    assert expect in _one_line_error(lambda: load_speech(path), "speech_input.wav")


@pytest.mark.parametrize("samples,rate,expect", [
    (np.zeros(0, np.float32), 16000, "no audio"),
    (np.array([0.0, np.inf, 0.1]), 16000, "NaN"),
    (np.zeros((2, 16000), np.float32), 16000, "channels"),
    (np.zeros((10, 2, 2), np.float32), 16000, "shape"),
    (np.zeros(100, np.float32), 2000, "2000 Hz"),
    (np.zeros(100, np.float32), 16000.5, "whole number"),
    (np.array(["a", "b"]), 16000, "dtype")])
def test_array_errors(samples, rate, expect):
    assert expect in _one_line_error(lambda: check_samples(samples, rate), "audio array")


def test_array_without_rate():
    _one_line_error(lambda: load_speech(np.zeros(100, np.float32)), "sample_rate")


def test_check_samples_scales_ints(speech):
    i16 = np.round(speech * 32768).clip(-32768, 32767).astype(np.int16)
    np.testing.assert_allclose(check_samples(i16, 16000), speech, atol=1 / 32768)
    i32 = i16.astype(np.int32) << 16
    np.testing.assert_allclose(check_samples(i32, 16000), speech, atol=1 / 32768)
    st = check_samples(np.stack([i16, np.zeros_like(i16)], axis=1), 16000)
    assert st.dtype == np.float32 and st.shape == speech.shape
    np.testing.assert_allclose(st, check_samples(i16, 16000) / 2, atol=1e-7)


# --- resampling ---------------------------------------------------------------------------------

def _fit_sine(y, rate, freq):
    """Least-squares amplitude of a ``freq`` Hz sine in y, and the relative residual."""
    t = np.arange(len(y)) / rate
    basis = np.stack([np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t)], axis=1)
    coef, *_ = np.linalg.lstsq(basis, y, rcond=None)
    amp = float(np.hypot(*coef))
    return amp, float(np.sqrt(np.mean((y - basis @ coef) ** 2)) / amp)


@pytest.mark.parametrize("rate", [8000, 11025, 22050, 44100, 48000, 96000])
def test_resample_keeps_tone(rate):
    for freq in (440.0, 1000.0, 3000.0):
        x = (0.5 * np.sin(2 * np.pi * freq * np.arange(rate) / rate)).astype(np.float32)
        y = resample(x, rate, MODEL_RATE)
        assert y.dtype == np.float32 and len(y) == -(-rate * MODEL_RATE // rate)
        amp, resid = _fit_sine(y[400:-400], MODEL_RATE, freq)  # away from the edges
        assert amp == pytest.approx(0.5, rel=0.01) and resid < 0.01


def test_resample_removes_tone_above_nyquist():
    x = np.sin(2 * np.pi * 9000 * np.arange(48000) / 48000).astype(np.float32)
    y = resample(x, 48000, MODEL_RATE)[400:-400]
    assert 20 * np.log10(np.sqrt(np.mean(y ** 2)) / np.sqrt(0.5)) < -40


@pytest.mark.parametrize("rate", [44100, 11025, 48000])
def test_resample_chunking_and_lengths(speech, rate):
    x = resample(speech, MODEL_RATE, rate)
    whole = resample(x, rate, MODEL_RATE, chunk=1 << 30)
    np.testing.assert_allclose(resample(x, rate, MODEL_RATE, chunk=20011), whole, atol=1e-6)
    for n in (1, 2, 3, 441, 1000):
        assert len(resample(x[:n], rate, MODEL_RATE)) == -(-n * MODEL_RATE // rate)


@pytest.mark.parametrize("rate", [22254, 7999])  # gcd-reduced up/down too big for a conv bank
def test_resample_awkward_rates(rate):
    x = (0.5 * np.sin(2 * np.pi * 1000 * np.arange(rate) / rate)).astype(np.float32)
    y = resample(x, rate, MODEL_RATE)
    assert len(y) == MODEL_RATE
    amp, resid = _fit_sine(y[400:-400], MODEL_RATE, 1000)
    assert amp == pytest.approx(0.5, rel=0.01) and resid < 0.01
    np.testing.assert_allclose(resample(x, rate, MODEL_RATE, chunk=5003), y, atol=1e-6)


def test_resample_direct_path_equals_polyphase(speech, monkeypatch):
    x = resample(speech, MODEL_RATE, 44100)
    conv = resample(x, 44100, MODEL_RATE)
    monkeypatch.setattr(audio, "MAX_BANK", 0)  # force the per-sample gather path
    np.testing.assert_allclose(resample(x, 44100, MODEL_RATE), conv, atol=1e-5)


def test_resample_same_rate_copies(speech):
    y = resample(speech, MODEL_RATE, MODEL_RATE)
    assert y is not speech and y.dtype == np.float32
    np.testing.assert_array_equal(y, speech)


# --- log-mel ------------------------------------------------------------------------------------

def test_mel_filterbank_shape_and_range():
    cfg = MelConfig()
    fb = mel_filterbank(cfg)
    assert fb.shape == (80, 257) and fb.dtype == torch.float32
    hz = np.arange(257) * cfg.sample_rate / cfg.n_fft
    assert (fb.sum(dim=1) > 0).all() and float(fb.max()) <= 1.0
    assert float(fb[:, (hz < cfg.f_min) | (hz > cfg.f_max)].abs().max()) == 0.0
    assert (np.diff(fb.argmax(dim=1).numpy()) >= 0).all()  # centres rise with the index


@pytest.mark.parametrize("n", [1, 159, 160, 16000, 16001])
def test_log_mel_frame_count(n):
    m = log_mel(np.zeros(n, np.float32))
    assert m.shape == (80, n // 160 + 1) and m.dtype == torch.float32
    assert torch.allclose(m, torch.full_like(m, np.log(MelConfig.log_floor)))


def test_log_mel_matches_stft_and_chunking(speech):
    cfg = MelConfig()
    x = torch.from_numpy(speech)
    spec = torch.stft(x, cfg.n_fft, cfg.hop_length, cfg.win_length, torch.hann_window(400),
                      center=True, pad_mode="constant", return_complex=True)
    ref = torch.log(mel_filterbank(cfg) @ spec.abs() ** 2 + cfg.log_floor)
    whole = log_mel(speech)
    torch.testing.assert_close(whole, ref, atol=1e-4, rtol=0)
    torch.testing.assert_close(log_mel(x, chunk_frames=37), whole, atol=1e-4, rtol=0)


def test_log_mel_timing_and_pitch():
    x = np.zeros(32000, np.float32)
    x[16000] = 1.0  # click at 1.0 s
    assert int(log_mel(x).exp().sum(dim=0).argmax()) == 100  # frame j is centred at j * 10 ms
    tone = np.sin(2 * np.pi * 1000 * np.arange(16000) / 16000).astype(np.float32)
    peak = int(log_mel(tone)[:, 50].argmax())
    centres = mel_filterbank().argmax(dim=1).numpy() * 16000 / 512
    assert abs(centres[peak] - 1000) < 40


@pytest.mark.parametrize("gain", [0.1, 3.0])
def test_normalize_ignores_gain(clips, gain):
    for path in [clips["arctic_a0009"][0], CODEC2_16K]:
        if not Path(path).is_file():
            continue
        x = load_speech(path)
        ref = normalize_utterance(log_mel(x))
        assert float((normalize_utterance(log_mel(x * gain)) - ref).abs().max()) < 1e-3


def test_normalize_statistics_and_silence(speech):
    logmel = log_mel(speech)
    z = normalize_utterance(logmel)
    assert z.shape == logmel.shape and torch.isfinite(z).all()
    assert float(z.mean(dim=1).abs().max()) < 0.5 and 0.5 < float(z.std()) < 1.5
    padded = log_mel(np.concatenate([speech, np.zeros(10 * 16000, np.float32)]))
    zp = normalize_utterance(padded)  # 10 s of digital silence do not shift the statistics
    torch.testing.assert_close(zp[:, :z.shape[1] - 2], z[:, :-2], atol=1e-4, rtol=0)
    silent = normalize_utterance(log_mel(np.zeros(16000, np.float32)))
    assert silent.shape == (80, 101) and float(silent.abs().max()) == 0.0
