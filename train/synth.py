"""Synthetic talking-head corpus: TTS voices with exact phone timings -> rig -> face motion.

``python3 -m train synth --hours H --out DIR [--seed S] [--workers N] [--fps 30]``

Every sequence is one job ``i`` whose content depends only on ``(seed, i)``: its split, voice,
identity, sentence, leading/trailing silence, augmentation chain and rig style. So a corpus is
deterministic from its seed whatever the number of workers, and an interrupted run resumes by
skipping the jobs whose ``.npz`` already exists. Jobs run in a pool of worker processes, one
per core; festival jobs of one voice and rate share one festival process. Format:
``train/corpus.py``.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

from core.arkit import ARKIT_NAMES
from core.assets import load_default_head
from core.rig import rig_weights
from train import augment
from train.corpus import FORMAT, VERSION, write_sequence

SAMPLE_RATE = 16000
MEAN_SEQ_S = 3.8             # planning estimate; the generator tops up until the hours are met
SPLIT_SHARE = {"val": 0.08, "test": 0.08}
HELD_OUT_IDENTITIES = {"val": ("girl",), "test": ("man_long",)}
SENTENCE_HOLDOUT = {"val": 0.06, "test": 0.06}
AUGMENT_SHARE = 0.7          # share of sequences that get an augmentation chain
# Whole voices held out for validation and test: spread over engines, accents and languages.
HELD_OUT_VOICES = {
    "val": ("flite:awb", "espeak:en-gb-x-rp+f4", "espeak:fr+m3", "espeak:es+f2"),
    "test": ("flite:rms", "festival:ked", "espeak:en-029+m7", "espeak:en-us-nyc+f2",
             "espeak:de+f4", "espeak:it"),
}
# Share of sequences per voice family (espeak has ~90 voices, flite and festival 8 together).
FAMILY_SHARE = {"flite": 0.25, "festival": 0.2, "espeak-en": 0.3, "espeak-other": 0.25}
# TTS speed factors (natural phone durations, unlike tempo); a few levels, so that festival
# jobs of one voice and rate can share one festival process (8x cheaper than one each)
SPEAKING_RATES = (0.82, 0.9, 1.0, 1.1, 1.22)
FESTIVAL_BATCH = 8


@dataclass(frozen=True)
class Job:
    index: int
    seq_id: str
    split: str
    voice: str
    language: str
    sentence: str
    text: str
    identity: str
    rate: float
    seed: int


def sentence_split(sentence_id: str) -> str:
    """Stable split of a sentence id: 'val', 'test' or 'train'."""
    from train.sentences import split_of
    return split_of(sentence_id, SENTENCE_HOLDOUT["val"], SENTENCE_HOLDOUT["test"])


def text_language(voice_language: str) -> str:
    """The sentence generator's language for a voice's language tag ('en-gb-x-rp' -> 'en',
    'pt-br' -> 'pt')."""
    return "en" if voice_language.startswith("en") else voice_language.split("-")[0]


def voice_splits(voices: list) -> dict:
    """Hold out whole voices: for each split a few voices, spread over engines and languages."""
    held = {s: [v for v in HELD_OUT_VOICES[s] if v in voices] for s in ("val", "test")}
    taken = set(held["val"]) | set(held["test"])
    held["train"] = [v for v in voices if v not in taken]
    return held


def plan_jobs(seed: int, start: int, count: int, voices: dict, languages: dict,
              sentences: dict, identities: list) -> list:
    """Jobs ``start .. start+count-1``. voices: split -> voice ids; languages: voice -> language;
    sentences: language -> split -> [(sentence_id, text)]; identities: all identity names."""
    id_split = {s: list(HELD_OUT_IDENTITIES[s]) for s in ("val", "test")}
    id_split["train"] = [n for n in identities if n not in id_split["val"] + id_split["test"]]
    jobs = []
    for i in range(start, start + count):
        rng = np.random.default_rng([seed, i])
        u = rng.random()
        split = "val" if u < SPLIT_SHARE["val"] else (
            "test" if u < SPLIT_SHARE["val"] + SPLIT_SHARE["test"] else "train")
        pool = voices[split] or voices["train"]
        voice = _pick_voice(rng, pool, languages)
        lang = languages[voice]
        sents = sentences[lang][split] or sentences[lang]["train"]
        sentence_id, text = sents[int(rng.integers(len(sents)))]
        ident = id_split[split][int(rng.integers(len(id_split[split])))]
        rate = SPEAKING_RATES[int(rng.integers(len(SPEAKING_RATES)))]
        jobs.append(Job(i, f"{i:06d}", split, voice, lang, sentence_id, text, ident, rate,
                        int(rng.integers(2**31 - 1))))
    return jobs


def voice_family(voice: str, language: str) -> str:
    engine = voice.split(":", 1)[0]
    if engine == "espeak":
        return "espeak-en" if language.startswith("en") else "espeak-other"
    return engine


def _pick_voice(rng, pool: list, languages: dict) -> str:
    """A voice from ``pool``: first a family by FAMILY_SHARE (among families present), then a
    voice of that family uniformly."""
    families: dict = {}
    for v in pool:
        families.setdefault(voice_family(v, languages[v]), []).append(v)
    names = sorted(families)
    share = np.array([FAMILY_SHARE[n] for n in names])
    members = families[names[int(rng.choice(len(names), p=share / share.sum()))]]
    return members[int(rng.integers(len(members)))]


def pad_timeline(phones, lead, total):
    """Shift phones by ``lead`` s, SIL before, SIL after up to ``total`` s; merge SIL runs."""
    out = [("SIL", 0.0, lead)] + [(p, s + lead, e + lead) for p, s, e in phones]
    out.append(("SIL", out[-1][2], total))
    merged = []
    for p, s, e in out:
        if merged and p == "SIL" and merged[-1][0] == "SIL":
            merged[-1] = ("SIL", merged[-1][1], e)
        elif e > s or p != "SIL":
            merged.append((p, s, e))
    return merged


def frame_loudness(audio, sr, fps, n_frames):
    """RMS level (dB) per animation frame: (T,) float64."""
    hop = sr / fps
    out = np.empty(n_frames)
    for k in range(n_frames):
        seg = audio[int(k * hop): int((k + 1) * hop)]
        out[k] = 10 * np.log10(np.mean(seg.astype(np.float64) ** 2) + 1e-10) if len(seg) else -100
    return out


def make_sequence(job: Job, fps: float, syn=None):
    """Synthesize (unless ``syn`` is given), pad, augment and rig one job -> (audio (S,)
    16 kHz, phones, arkit (T, 52), meta). Raises SynthesisError when the voice fails."""
    from train.voices import synthesize

    syn = syn if syn is not None else synthesize(job.voice, job.text, speed=job.rate)
    audio = np.asarray(syn.samples, np.float32)
    if syn.sample_rate != SAMPLE_RATE:
        g = math.gcd(SAMPLE_RATE, syn.sample_rate)
        audio = resample_poly(audio, SAMPLE_RATE // g, syn.sample_rate // g).astype(np.float32)
    rng = np.random.default_rng(job.seed)
    lead, tail = rng.uniform(0.05, 0.6), rng.uniform(0.05, 0.6)
    speech_s = len(audio) / SAMPLE_RATE
    audio = np.concatenate([np.zeros(int(lead * SAMPLE_RATE), np.float32), audio,
                            np.zeros(int(tail * SAMPLE_RATE), np.float32)])
    phones = [(p, min(s, speech_s), min(e, speech_s)) for p, s, e in syn.phones]
    phones = pad_timeline(phones, int(lead * SAMPLE_RATE) / SAMPLE_RATE, len(audio) / SAMPLE_RATE)
    ops = augment.random_chain(rng, float(rng.uniform(0.3, 1.0))) if rng.random() < AUGMENT_SHARE else []
    audio, time_scale = augment.apply(audio, SAMPLE_RATE, ops)
    duration = len(audio) / SAMPLE_RATE
    phones = [(p, s * time_scale, e * time_scale) for p, s, e in phones]
    phones[-1] = (phones[-1][0], phones[-1][1], duration)
    n_frames = int(math.ceil(duration * fps))
    head = load_default_head()
    template = head.identity(job.identity)
    arkit = rig_weights(phones, fps, n_frames, job.seed, template,
                        loudness=frame_loudness(audio, SAMPLE_RATE, fps, n_frames))
    meta = {**asdict(job), "augmentation": ops, "duration": duration, "fps": fps,
            "engine_phones": len(syn.raw_phones)}
    return audio, phones, arkit, meta


def _run(args):
    """Worker: make and write the jobs of one task -> [(job, duration_s or None, error)].
    A task is one job, or several festival jobs of one voice and rate synthesised together."""
    jobs, seq_dir, fps = args
    from train.voices import SynthesisError, synthesize_many

    syns = [None] * len(jobs)
    if len(jobs) > 1:
        try:
            syns = synthesize_many(jobs[0].voice, [j.text for j in jobs], speed=jobs[0].rate)
        except SynthesisError as exc:   # the engine itself failed: every job of the batch did
            syns = [exc] * len(jobs)
    results = []
    for job, syn in zip(jobs, syns):
        try:
            if isinstance(syn, SynthesisError):
                raise syn
            audio, phones, arkit, meta = make_sequence(job, fps, syn)
        except SynthesisError as exc:
            results.append((job, None, str(exc)))
            continue
        write_sequence(seq_dir, job.seq_id, audio, SAMPLE_RATE, arkit, phones, meta)
        results.append((job, len(audio) / SAMPLE_RATE, None))
    return results


def make_tasks(jobs: list) -> list:
    """Jobs -> worker tasks (lists of jobs): festival jobs grouped by voice and rate in
    batches of FESTIVAL_BATCH, every other job alone. Order follows the first job's index."""
    tasks, groups = [], {}
    for job in jobs:
        if job.voice.startswith("festival:"):
            group = groups.setdefault((job.voice, job.rate), [])
            if not group:
                tasks.append(group)
            group.append(job)
            if len(group) == FESTIVAL_BATCH:
                del groups[(job.voice, job.rate)]
        else:
            tasks.append([job])
    return tasks


def _inventory(seed: int, hours: float, voice_ids=None):
    """Voices by split, voice languages, sentences per language and split. The sentence pool
    grows with the corpus (about one English sentence per sequence, 3000 at most), since
    generating the text costs ~6 ms per English sentence."""
    from train.sentences import make_sentences
    from train.voices import SynthesisError, get_voice
    from train.voices.catalog import CORPUS_VOICE_IDS

    available, missing = {}, []
    for voice_id in voice_ids or CORPUS_VOICE_IDS:
        try:
            available[voice_id] = get_voice(voice_id)
        except SynthesisError:
            missing.append(voice_id)
    voices = list(available)
    languages = {v: text_language(available[v].language) for v in voices}
    sentences = {}
    for lang in sorted(set(languages.values())):
        expected = hours * 3600 / MEAN_SEQ_S
        n = int(np.clip(expected, 200, 3000)) if lang == "en" else int(np.clip(expected / 4, 60, 600))
        while True:   # grow the pool until every split has sentences of its own
            pool = {"train": [], "val": [], "test": []}
            for s in make_sentences(lang, n, seed):
                pool[sentence_split(s.id)].append((s.id, s.text))
            if min(len(v) for v in pool.values()) >= 3:
                break
            n *= 2
        sentences[lang] = pool
    return voice_splits(voices), languages, sentences, missing


def generate(out: Path, hours: float, seed: int = 0, workers: int | None = None,
             fps: float = 30.0, voice_ids=None, progress: bool = True) -> dict:
    """Generate (or resume) a corpus of at least ``hours`` of speech in ``out``. Returns stats."""
    from tqdm import tqdm

    out = Path(out)
    seq_dir = out / "seq"
    seq_dir.mkdir(parents=True, exist_ok=True)
    for stale in seq_dir.glob(".*.tmp.*"):   # leftovers of an interrupted run: redone below
        stale.unlink()
    workers = workers or os.cpu_count() or 1
    voices, languages, sentences, missing = _inventory(seed, hours, voice_ids)
    if not voices["train"]:
        raise RuntimeError("no usable voices: install the Debian voices (python3 build.py test "
                           "does) or pass voice ids that list_voices() shows")
    head = load_default_head()
    info = {"format": FORMAT, "version": VERSION, "fps": fps, "sample_rate": SAMPLE_RATE,
            "arkit_names": list(ARKIT_NAMES), "identities": list(head.identity_names),
            "seed": seed, "hours": hours, "voices": voices, "missing_voices": missing,
            "languages": languages}
    old = out / "corpus.json"
    if old.is_file():
        prev = json.loads(old.read_text())
        if (prev.get("seed"), prev.get("fps")) != (seed, fps):
            raise RuntimeError(f"{out} holds a corpus made with seed {prev.get('seed')} and fps "
                               f"{prev.get('fps')}; use another --out or the same settings")
    np.savez_compressed(out / "identities.npz", names=np.array(head.identity_names),
                        templates=head.identity_templates)
    (out / "corpus.json").write_text(json.dumps(info, indent=1))   # readable while it grows
    target_s = hours * 3600.0
    jobs, done_s, counts = [], 0.0, {"made": 0, "resumed": 0, "failed": 0}
    bar = tqdm(total=round(target_s), unit="s audio", disable=not progress, desc="synth")
    ctx = get_context("fork")
    with ctx.Pool(workers) as pool, open(out / "failures.jsonl", "w") as failures:
        while done_s < target_s:
            count = max(8, int(math.ceil((target_s - done_s) / MEAN_SEQ_S * 1.05)))
            batch = plan_jobs(seed, len(jobs), count, voices, languages, sentences,
                              list(head.identity_names))
            jobs += batch
            todo = []
            for job in batch:
                npz = seq_dir / f"{job.seq_id}.npz"
                if npz.is_file():
                    with np.load(npz) as d:
                        dur = json.loads(str(d["meta"]))["duration"]
                    done_s += dur
                    counts["resumed"] += 1
                    bar.update(round(dur))
                else:
                    todo.append(job)
            tasks = [(t, seq_dir, fps) for t in make_tasks(todo)]
            for results in pool.imap_unordered(_run, tasks):
                for job, dur, err in results:
                    if err is not None:
                        counts["failed"] += 1
                        failures.write(json.dumps({"seq": job.seq_id, "voice": job.voice,
                                                   "text": job.text, "error": err}) + "\n")
                        continue
                    done_s += dur
                    counts["made"] += 1
                    bar.update(round(dur))
    bar.close()
    split = {s: [] for s in ("train", "val", "test")}
    for job in jobs:
        split[job.split].append(job.seq_id)
    split["held_out"] = {s: {"voices": voices[s], "identities": list(HELD_OUT_IDENTITIES[s]),
                             "sentences": sorted({sid for lang in sentences.values()
                                                  for sid, _ in lang[s]})}
                         for s in ("val", "test")}
    (out / "split.json").write_text(json.dumps(split, indent=1))
    info.update(counts=counts, hours_made=done_s / 3600.0, jobs_planned=len(jobs))
    (out / "corpus.json").write_text(json.dumps(info, indent=1))
    return info
