"""Audio augmentation for 16 kHz mono float32 speech (numpy/scipy only).

Every op takes `x`: float32 (N,) samples in -1..1 at `sr` Hz and returns float32 (N,) in -1..1,
except `tempo`/`speed`, which return (round(N / factor),) samples. Time rule for those two: a
moment at t seconds in the input lies at t / factor seconds in the output, so phone timings
are multiplied by `time_scale = 1 / factor` (WSOLA keeps events within about SEARCH_S of that
line; measured worst 9 ms; speeding up may drop transients shorter than ~5 ms). All filters are zero-phase (sosfiltfilt), so no op other than tempo/speed moves events.

`random_chain(rng, strength)` draws a realistic chain as a JSON-serialisable list of dicts (the
corpus stores it); `apply(x, sr, ops) -> (y, time_scale)` runs such a list. Ops needing
randomness (noise, reverb) carry their own integer `seed`, so `apply` is deterministic given ops.
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np
from scipy import signal

WINDOW_S = 0.040  # WSOLA frame length, seconds (hop is half of it)
SEARCH_S = 0.008  # WSOLA search tolerance, seconds either side of the nominal position


def _f32(x: np.ndarray) -> np.ndarray:
    """Clean result: float32, NaN/inf -> 0, peak-limited to 1 by scaling (keeps SNR, shape)."""
    x = np.nan_to_num(np.asarray(x, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak > 1.0:
        x = x / peak
    return x.astype(np.float32)


def _power(x: np.ndarray) -> float:
    return float(np.mean(np.square(x, dtype=np.float64))) if len(x) else 0.0


def _resample(x: np.ndarray, ratio: float) -> np.ndarray:
    """Resample so that the output has about len(x) * ratio samples (polyphase, rational ratio)."""
    frac = Fraction(ratio).limit_denominator(200)
    return signal.resample_poly(np.asarray(x, np.float64), frac.numerator, frac.denominator)


def _fit(x: np.ndarray, n: int) -> np.ndarray:
    """Trim or zero-pad the end to exactly n samples."""
    return x[:n] if len(x) >= n else np.pad(x, (0, n - len(x)))


# --- loudness ---------------------------------------------------------------------------------
def loudness(x: np.ndarray, sr: int, gain_db: float, clip_drive: float = 0.0) -> np.ndarray:
    """Multiply by 10**(gain_db/20) (dB); soft-clip with tanh when `clip_drive` > 0 (extra
    pre-gain in dB, an overdriven preamp) or whenever the gained peak would exceed 1."""
    y = np.asarray(x, np.float64) * 10 ** (gain_db / 20)
    if clip_drive > 0 or np.max(np.abs(y), initial=0.0) > 1.0:
        y = np.tanh(y * 10 ** (clip_drive / 20))
    return _f32(y)


# --- time and pitch ---------------------------------------------------------------------------
def time_stretch(x: np.ndarray, sr: int, rate: float) -> np.ndarray:
    """WSOLA time-scale modification keeping pitch: (N,) -> (round(N / rate),).

    Periodic-Hann frames of WINDOW_S, 50 % overlap; the frame centred at output time t is read
    around input time t * rate, slid by up to SEARCH_S to best continue (max cross-correlation)
    the audio copied just before it.
    """
    x = np.asarray(x, np.float64)
    n_out = int(round(len(x) / rate))
    win_len = 2 * (int(WINDOW_S * sr) // 2)
    hop, tol = win_len // 2, int(SEARCH_S * sr)
    if abs(rate - 1.0) < 1e-6:
        return _f32(x)
    if len(x) < win_len:  # too short to stretch: plain resampling
        return _f32(_fit(_resample(x, 1.0 / rate), n_out))
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win_len) / win_len)
    front = hop + tol  # pad so that negative input positions (down to -hop - tol) are zeros
    pad = np.pad(x, (front, 2 * win_len + 2 * tol + int(np.ceil(3 * hop * rate))))
    n_frames = n_out // hop + 2
    out = np.zeros((n_frames + 1) * hop + win_len)  # out[i] is output sample i - hop
    prev = -hop  # input position where the last copied frame starts
    for k in range(n_frames):
        nominal = int(round(k * hop * rate)) - hop  # frame centre k*hop <- input k*hop*rate
        pos = nominal
        natural = pad[prev + hop + front: prev + hop + front + win_len]
        if k > 0 and np.dot(natural, natural) > 1e-12:
            lo = max(nominal - tol, -front)
            corr = np.correlate(pad[lo + front: lo + front + win_len + 2 * tol], natural, "valid")
            if np.any(corr > 0):  # tiny penalty on the offset only breaks ties
                pos = lo + int(np.argmax(corr - 1e-9 * np.abs(np.arange(len(corr)) + lo - nominal)))
        out[k * hop: k * hop + win_len] += window * pad[pos + front: pos + front + win_len]
        prev = pos
    return _f32(_fit(out[hop:], n_out))


def tempo(x: np.ndarray, sr: int, factor: float) -> np.ndarray:
    """Speak `factor` times faster (factor > 1 shortens), pitch kept: (N,) -> (round(N/factor),).
    Times map t -> t / factor."""
    return time_stretch(x, sr, factor)


def speed(x: np.ndarray, sr: int, factor: float) -> np.ndarray:
    """Tape-style speed change (tempo and pitch both times `factor`): (N,) -> (~N/factor,).
    Times map t -> t / factor."""
    return _f32(_fit(_resample(x, 1.0 / factor), int(round(len(x) / factor))))


def pitch_shift(x: np.ndarray, sr: int, semitones: float) -> np.ndarray:
    """Shift pitch by `semitones` (f0 times 2**(s/12)), length and timing kept: (N,) -> (N,).
    WSOLA-stretch by the ratio, then resample back to N samples."""
    ratio = 2.0 ** (semitones / 12.0)
    stretched = time_stretch(x, sr, 1.0 / ratio)
    return _f32(_fit(_resample(stretched, 1.0 / ratio), len(x)))


# --- noise ------------------------------------------------------------------------------------
def _shaped(rng: np.random.Generator, n: int, sr: int, gain_of_freq) -> np.ndarray:
    """Gaussian noise (n,) whose amplitude spectrum is multiplied by gain_of_freq(f_hz)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / sr)
    return np.fft.irfft(spec * gain_of_freq(np.maximum(freqs, 20.0)), n)


def _speech_spectrum(f: np.ndarray) -> np.ndarray:
    """Amplitude gain of a long-term speech spectrum: rises to ~500 Hz, -9 dB/octave above 1 kHz."""
    return (f / 500.0) / np.sqrt(1 + (f / 500.0) ** 2) / (1 + (f / 1000.0) ** 1.5)


def make_noise(rng: np.random.Generator, n: int, sr: int, kind: str) -> np.ndarray:
    """Noise (n,) float64 of unit power. kind: white | pink (1/f power) | brown (1/f^2) | babble
    (8 speech-shaped talkers, each gated by random 80-250 ms syllable-like bursts)."""
    if kind == "white":
        y = rng.standard_normal(n)
    elif kind in ("pink", "brown"):
        alpha = 1.0 if kind == "pink" else 2.0
        y = _shaped(rng, n, sr, lambda f: f ** (-alpha / 2))
    elif kind == "babble":
        y = np.zeros(n)
        for _ in range(8):
            env = np.zeros(n)
            pos = int(rng.uniform(0, 0.3) * sr)
            while pos < n:  # syllable-like bursts of 80-250 ms with 20-300 ms gaps
                dur = int(rng.uniform(0.08, 0.25) * sr)
                env[pos: pos + dur] = np.hanning(dur)[: n - pos] * rng.uniform(0.3, 1.0)
                pos += dur + int(rng.uniform(0.02, 0.3) * sr)
            y += env * _shaped(rng, n, sr, _speech_spectrum)
    else:
        raise ValueError(f"unknown noise kind {kind!r}")
    return y / np.sqrt(max(_power(y), 1e-20))


def add_noise(x: np.ndarray, sr: int, snr_db: float, kind: str = "white", seed: int = 0) -> np.ndarray:
    """Add noise so that 10*log10(mean(x^2) / mean(noise^2)) == snr_db (dB, whole-clip power).
    If the sum would exceed 1, signal and noise are scaled together (SNR kept)."""
    noise = make_noise(np.random.default_rng(seed), len(x), sr, kind)
    level = np.sqrt(_power(x) / 10 ** (snr_db / 10))
    return _f32(np.asarray(x, np.float64) + level * noise)


def hum(x: np.ndarray, sr: int, level_db: float, mains_hz: float = 50.0, dc: float = 0.0) -> np.ndarray:
    """Add mains hum (fundamental + 2nd, 3rd harmonics at -6, -12 dB) `level_db` dB relative to
    the signal power, plus a constant DC offset `dc` (full-scale units)."""
    t = np.arange(len(x)) / sr
    h = sum(10 ** (-6 * i / 20) * np.sin(2 * np.pi * mains_hz * (i + 1) * t) for i in range(3))
    h *= np.sqrt(_power(x) * 10 ** (level_db / 10) / max(_power(h), 1e-20))
    return _f32(np.asarray(x, np.float64) + h + dc)


# --- reverb -----------------------------------------------------------------------------------
def room_impulse_response(rng: np.random.Generator, sr: int, rt60: float, drr_db: float = 3.0,
                          n_early: int = 8) -> np.ndarray:
    """Synthetic RIR (round(1.2*rt60*sr),) float64: direct path (1.0 at sample 0), `n_early`
    reflections at 2-40 ms decaying like 1/distance, and a Gaussian tail from 5 ms whose
    amplitude falls 60 dB in `rt60` seconds, scaled so direct/reverberant energy = drr_db dB."""
    n = max(int(round(1.2 * rt60 * sr)), int(0.05 * sr))
    t = np.arange(n) / sr
    tail = rng.standard_normal(n) * np.exp(-3.0 * np.log(10.0) * t / rt60)
    tail *= np.clip((t - 0.005) / 0.010, 0.0, 1.0)  # onset ramp 5-15 ms
    early = np.zeros(n)
    for delay in rng.uniform(0.002, 0.040, n_early):
        early[int(delay * sr)] += rng.choice([-1.0, 1.0]) * 0.6 * (0.002 / delay) ** 0.5
    reverberant = early + tail
    reverberant *= np.sqrt(10 ** (-drr_db / 10) / max(np.sum(reverberant ** 2), 1e-20))
    reverberant[0] += 1.0
    return reverberant


def reverb(x: np.ndarray, sr: int, rt60: float, drr_db: float = 3.0, seed: int = 0) -> np.ndarray:
    """Convolve with `room_impulse_response` (rt60 seconds); output (N,) aligned to the direct
    path and rescaled to the input's power."""
    rir = room_impulse_response(np.random.default_rng(seed), sr, rt60, drr_db)
    y = signal.fftconvolve(np.asarray(x, np.float64), rir)[: len(x)]
    return _f32(y * np.sqrt(_power(x) / max(_power(y), 1e-20)))


# --- channel / band-limiting ------------------------------------------------------------------
def telephone(x: np.ndarray, sr: int, low_hz: float = 300.0, high_hz: float = 3400.0,
              mulaw: bool = False) -> np.ndarray:
    """Telephone channel: 6th-order Butterworth band-pass low_hz..high_hz (zero-phase), optionally
    8-bit mu-law (G.711-like) quantisation."""
    sos = signal.butter(6, [low_hz, high_hz], btype="bandpass", fs=sr, output="sos")
    y = signal.sosfiltfilt(sos, np.asarray(x, np.float64))
    if mulaw:
        mu = 255.0
        y = np.clip(y, -1, 1)
        c = np.round(np.sign(y) * np.log1p(mu * np.abs(y)) / np.log1p(mu) * 127) / 127
        y = np.sign(c) * np.expm1(np.abs(c) * np.log1p(mu)) / mu
    return _f32(y)


def source_8k(x: np.ndarray, sr: int) -> np.ndarray:
    """Recording made at 8 kHz: resample to 8 kHz and back (nothing left above ~4 kHz)."""
    y = _resample(_resample(x, 8000.0 / sr), sr / 8000.0)
    return _f32(_fit(y, len(x)))


def codec(x: np.ndarray, sr: int, cutoff_hz: float = 5500.0, floor_db: float = -40.0) -> np.ndarray:
    """Lossy-codec-like: steep low-pass at cutoff_hz, then STFT bins (32 ms frames) more than
    |floor_db| below their frame's peak are zeroed (the 'spectral holes' of low-bitrate MP3)."""
    y = np.asarray(x, np.float64)
    if cutoff_hz < sr / 2 * 0.98:
        y = signal.sosfiltfilt(signal.butter(10, cutoff_hz, fs=sr, output="sos"), y)
    nper = int(0.032 * sr)
    if len(y) > nper:
        _, _, z = signal.stft(y, sr, nperseg=nper)
        mag = np.abs(z)
        z[mag < mag.max(axis=0, keepdims=True) * 10 ** (floor_db / 20)] = 0
        y = _fit(signal.istft(z, sr, nperseg=nper)[1], len(x))
    return _f32(y)


# --- chains -----------------------------------------------------------------------------------
OPS = {"loudness": loudness, "tempo": tempo, "speed": speed, "pitch": pitch_shift,
       "noise": add_noise, "hum": hum, "reverb": reverb, "telephone": telephone,
       "source_8k": source_8k, "codec": codec}


def random_chain(rng: np.random.Generator, strength: float = 0.5) -> list[dict]:
    """Draw a realistic augmentation chain; strength 0..1 scales probabilities and ranges.

    Returns a JSON-serialisable list of {"op": name, **kwargs} in application order: voice
    (pitch, tempo or speed) -> room (reverb) -> environment (noise, hum/DC) -> gain/clipping -> channel.
    """
    s = float(np.clip(strength, 0.0, 1.0))
    ops: list[dict] = []

    def p(prob: float) -> bool:
        return bool(rng.random() < prob * s)

    def seed() -> int:
        return int(rng.integers(2**31 - 1))

    if p(0.5):
        ops.append({"op": "pitch", "semitones": float(rng.uniform(-3, 3) * s)})
    if p(0.5):  # tempo keeps pitch; tape-style speed (30 %) also moves pitch and formants
        ops.append({"op": "speed" if rng.random() < 0.3 else "tempo",
                    "factor": float(np.exp(rng.uniform(-1, 1) * 0.2 * s))})
    if p(0.5):
        ops.append({"op": "reverb", "rt60": float(rng.uniform(0.15, 0.2 + 0.8 * s)),
                    "drr_db": float(rng.uniform(-3, 10)), "seed": seed()})
    if p(0.7):
        kind = str(rng.choice(["white", "pink", "brown", "babble"]))
        ops.append({"op": "noise", "kind": kind, "snr_db": float(rng.uniform(40 - 35 * s, 40)),
                    "seed": seed()})
    if p(0.2):
        ops.append({"op": "hum", "level_db": float(rng.uniform(-40, -15)),
                    "mains_hz": float(rng.choice([50.0, 60.0])), "dc": float(rng.uniform(-0.05, 0.05))})
    if p(0.8):
        ops.append({"op": "loudness", "gain_db": float(rng.uniform(-20, 10) * s),
                    "clip_drive": float(rng.uniform(0, 12)) if p(0.15) else 0.0})
    if p(0.4):
        channel = str(rng.choice(["telephone", "source_8k", "codec"]))
        if channel == "telephone":
            ops.append({"op": "telephone", "mulaw": bool(rng.random() < 0.5)})
        elif channel == "codec":
            ops.append({"op": "codec", "cutoff_hz": float(rng.choice([4000.0, 5500.0, 7000.0])),
                        "floor_db": float(rng.uniform(-50, -30))})
        else:
            ops.append({"op": "source_8k"})
    return ops


def apply(x: np.ndarray, sr: int, ops: list[dict]) -> tuple[np.ndarray, float]:
    """Run `ops` (from random_chain, or hand-written) on x: float32 (N,) at sr Hz.

    Returns (y, time_scale): y float32 (M,) in -1..1 with M == N unless tempo/speed ran, and
    time_scale = product of 1/factor over those ops (multiply input times in seconds by it).
    """
    y = _f32(x)
    time_scale = 1.0
    for op in ops:
        kwargs = {k: v for k, v in op.items() if k != "op"}
        if op["op"] not in OPS:
            raise ValueError(f"unknown augmentation op {op['op']!r}")
        y = OPS[op["op"]](y, sr, **kwargs)
        if op["op"] in ("tempo", "speed"):
            time_scale /= float(op["factor"])
    return np.clip(y, -1.0, 1.0).astype(np.float32), time_scale
