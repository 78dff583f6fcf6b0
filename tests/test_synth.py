"""The synthetic corpus generator: format, splits, determinism, resume, bad input."""
import hashlib
import json
import math

import numpy as np
import pytest

from core.rig.phones import PHONES
from train.corpus import Corpus
from train.synth import HELD_OUT_IDENTITIES, Job, _run, generate

HOURS = 0.012   # ~43 s of speech, ~14 sequences
VOICES = ["flite:slt", "flite:kal16", "flite:rms", "flite:awb", "festival:kal", "espeak:en-us",
          "espeak:de+f2", "espeak:fr+m3", "espeak:it", "espeak:es+f2", "festival:ked",
          "espeak:en-029+m7"]


def digest(root):
    h = hashlib.sha256()
    for p in sorted((root / "seq").glob("*")):
        h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    info = generate(out, HOURS, seed=3, workers=2, voice_ids=VOICES, progress=False)
    assert info["hours_made"] >= HOURS
    return out


def test_format(corpus_dir):
    c = Corpus(corpus_dir)
    ids = c.ids()
    assert len(ids) >= 8
    assert c.fps == 30.0 and c.sample_rate == 16000
    seen_voices = set()
    for seq_id in ids:
        s = c.load(seq_id)
        assert s.sample_rate == 16000 and s.audio.ndim == 1 and s.audio.dtype == np.float32
        duration = len(s.audio) / 16000
        assert s.arkit.shape == (math.ceil(duration * 30 - 1e-9), 52)
        assert np.isfinite(s.arkit).all() and s.arkit.min() >= 0 and s.arkit.max() <= 1
        # contiguous canonical timeline covering the audio, silence at both ends
        assert s.phones[0][1] == 0 and abs(s.phones[-1][2] - duration) < 1e-3
        assert all(p in PHONES for p, _, _ in s.phones)
        assert all(abs(a[2] - b[1]) < 1e-4 for a, b in zip(s.phones, s.phones[1:]))
        assert s.phones[0][0] == "SIL" and s.phones[-1][0] == "SIL"
        for key in ("identity", "voice", "language", "text", "augmentation", "seed"):
            assert key in s.meta
        seen_voices.add(s.meta["voice"])
        off = s.offsets()
        assert off.shape == (len(s.arkit), len(s.template), 3) and off.dtype == np.float32
        assert np.abs(off).max() < 0.05                       # metres: centimetres of motion
    assert len(seen_voices) >= 3
    assert c.duration_s() >= HOURS * 3600


def test_split_holds_out_voices_identities_sentences(corpus_dir):
    c = Corpus(corpus_dir)
    split = c.split
    assert set(split["train"]) | set(split["val"]) | set(split["test"]) >= set(c.ids())
    held = split["held_out"]
    for name in ("val", "test"):
        assert held[name]["identities"] == list(HELD_OUT_IDENTITIES[name])
    train_meta = [c.load(i).meta for i in c.ids("train")]
    for name in ("val", "test"):
        for m in train_meta:
            assert m["voice"] not in held[name]["voices"]
            assert m["identity"] not in held[name]["identities"]
            assert m["sentence"] not in held[name]["sentences"]
        for i in c.ids(name):
            m = c.load(i).meta
            assert m["identity"] in held[name]["identities"]
            assert m["sentence"] in held[name]["sentences"]
            assert m["voice"] in held[name]["voices"]


def test_deterministic_and_resumable(corpus_dir, tmp_path):
    """Same seed, one worker instead of two, interrupted halfway: byte-identical sequences."""
    first = digest(corpus_dir)
    out = tmp_path / "again"
    generate(out, HOURS, seed=3, workers=1, voice_ids=VOICES, progress=False)
    assert digest(out) == first
    # simulate an interruption: some sequences gone, one half-written leftover
    seqs = sorted((out / "seq").glob("*.npz"))
    for p in seqs[::2]:
        p.unlink()
    (out / "seq" / f".{seqs[0].stem}.tmp.npz").write_bytes(b"half written")
    assert len(Corpus(out).ids()) == len(seqs) - len(seqs[::2])   # leftovers are not accepted
    info = generate(out, HOURS, seed=3, workers=2, voice_ids=VOICES, progress=False)
    assert info["counts"]["resumed"] == len(seqs) - len(seqs[::2])
    assert info["counts"]["made"] == len(seqs[::2])
    assert not list((out / "seq").glob(".*")), "the leftover was cleared"
    assert digest(out) == first


def test_failed_sentence_is_skipped_and_missing_voice_reported(tmp_path):
    bad = Job(0, "000000", "train", "flite:slt", "en", "en-x", "", "default", 1.0, 1)
    [(job, duration, error)] = _run(([bad], tmp_path, 30.0))
    assert duration is None and "flite:slt" in error
    assert not list(tmp_path.glob("*"))                 # nothing written
    info = generate(tmp_path / "c", 0.002, seed=0, workers=1,
                    voice_ids=["flite:slt", "flite:no-such-voice"], progress=False)
    assert info["missing_voices"] == ["flite:no-such-voice"]
    assert info["counts"]["made"] >= 1
    meta = json.loads((tmp_path / "c" / "corpus.json").read_text())
    assert meta["missing_voices"] == ["flite:no-such-voice"]


def test_other_seed_changes_the_corpus(corpus_dir, tmp_path):
    generate(tmp_path, 0.003, seed=4, workers=2, voice_ids=VOICES, progress=False)
    a = Corpus(corpus_dir).load("000000")
    b = Corpus(tmp_path).load("000000")
    assert (a.meta["text"], a.meta["voice"]) != (b.meta["text"], b.meta["voice"])


def test_festival_batch_failure_fails_each_job_not_the_run(tmp_path):
    jobs = [Job(i, f"{i:06d}", "train", "festival:no-such-voice", "en", "en-x", "Hello there.",
                "default", 1.0, i) for i in range(3)]
    results = _run((jobs, tmp_path, 30.0))
    assert [d for _, d, _ in results] == [None] * 3
    assert all("no-such-voice" in e for _, _, e in results)
    assert not list(tmp_path.glob("*"))
