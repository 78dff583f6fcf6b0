"""Training data in memory: a corpus split turned into model inputs once, then random crops.

Per sequence: the normalised log-mel of the utterance padded with ``PAD_SECONDS`` of zeros on
both sides (``core.pipeline.utterance_mel``, exactly what the pipeline feeds the model), the
ARKit weights (T, 52), and which identity speaks. Ground-truth offsets are made per batch from
the weights and the face units, ``offsets = weights @ units * identity_scale`` (mm), so 2 hours
of corpus need ~0.5 GB, not 60.
A captured corpus (``train.captures``) works the same way with its dense coefficients and
basis in place of the weights and face units.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm import tqdm

from core.assets import load_default_head
from core.audio import MODEL_RATE, MelConfig, resample, warp_mel
from core.model import MM, mel_window
from core.pipeline import utterance_mel
from core.rig import identity_scale, lip_gap
from core.rig.phones import PHONES
from train.corpus import Corpus


class LinearTargets:
    """Ground truth linear in per-frame weights: offsets = scale * arkit @ units (mm)."""

    def __init__(self, units_mm: torch.Tensor):
        self.units_mm = units_mm                                   # (52, V*3)

    def dense(self, arkit: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """arkit (B, T, 52), scale (B,) -> offsets (B, T, V*3) mm."""
        return (arkit @ self.units_mm) * scale[:, None, None]

    def columns(self, arkit: torch.Tensor, scale: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """Only the flattened coordinates ``cols``: (B, T, len(cols)) mm."""
        return (arkit @ self.units_mm[:, cols]) * scale[:, None, None]


@dataclass
class Batch:
    """mel (B, n_mels, L); rel (B, T) encoder-output positions of the crop's frames;
    arkit (B, T, 52) ground-truth weights and scale (B,) their identity's scale (offsets via
    ``TrainingSet.targets``); neutral_gap (B,) mm inner-lip gap of the identity at rest;
    template (B, V, 3) m; seq (B,) sequence indices; k0 (B,) first
    frame of each crop; phone (B, T) index into ``PHONES`` of the phone each frame shows;
    target (B, T, Kt) what ``TrainingSet.targets`` turns into the true offsets: the ARKit
    weights again, or a captured corpus's dense coefficients."""
    mel: torch.Tensor
    rel: torch.Tensor
    arkit: torch.Tensor
    scale: torch.Tensor
    neutral_gap: torch.Tensor
    template: torch.Tensor
    seq: torch.Tensor
    k0: torch.Tensor
    phone: torch.Tensor
    target: torch.Tensor


def augment_mel(mel: torch.Tensor, gen: torch.Generator, warp: float = 0.0,
                freq_masks: int = 0, mask_bins: int = 8) -> torch.Tensor:
    """Speaker-variety augmentation of normalised log-mel crops (B, n_mels, L) -> same shape.

    warp: vocal-tract length perturbation, each crop's spectrum stretched along frequency by a
    factor exp(u), u uniform in [-warp, warp] (0.1: about +-10 %, the spread between adult
    speakers' formants): bin k takes the value at f_k / factor (linear between bins, edges
    held). freq_masks: that many bands of up to ``mask_bins`` bins per crop set to 0 (the
    per-bin mean after ``normalize_utterance``), so no single band is relied on."""
    b, n, _ = mel.shape
    bins = min(n, MelConfig.n_mels)          # rows below are the phone ear's: never masked
    if warp > 0:
        mel = warp_mel(mel, torch.exp((torch.rand(b, generator=gen, dtype=torch.float64) * 2 - 1)
                                      * warp).numpy())
    if freq_masks > 0:
        mel = mel.clone()
        for i in range(b):
            for _ in range(freq_masks):
                width = int(torch.randint(mask_bins + 1, (1,), generator=gen))
                start = int(torch.randint(bins - width + 1, (1,), generator=gen))
                mel[i, start:start + width] = 0.0
    return mel


def frame_phones(phones, n_frames: int, fps: float) -> torch.Tensor:
    """(phone, start_s, end_s) list -> (n_frames,) int64 index into ``PHONES`` of the phone at
    each frame time k / fps (silence where no phone covers it)."""
    out = torch.full((n_frames,), PHONES.index("SIL"), dtype=torch.int64)
    t = torch.arange(n_frames, dtype=torch.float64) / fps
    for name, start, end in phones:
        out[(t >= start) & (t < end)] = PHONES.index(name)
    return out


class TrainingSet:
    """One split of a corpus as tensors. ``batch(gen, size, frames, past, future)`` draws crops."""

    def __init__(self, corpus: Corpus | str, split: str, limit: int | None = None,
                 progress: bool = True, ear: bool = False):
        corpus = Corpus(corpus) if not isinstance(corpus, Corpus) else corpus
        self.fps = corpus.fps
        self.ids = corpus.ids(split)[:limit]
        if not self.ids:
            raise ValueError(f"{corpus.root}: split {split!r} has no sequences")
        head = load_default_head()
        self.templates = torch.from_numpy(corpus.templates)                  # (N, V, 3) m
        if corpus.dense:          # captured motion: offsets = coeffs @ basis, no identity scale
            self.targets = LinearTargets(torch.from_numpy(corpus.basis * MM))   # (K+1, V*3)
            self.scales = torch.ones(len(corpus.templates))
        else:
            units = head.units.dense().reshape(len(head.units.names), -1)
            self.targets = LinearTargets(torch.from_numpy(units * MM))          # (52, V*3)
            self.scales = torch.tensor([identity_scale(t) for t in corpus.templates])
        self.neutral_gap = torch.tensor([float(lip_gap(t)) * MM for t in corpus.templates])
        self.mels, self.arkit, self.identity, self.phones, self.meta = [], [], [], [], []
        self.target_w = []        # per sequence (T, 52) ARKit weights, or (T, K+1) dense coeffs
        self.has_phones = False
        threads = torch.get_num_threads()
        if not ear:                    # the phone ear's matmuls are large enough for threads
            torch.set_num_threads(1)   # tiny tensors: more threads only spin (4x slower here)
        for seq_id in tqdm(self.ids, desc=f"load {split}", disable=not progress, leave=False):
            seq = corpus.load(seq_id)
            audio = resample(seq.audio, seq.sample_rate, MODEL_RATE)
            self.mels.append(utterance_mel(audio, ear))
            self.arkit.append(torch.from_numpy(seq.arkit))
            self.target_w.append(self.arkit[-1] if seq.coeffs is None
                                 else torch.from_numpy(seq.coeffs))
            self.has_phones = self.has_phones or bool(seq.phones)
            self.identity.append(corpus.identity_names.index(seq.meta["identity"]))
            self.phones.append(frame_phones(seq.phones, len(seq.arkit), corpus.fps))
            self.meta.append(seq.meta)
        torch.set_num_threads(threads)
        self.n_frames = torch.tensor([len(a) for a in self.arkit])

    def __len__(self) -> int:
        return len(self.ids)

    def offsets_mm(self, i: int) -> torch.Tensor:
        """Ground-truth offsets (T, V*3) mm of sequence i."""
        return self.targets.dense(self.target_w[i][None], self.scales[[self.identity[i]]])[0]

    def batch(self, gen: torch.Generator, size: int, frames: int, past: int, future: int,
              warp: float = 0.0, freq_masks: int = 0) -> Batch:
        """Random crops of ``frames`` frames from sequences at least that long; ``warp`` and
        ``freq_masks``: ``augment_mel`` on their mel windows (0: none)."""
        ok = torch.nonzero(self.n_frames >= frames).flatten()
        pick = ok[torch.randint(len(ok), (size,), generator=gen)]
        mels, rels, arks, k0s, phones, tws = [], [], [], [], [], []
        length = None
        for i in pick.tolist():
            k0 = int(torch.randint(int(self.n_frames[i]) - frames + 1, (1,), generator=gen))
            start, n, rel = mel_window(k0, frames, self.fps, past, future)
            length = length or n + 1            # floor() can shift the span by one frame
            mels.append(self.mels[i][:, start:start + length])
            rels.append(rel)
            arks.append(self.arkit[i][k0:k0 + frames])
            phones.append(self.phones[i][k0:k0 + frames])
            tws.append(self.target_w[i][k0:k0 + frames])
            k0s.append(k0)
        ids = [self.identity[i] for i in pick.tolist()]
        mel = torch.stack(mels)
        if warp > 0 or freq_masks > 0:
            mel = augment_mel(mel, gen, warp, freq_masks)
        return Batch(mel, torch.stack(rels), torch.stack(arks), self.scales[ids],
                     self.neutral_gap[ids], self.templates[ids], pick, torch.tensor(k0s),
                     torch.stack(phones), torch.stack(tws))
