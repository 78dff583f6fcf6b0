"""The Speechface corpus format: one folder, written by ``python3 -m train synth``.

Layout::

    DIR/corpus.json        {"format": "speechface-corpus", "version": 1, "fps": 30.0,
                            "sample_rate": 16000, "arkit_names": [52 names], "identities": [...],
                            "seed": ..., "hours": ..., "voices": [...], ...}
    DIR/identities.npz     names (N,), templates (N, V, 3) float32 metres (hm08 head cut)
    DIR/split.json         {"train": [ids], "val": [ids], "test": [ids],
                            "held_out": {"val"|"test": {"voices", "identities", "sentences"}}}
    DIR/seq/<id>.wav       speech, 16 kHz mono, 16-bit PCM
    DIR/seq/<id>.npz       arkit (T, 52) float32 weights, T = ceil(duration * fps), frame k
                           shows t = k / fps; phone_names (N,) str canonical phones;
                           phone_times (N, 2) float32 start/end seconds; meta: JSON string
                           (identity, voice, language, text, sentence, augmentation, seed)
    DIR/failures.jsonl     one line per sentence/voice skipped by the last run, with the reason

Captured motion (``train.captures``) is stored densely instead: corpus.json has
``"targets": "dense"``, DIR/basis.npz holds ``basis`` (K+1, V*3) float32 metres and each
sequence's .npz ``coeffs`` (T, K+1), offsets = coeffs @ basis (its ``arkit`` are face units
fitted to that motion, and it may have no phones).

Synthetic vertex offsets are not stored: ``offsets = rig_offsets(arkit, template)`` derives them
(T, V, 3) metres from the weights and the identity's face units at load time, which keeps a
1-hour corpus near 150 MB. A sequence exists only once its ``.npz`` is in place: the writer
writes both files under temporary names and renames the ``.npz`` last, so an interrupted run
never leaves a half-written sequence that the reader accepts.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from core.arkit import ARKIT_NAMES

FORMAT = "speechface-corpus"
VERSION = 1


@dataclass
class CorpusSequence:
    """One loaded sequence. audio (S,) float32 at ``sample_rate``; arkit (T, 52) float32;
    phones [(phone, start_s, end_s)]; template (V, 3) float32 metres of its identity;
    coeffs (T, K+1) and basis (K+1, V*3) metres for captured (dense) motion, else None."""
    id: str
    audio: np.ndarray
    sample_rate: int
    fps: float
    arkit: np.ndarray
    phones: list
    template: np.ndarray
    meta: dict
    coeffs: np.ndarray | None = None
    basis: np.ndarray | None = None

    def offsets(self) -> np.ndarray:
        """Per-frame vertex offsets (T, V, 3) float32 metres relative to ``template``."""
        if self.coeffs is not None:
            return (self.coeffs @ self.basis).reshape(len(self.coeffs), -1, 3)
        from core.rig import rig_offsets
        return rig_offsets(self.arkit, self.template)


def write_sequence(seq_dir: Path, seq_id: str, audio: np.ndarray, sample_rate: int,
                   arkit: np.ndarray, phones: list, meta: dict) -> None:
    """Write one sequence atomically (wav first, then the .npz that marks it complete)."""
    seq_dir.mkdir(parents=True, exist_ok=True)
    wav, npz = seq_dir / f"{seq_id}.wav", seq_dir / f"{seq_id}.npz"
    tmp_wav, tmp_npz = seq_dir / f".{seq_id}.tmp.wav", seq_dir / f".{seq_id}.tmp.npz"
    sf.write(tmp_wav, np.clip(audio, -1, 1), sample_rate, subtype="PCM_16")
    with open(tmp_npz, "wb") as fh:
        np.savez(fh, arkit=np.asarray(arkit, np.float32),
                 phone_names=np.array([p for p, _, _ in phones]),
                 phone_times=np.array([[s, e] for _, s, e in phones], np.float32).reshape(-1, 2),
                 meta=np.array(json.dumps(meta, sort_keys=True)))
    os.replace(tmp_wav, wav)
    os.replace(tmp_npz, npz)


class Corpus:
    """Reader for a corpus folder. ``len(corpus)``, ``corpus.ids(split)``, ``corpus.load(id)``."""

    def __init__(self, root):
        self.root = Path(root)
        info_path = self.root / "corpus.json"
        if not info_path.is_file():
            raise FileNotFoundError(f"{self.root} is not a Speechface corpus (no corpus.json); "
                                    "make one with `python3 -m train synth --out DIR`")
        self.info = json.loads(info_path.read_text())
        if self.info.get("format") != FORMAT or self.info.get("version") != VERSION:
            raise ValueError(f"{info_path}: unsupported corpus format "
                             f"{self.info.get('format')!r} v{self.info.get('version')!r}")
        if list(self.info["arkit_names"]) != list(ARKIT_NAMES):
            raise ValueError(f"{info_path}: ARKit channel order differs from core.arkit")
        with np.load(self.root / "identities.npz") as ids:
            self.identity_names = [str(n) for n in ids["names"]]
            self.templates = ids["templates"]
        split_path = self.root / "split.json"
        self.split = json.loads(split_path.read_text()) if split_path.is_file() else {}
        self.fps = float(self.info["fps"])
        self.sample_rate = int(self.info["sample_rate"])
        self.dense = self.info.get("targets") == "dense"
        self.basis = None
        if self.dense:
            with np.load(self.root / "basis.npz", allow_pickle=False) as d:
                self.basis = d["basis"]                                      # (K+1, V*3) m

    def complete_ids(self) -> list:
        """Ids of every complete sequence on disk (sorted)."""
        seq = self.root / "seq"
        if not seq.is_dir():
            return []
        return sorted(p.stem for p in seq.glob("*.npz") if not p.name.startswith("."))

    def ids(self, split: str | None = None) -> list:
        """Complete sequence ids, all or of one split ('train', 'val', 'test')."""
        done = self.complete_ids()
        if split is None:
            return done
        wanted = set(self.split.get(split, []))
        return [i for i in done if i in wanted]

    def __len__(self) -> int:
        return len(self.complete_ids())

    def load(self, seq_id: str) -> CorpusSequence:
        npz_path = self.root / "seq" / f"{seq_id}.npz"
        with np.load(npz_path, allow_pickle=False) as d:
            arkit = d["arkit"]
            coeffs = d["coeffs"] if self.dense else None
            phones = [(str(p), float(s), float(e))
                      for p, (s, e) in zip(d["phone_names"], d["phone_times"])]
            meta = json.loads(str(d["meta"]))
        audio, sr = sf.read(self.root / "seq" / f"{seq_id}.wav", dtype="float32")
        template = self.templates[self.identity_names.index(meta["identity"])]
        return CorpusSequence(seq_id, audio, sr, self.fps, arkit, phones, template, meta,
                              coeffs, self.basis)

    def duration_s(self) -> float:
        """Total audio duration (s) of the complete sequences."""
        return sum(sf.info(str(self.root / "seq" / f"{i}.wav")).duration
                   for i in self.complete_ids())
