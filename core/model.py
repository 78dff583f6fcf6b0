"""MeshTalk-lite: speech (log-mel) + expression -> categorical codes -> per-frame vertex offsets.

One definition serves training (``train/fit.py``) and inference (``core/pipeline.py``).

Data flow, shapes and units (B batch, T animation frames, M mel frames at 100 per second,
V vertices, Ha/He audio/expression heads, C classes per head, K basis rank)::

    mel (B, n_mels, M)  ──AudioEncoder──>  audio features (B, T, audio_dim)   (sampled at frame times)
    offsets (B, T, V, 3) mm ──ExpressionEncoder──> expression features (B, T, expr_dim)  [training]
    audio features ──> audio logits (B, T, Ha, C)              (the mouth: audio alone decides)
    expression features ──> expression logits (B, T, He, C)    (upper face: blinks, brows)
    one-hot codes (B, T, Ha+He, C) + template ──Decoder──> coefficients (B, T, K)
    coefficients ──basis──> offsets (B, T, V*3) mm   and   ──arkit head──> ARKit weights (B, T, 52)
    audio features ──closure head──> logit (B, T) that the lips are sealed (/p b m/ closures)

Design choices (see README "The model"):
- The H = Ha + He heads are split by modality: ``heads_audio`` heads are computed from audio
  only, so the mouth codes are a deterministic function of the speech (argmax at inference,
  the same for every seed), and the ``heads_expr`` heads from the expression encoder, which
  sees only the upper face (``expr_upper_only``; ``expr_sees_audio`` adds the audio). At
  inference the prior (``core/prior.py``) samples the expression heads given the audio. The
  cross-modality loss trains the decoder to respect the split: with another sequence's
  expression the mouth must match, with another sequence's audio the upper face must match.
  (In a first version every head saw both modalities, as in MeshTalk; with a few thousand CPU
  steps the decoder then read mouth detail from expression codes, and lips got ~1 mm worse
  whenever the expression came from elsewhere, i.e. from the prior.)
- The decoder ends in a linear vertex basis, so an animation is stored as (T, K) coefficients
  and a (K, V*3) basis: cheap to resample in time and to bake as K shape keys.
- Lip seals: a small head predicts from the audio whether the lips are sealed in a frame; the
  pipeline then closes the predicted gap with the smallest change inside the decoder's basis
  (``core/pipeline.py``, ``seal_lips``), as the articulation rig seals /p b m/ exactly.
- The model runs at its native ``fps`` (the corpus rate); the pipeline resamples coefficients
  to any output frame rate.
- All temporal convolutions are "valid" (no padding) with known past/future context, so long
  audio can be processed in overlapping windows with results identical to one pass.
Offsets inside the model are millimetres (``MM``), outside (pipeline, corpus) metres.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

MM = 1000.0                # metres -> model units (millimetres)
MEL_RATE = 100.0           # mel frames per second (16 kHz, hop 160)
PAD_SECONDS = 2.0          # zeros added before and after every utterance before the mel
PAD_FRAMES = int(PAD_SECONDS * MEL_RATE)
N_ARKIT = 52
SEAL_POS_WEIGHT = 4.0      # closed frames are rare: their BCE weight in training; the pipeline
                           # subtracts log(SEAL_POS_WEIGHT) from the logit to get a probability


@dataclass
class ModelConfig:
    """Every size and choice of the model; stored as JSON inside every checkpoint."""
    n_vertices: int = 4706
    fps: float = 30.0                         # native animation rate (that of the corpus)
    n_mels: int = 80
    # a second ear trained on human speech (core/phone_ear.py): N_EAR rows of frame-wise phone
    # evidence from CMU Sphinx's acoustic model stacked under the log-mel
    phone_ear: bool = False
    # audio encoder: dilated 1-D convs over mel frames; the first `lookahead_layers` are centred
    audio_channels: int = 64
    audio_kernel: int = 3
    audio_dilations: tuple = (1, 2, 4, 8, 16, 32)
    audio_lookahead_layers: int = 5
    audio_dim: int = 64
    # expression encoder (training only): per-frame MLP on every n-th vertex of the upper face
    # and eyelids outside the mouth region (the mouth must come from the audio), then a GRU
    expr_stride: int = 2
    expr_upper_only: bool = True
    expr_noise_mm: float = 1.0                # training noise on its input: hides sub-mm leaks
                                              # of mouth motion into the upper face
    expr_widths: tuple = (64,)
    expr_dim: int = 32
    # categorical latent space
    heads_audio: int = 8
    heads_expr: int = 4
    expr_sees_audio: bool = False             # expression heads read audio features too
    classes: int = 16
    fusion_width: int = 64
    # decoder
    template_stride: int = 8                  # every n-th template vertex feeds the template encoder
    template_widths: tuple = (64,)
    decoder_dim: int = 64
    decoder_kernel: int = 5                   # centred temporal conv (frames)
    decoder_widths: tuple = (32,)             # the last width is the rank K of the vertex basis
    # prior (core/prior.py)
    prior_dim: int = 32
    # training only: a phone classifier on the audio features (0: none). Its cross-entropy
    # teaches the audio encoder where the lips articulate (/p b m/ vs /t d n/), which the
    # mouth-shape losses alone leave to a few millimetres of lip gap
    phone_classes: int = 0

    def __post_init__(self):
        for name in ("audio_dilations", "expr_widths", "template_widths", "decoder_widths"):
            setattr(self, name, tuple(getattr(self, name)))

    @property
    def heads(self) -> int:
        return self.heads_audio + self.heads_expr

    @property
    def rank(self) -> int:
        return self.decoder_widths[-1]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model config fields {sorted(unknown)}")
        return cls(**d)


def meshtalk_size_config(**overrides) -> ModelConfig:
    """This model with MeshTalk's released sizes: 16 heads x 128 classes, 128-channel kernel-5
    audio convs with dilations 2,4,6,2,4,6 (all centred, ~1 s window), a 256-128 expression MLP
    with a 128 recurrent layer, a 256-wide fusion, the full-resolution 512-256-128 template
    encoder and a 256-512 decoder, and a prior with 64 channels per head (1024)."""
    cfg = dict(audio_channels=128, audio_kernel=5, audio_dilations=(2, 4, 6, 2, 4, 6),
               audio_lookahead_layers=6, audio_dim=128, expr_stride=1, expr_widths=(256, 128),
               expr_dim=128,
               heads_audio=8, heads_expr=8, classes=128, fusion_width=256, template_stride=1,
               template_widths=(512, 256, 128), decoder_dim=128, decoder_widths=(256, 512),
               prior_dim=1024)
    cfg.update(overrides)
    return ModelConfig(**cfg)


def _mlp(widths, final_act=True) -> nn.Sequential:
    layers = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b))
        if final_act or i < len(widths) - 2:
            layers.append(nn.LeakyReLU(0.2))
    return nn.Sequential(*layers)


def input_rows(cfg: ModelConfig) -> int:
    """Rows of the audio encoder's input: the log-mel's n_mels, plus N_EAR with phone_ear."""
    from .phone_ear import N_EAR
    return cfg.n_mels + (N_EAR if cfg.phone_ear else 0)


class AudioEncoder(nn.Module):
    """Normalised log-mel (B, n_mels, M_in), with ``phone_ear`` N_EAR more rows under it
    (``input_rows``) -> features (B, audio_dim, M_in - past - future) at 100 frames per second. Output frame j looks at input frames j .. j + past + future, i.e.
    ``past`` frames before and ``future`` frames after input frame j + past."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        k = cfg.audio_kernel
        self.inp = nn.Conv1d(input_rows(cfg), cfg.audio_channels, k)
        self.convs = nn.ModuleList(nn.Conv1d(cfg.audio_channels, cfg.audio_channels, k, dilation=d)
                                   for d in cfg.audio_dilations)
        self.out = nn.Conv1d(cfg.audio_channels, cfg.audio_dim, 1)
        self.norm = nn.LayerNorm(cfg.audio_dim)   # keeps feature scale fixed for the heads
        # residual trims: centred layers drop span//2 on the left, causal layers the whole span
        self.trims = []
        future = (k - 1) // 2
        past = (k - 1) - future
        for i, d in enumerate(cfg.audio_dilations):
            span = (k - 1) * d
            left = span // 2 if i < cfg.audio_lookahead_layers else span
            self.trims.append((left, span - left))
            past, future = past + left, future + span - left
        self.past, self.future = past, future

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.inp(mel), 0.2)
        for conv, (left, right) in zip(self.convs, self.trims):
            y = F.leaky_relu(conv(x), 0.2)
            x = x[:, :, left:x.shape[2] - right] + y
        return self.out(x)


def frame_positions(k0: int, n: int, fps: float) -> torch.Tensor:
    """Mel-frame positions (float, in padded mel frames) of animation frames k0 .. k0+n-1."""
    return PAD_FRAMES + torch.arange(k0, k0 + n, dtype=torch.float64) * (MEL_RATE / fps)


def mel_window(k0: int, n: int, fps: float, past: int, future: int):
    """Which padded mel frames the audio encoder needs for animation frames k0..k0+n-1.
    Returns (start, length, rel) with rel (n,) float positions in the encoder's output."""
    pos = frame_positions(k0, n, fps)
    first = int(torch.floor(pos[0]))
    last = int(torch.floor(pos[-1])) + 1
    start = first - past
    return start, last - first + 1 + past + future, (pos - first).float()


def sample_frames(feat: torch.Tensor, rel: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of features (B, D, M) at positions rel (n,) or (B, n) -> (B, n, D)."""
    rel = rel.expand(feat.shape[0], -1) if rel.dim() == 1 else rel
    j0 = rel.floor().long().clamp(max=feat.shape[2] - 2)                 # (B, n)
    w = (rel - j0.float()).unsqueeze(-1)
    f = feat.transpose(1, 2)                                             # (B, M, D)
    idx = j0.unsqueeze(-1).expand(-1, -1, f.shape[2])
    return torch.gather(f, 1, idx) * (1 - w) + torch.gather(f, 1, idx + 1) * w


class ExpressionEncoder(nn.Module):
    """Offsets -> expression features (B, T, expr_dim): a per-frame MLP on every
    ``expr_stride``-th vertex (of the upper face only with ``expr_upper_only``), then a
    GRU. Input: (B, T, V*3) mm, or already reduced to the coordinates ``index``
    (B, T, len(index)) (training computes only those)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        vertices = torch.arange(cfg.n_vertices)
        if cfg.expr_upper_only:
            from .assets import load_default_head
            m = load_default_head().masks
            if len(m["mouth"]) != cfg.n_vertices:
                raise ValueError("expr_upper_only needs the default head's topology")
            keep = ((m["upper_face"] > 0) | (m["eyelids"] > 0)) & (m["mouth"] == 0)
            vertices = vertices[torch.from_numpy(keep)]
        vertices = vertices[::cfg.expr_stride]
        self.register_buffer("index", (vertices[:, None] * 3 + torch.arange(3)).flatten(),
                             persistent=False)
        self.n_full = cfg.n_vertices * 3
        self.mlp = _mlp((len(self.index),) + cfg.expr_widths)
        self.gru = nn.GRU(cfg.expr_widths[-1], cfg.expr_dim, batch_first=True)

    def forward(self, offsets_mm: torch.Tensor) -> torch.Tensor:
        if offsets_mm.shape[-1] == self.n_full:
            offsets_mm = offsets_mm[..., self.index]
        return self.gru(self.mlp(offsets_mm))[0]


class _DecoderBranch(nn.Module):
    """One-hot codes of some heads (B, T, h*C) + template features (B, D) -> (B, T - 2 ctx, K)."""

    def __init__(self, n_in: int, cfg: ModelConfig):
        super().__init__()
        self.codes = nn.Linear(n_in, cfg.decoder_dim)
        self.temporal = nn.Conv1d(cfg.decoder_dim, cfg.decoder_dim, cfg.decoder_kernel)
        self.ctx = (cfg.decoder_kernel - 1) // 2
        self.mlp = _mlp((cfg.decoder_dim,) + cfg.decoder_widths)

    def forward(self, one_hot: torch.Tensor, template_feat: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.codes(one_hot) + template_feat[:, None], 0.2).transpose(1, 2)
        ctx = self.ctx
        x = x[:, :, ctx:x.shape[2] - ctx] + F.leaky_relu(self.temporal(x), 0.2)
        return self.mlp(x.transpose(1, 2))


class Decoder(nn.Module):
    """One-hot codes (B, T, H, C) + template (B, V, 3) m -> coefficients (B, T - 2*ctx, K), where
    ctx = (decoder_kernel - 1) // 2 frames are consumed at each end by the temporal conv.

    The audio heads and the expression heads go through separate branches whose coefficients
    add up, so what the expression codes do to the face is a separate, additive term: the
    cross-modality loss (mouth must match under another expression) can then simply drive that
    term to zero around the mouth."""

    def __init__(self, cfg: ModelConfig, reference: torch.Tensor):
        super().__init__()
        self.register_buffer("reference", reference.float().clone())     # (V, 3) m
        n_in = len(range(0, cfg.n_vertices, cfg.template_stride)) * 3
        self.stride = cfg.template_stride
        self.template = _mlp((n_in,) + cfg.template_widths + (cfg.decoder_dim,), final_act=False)
        self.split = cfg.heads_audio
        self.audio = _DecoderBranch(cfg.heads_audio * cfg.classes, cfg)
        self.expr = _DecoderBranch(cfg.heads_expr * cfg.classes, cfg)
        self.ctx = self.audio.ctx

    def template_features(self, template: torch.Tensor) -> torch.Tensor:
        """template (B, V, 3) metres -> (B, decoder_dim)."""
        x = (template - self.reference)[:, ::self.stride] * MM
        return self.template(x.flatten(1))

    def forward(self, one_hot: torch.Tensor, template_feat: torch.Tensor) -> torch.Tensor:
        a, e = one_hot[:, :, :self.split].flatten(2), one_hot[:, :, self.split:].flatten(2)
        return self.audio(a, template_feat) + self.expr(e, template_feat)     # (B, T', K)


class MeshTalkLite(nn.Module):
    """The whole stage-1 model. ``reference``: (V, 3) metres, the template the template encoder
    measures identities against (the default head)."""

    def __init__(self, cfg: ModelConfig, reference: torch.Tensor):
        super().__init__()
        self.cfg = cfg
        self.audio = AudioEncoder(cfg)
        self.expression = ExpressionEncoder(cfg)
        self.audio_logits = _mlp((cfg.audio_dim, cfg.fusion_width, cfg.heads_audio * cfg.classes),
                                 final_act=False)
        self.expr_logits = _mlp((cfg.audio_dim * cfg.expr_sees_audio + cfg.expr_dim,
                                 cfg.fusion_width, cfg.heads_expr * cfg.classes), final_act=False)
        self.decoder = Decoder(cfg, reference)
        self.basis = nn.Linear(cfg.rank, cfg.n_vertices * 3)     # coefficients -> offsets (mm)
        self.arkit = nn.Linear(cfg.rank, N_ARKIT)                # coefficients -> ARKit weights
        self.closure = _mlp((cfg.audio_dim, cfg.fusion_width, 1), final_act=False)  # lips sealed?
        self.phones = (nn.Linear(cfg.audio_dim, cfg.phone_classes) if cfg.phone_classes
                       else None)                              # training only (see ModelConfig)
        nn.init.zeros_(self.basis.bias)

    # ---- pieces used by both training and inference ----
    def audio_features(self, mel: torch.Tensor, rel: torch.Tensor) -> torch.Tensor:
        """mel window (B, n_mels, M) from ``mel_window``, rel (n,) or (B, n) -> (B, n, audio_dim),
        layer-normalised per frame."""
        return self.audio.norm(sample_frames(self.audio(mel), rel))

    def logits(self, audio_feat: torch.Tensor, expr_feat: torch.Tensor | None = None):
        """-> (audio logits (B, T, Ha, C), expression logits (B, T, He, C) or None)."""
        c = self.cfg
        a = self.audio_logits(audio_feat).unflatten(-1, (c.heads_audio, c.classes))
        if expr_feat is None:
            return a, None
        e = self.expr_logits(torch.cat([audio_feat, expr_feat], -1) if c.expr_sees_audio
                             else expr_feat)
        return a, e.unflatten(-1, (c.heads_expr, c.classes))

    def decode(self, one_hot: torch.Tensor, template_feat: torch.Tensor):
        """one-hot (B, T, H, C), template features (B, D) -> (coefficients (B, T', K),
        offsets (B, T', V*3) mm, ARKit weights (B, T', 52)); T' = T - 2 * decoder ctx."""
        coeffs = self.decoder(one_hot, template_feat)
        return coeffs, self.basis(coeffs), self.arkit(coeffs)

    # ---- training ----
    def quantize(self, logits: torch.Tensor, tau: float) -> torch.Tensor:
        """Gumbel-softmax, straight-through: logits (..., C) -> one-hot (..., C) with gradients."""
        return F.gumbel_softmax(logits, tau=tau, hard=True, dim=-1)

    def forward(self, mel, rel, expr_offsets_mm, template, tau: float = 1.0, swap=None):
        """Training pass on a batch of crops.

        mel (B, n_mels, M) windows from ``mel_window``; rel (B, T) positions; expr_offsets_mm:
        ground-truth offsets (B, T, V*3) mm or their ``expression.index`` coordinates; template
        (B, V, 3) m; swap: optional (B,) permutation. Returns dict with 'full' and, with
        ``swap``, 'swap_expr' (audio of i, expression of swap[i]) and 'swap_audio' (audio of
        swap[i], expression of i), each {'coeffs' (B, T', K), 'arkit' (B, T', 52)} with
        T' = T - 2 * decoder ctx (offsets = ``self.basis(coeffs)``, mm), plus the logits
        ('a_logits', 'e_logits', 'closure_logit' (B, T') and, with a phone head,
        'phone_logits' (B, T', phone_classes))."""
        audio_feat = self.audio_features(mel, rel)
        if self.training and self.cfg.expr_noise_mm > 0:
            expr_offsets_mm = expr_offsets_mm + self.cfg.expr_noise_mm * torch.randn_like(expr_offsets_mm)
        expr_feat = self.expression(expr_offsets_mm)
        tfeat = self.decoder.template_features(template)
        variants = {"full": (audio_feat, expr_feat)}
        if swap is not None:
            variants["swap_expr"] = (audio_feat, expr_feat[swap])
            variants["swap_audio"] = (audio_feat[swap], expr_feat)
        names = list(variants)
        a_feat = torch.cat([variants[n][0] for n in names])
        e_feat = torch.cat([variants[n][1] for n in names])
        a_logits, e_logits = self.logits(a_feat, e_feat)
        one_hot = torch.cat([self.quantize(a_logits, tau), self.quantize(e_logits, tau)], 2)
        coeffs = self.decoder(one_hot, tfeat.repeat(len(names), 1))
        arkit = self.arkit(coeffs)
        ctx = self.decoder.ctx
        closure = self.closure(audio_feat[:, ctx:audio_feat.shape[1] - ctx].detach())[..., 0]
        out = {"a_logits": a_logits, "e_logits": e_logits, "closure_logit": closure}
        if self.phones is not None:                  # (B, T', phone_classes), not detached
            out["phone_logits"] = self.phones(audio_feat[:, ctx:audio_feat.shape[1] - ctx])
        for i, n in enumerate(names):
            sl = slice(i * len(mel), (i + 1) * len(mel))
            out[n] = {"coeffs": coeffs[sl], "arkit": arkit[sl]}
        return out


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = ["ModelConfig", "MeshTalkLite", "meshtalk_size_config", "mel_window", "sample_frames",
           "frame_positions", "MM", "MEL_RATE", "PAD_FRAMES", "PAD_SECONDS",
           "parameter_count"]
