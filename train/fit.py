"""Training: ``python3 -m train fit CORPUS --out RUN_DIR`` (stage 1, then stage 2, then export).

Stage 1 trains MeshTalkLite with the cross-modality loss; stage 2 freezes it, encodes every
training sequence to codes and trains the prior on them. Each stage writes a training
checkpoint to RUN_DIR (``stage1.safetensors``, ``stage2.safetensors``: weights, Adam state, RNG
states, history) after every validation, and a rerun of the same command resumes from it.
The end product is ``RUN_DIR/model.safetensors`` (inference weights + prior, no expression
encoder) and ``RUN_DIR/curves.png``.

Scale-out: ``torchrun --nproc_per_node N -m train fit ...`` runs DDP (gloo on CPU, NCCL on GPU);
every rank draws its own crops from the seed and rank 0 validates and writes checkpoints.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from core.assets import load_default_head
from core.checkpoint import read_checkpoint, save_checkpoint
from core.model import MeshTalkLite, ModelConfig, mel_window, meshtalk_size_config
from core.prior import CodePrior
from core.rig.phones import PHONES
from train.corpus import Corpus
from train.data import TrainingSet
from train.loaders import LAYOUTS
from train.losses import LossGeometry, batch_losses, validate_stage1

SIZES = {"default": ModelConfig, "meshtalk": meshtalk_size_config}


class Interrupted(RuntimeError):
    """Raised by ``interrupt_after`` to simulate a killed run (tests of resume)."""


@dataclass
class TrainConfig:
    steps: int = 3000                 # stage-1 optimiser steps (per rank)
    prior_steps: int = 1500
    minutes: float = 0.0              # stage-1 wall-clock budget (0: none)
    prior_minutes: float = 0.0
    batch: int = 16
    frames: int = 48                  # crop length, animation frames
    lr: float = 2e-3
    prior_lr: float = 3e-3
    tau: float = 1.0                  # Gumbel-softmax temperature
    lip_weight: float = 1.0           # weight of the lip-region error term (full decoding)
    lip_rms_weight: float = 0.0       # weight of the lips' per-frame RMS error, mm (not squared;
                                      # train.losses.frame_rms), full and swapped decodings
    eyelid_weight: float = 1.0        # weight of the eyelid-region error term (blinks)
    gap_weight: float = 1.0           # L1 on the inner-lip gap (mm)
    closure_weight: float = 0.25      # hinge on the gap where the truth is closed (2.0 shut
                                      # mouths everywhere: val lips 3.7 mm instead of 2.6)
    closed_mm: float = 1.0            # truth gap below this counts as closed
    seal_weight: float = 0.5          # BCE of the closure head
    warp: float = 0.0                 # training crops' vocal-tract length perturbation
                                      # (``train.data.augment_mel``; 0.1: +-10 % formants)
    freq_masks: int = 0               # bands of up to 8 mel bins blanked per crop
    phone_weight: float = 0.0         # cross-entropy of the phone head (needs the model config's
                                      # phone_classes; fit sets it when this is > 0)
    arkit_weight: float = 10.0
    usage_weight: float = 0.1         # keeps the categorical heads from collapsing
    validate_every: int = 250
    val_crops: int = 64
    ema: float = 0.0                  # stage 1 ends on an exponential moving average of its
                                      # weights with this decay per step (0: the last weights)
    seed: int = 0
    interrupt_after: int = 0          # testing aid: stop like a killed run after N steps of this run


# ---------------------------------------------------------------- distributed and state
def setup_distributed(device: str):
    """-> (rank, world). Initialises the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return (dist.get_rank() if world > 1 else 0), world


def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict, list]:
    sd = opt.state_dict()
    tensors = {f"optim.{i}.{k}": (v if torch.is_tensor(v) else torch.tensor(v))
               for i, st in sd["state"].items() for k, v in st.items()}
    return tensors, sd["param_groups"]


def load_optimizer(opt: torch.optim.Optimizer, tensors: dict, groups: list) -> None:
    state: dict = {}
    for name, v in tensors.items():
        if name.startswith("optim."):
            _, i, k = name.split(".", 2)
            state.setdefault(int(i), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": groups})


def module_of(m):
    return m.module if isinstance(m, torch.nn.parallel.DistributedDataParallel) else m


class Stage:
    """Bookkeeping shared by both stages: resume, budget, the optimiser step, validation,
    checkpoints, history, progress bar. A stage's loop is::

        stop = st.done or st.should_stop()
        while not stop:
            st.set_lr(base_lr)
            st.optimise(loss)
            stop = st.after_step(train_row, validate)
        st.close()
    """

    def __init__(self, name, path: Path, net, opt, gen, steps, minutes, rank, world, extra,
                 config: ModelConfig, data: dict, validate_every: int, progress: bool,
                 ema: float = 0.0):
        self.name, self.path, self.net, self.opt, self.gen = name, path, net, opt, gen
        self.ema_decay = ema
        self.ema = ({k: v.detach().clone() for k, v in module_of(net).state_dict().items()
                     if v.is_floating_point()} if ema > 0 else None)
        self.steps, self.minutes, self.rank, self.world, self.extra = steps, minutes, rank, world, extra
        self.config, self.data, self.validate_every = config, data, validate_every
        self.prefix = "prior." if name == "stage2" else "model."
        self.step, self.elapsed, self.history, self.done = 0, 0.0, [], False
        if path.is_file():
            tensors, meta = read_checkpoint(path)
            t = meta["training"]
            if t.get("stage") == name:
                module_of(net).load_state_dict({k[len(self.prefix):]: v for k, v in tensors.items()
                                                if k.startswith(self.prefix)})
                load_optimizer(opt, tensors, t["param_groups"])
                if self.ema is not None:
                    self.ema.update({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
                torch.set_rng_state(tensors[f"rng.torch.{rank}"])
                gen.set_state(tensors[f"rng.batch.{rank}"])
                self.step, self.elapsed, self.history = t["step"], t["elapsed_s"], t["history"]
                self.done = bool(t.get("done")) and self.step >= steps
        self._t0 = time.perf_counter() - self.elapsed
        self.bar = tqdm(total=steps, initial=self.step, desc=name.replace("stage", "stage "),
                        disable=not progress or rank, unit="step")

    def lr_scale(self) -> float:
        frac = self.step / max(1, self.steps)
        if self.minutes:
            frac = max(frac, (time.perf_counter() - self._t0) / (60 * self.minutes))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))

    def set_lr(self, base_lr: float) -> None:
        for g in self.opt.param_groups:
            g["lr"] = base_lr * self.lr_scale()

    def optimise(self, loss: torch.Tensor, label: str = "loss") -> None:
        """One counted optimiser step on ``loss``, gradients clipped to norm 1; the progress bar
        shows it as ``label``."""
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), 1.0)
        self.opt.step()
        if self.ema is not None:        # warm start: the average forgets its early steps
            d = min(self.ema_decay, (1 + self.step) / (10 + self.step))
            with torch.no_grad():
                for k, v in module_of(self.net).state_dict().items():
                    if k in self.ema:
                        self.ema[k].mul_(d).add_(v, alpha=1 - d)
        self.step += 1
        self.bar.update(1)
        self.bar.set_postfix({label: f"{loss.item():.3f}"})

    def after_step(self, train_row: dict, validate) -> bool:
        """Every ``validate_every`` steps and at the last one: validate (rank 0, ``validate()``
        -> dict), log a history row and write the checkpoint. Returns True when the stage stops."""
        stop = self.should_stop()
        if self.step % self.validate_every == 0 or stop:
            row = {"step": self.step, "time_s": round(time.perf_counter() - self._t0, 1),
                   **train_row}
            if self.rank == 0:
                row.update(validate())
                self.bar.write(json.dumps(row))
            self.history.append(row)
            self.save(done=stop)
        return stop

    def close(self) -> None:
        self.bar.close()

    def should_stop(self) -> bool:
        stop = self.step >= self.steps or (
            self.minutes and time.perf_counter() - self._t0 >= 60 * self.minutes)
        if self.world > 1:      # every rank must agree, or DDP hangs
            flag = torch.tensor(float(stop))
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            stop = bool(flag.item())
        return bool(stop)

    def gather_rng(self) -> dict:
        states = {f"rng.torch.{self.rank}": torch.get_rng_state(),
                  f"rng.batch.{self.rank}": self.gen.get_state()}
        if self.world > 1:
            out = [None] * self.world
            dist.all_gather_object(out, states)
            states = {k: v for d in out for k, v in d.items()}
        return states

    def save(self, done=False) -> None:
        tensors = prefixed(module_of(self.net), self.prefix)
        rng = self.gather_rng()
        if self.rank != 0:
            return
        self.elapsed = time.perf_counter() - self._t0
        opt_t, groups = optimizer_tensors(self.opt)
        training = dict(self.extra, stage=self.name, step=self.step, elapsed_s=self.elapsed,
                        history=self.history, param_groups=groups, world_size=self.world,
                        done=done)
        ema = {f"ema.{k}": v for k, v in (self.ema or {}).items()}
        save_checkpoint(self.path, {**tensors, **opt_t, **rng, **ema}, self.config, self.data,
                        training, contents=f"training {self.name}")

    def use_average(self) -> None:
        """Load the moving average of the weights into the module (``ema`` > 0)."""
        if self.ema is not None:
            module_of(self.net).load_state_dict(self.ema, strict=False)


# ---------------------------------------------------------------- stage 1
def train_stage1(model, train_set, val_set, cfg: TrainConfig, out: Path, data_desc, rank, world,
                 device, progress=True):
    net = module_of(model)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + rank)
    torch.manual_seed(cfg.seed * 1000 + rank)
    st = Stage("stage1", out / "stage1.safetensors", model, opt, gen, cfg.steps, cfg.minutes,
               rank, world, {"train_config": dataclasses.asdict(cfg)}, net.cfg, data_desc,
               cfg.validate_every, progress, cfg.ema)
    geo = LossGeometry.of(train_set.targets.units_mm, device)
    first = st.step
    stop = st.done or st.should_stop()
    while not stop:
        if cfg.interrupt_after and st.step - first >= cfg.interrupt_after:
            raise Interrupted(f"stage 1 stopped after {cfg.interrupt_after} steps (interrupt_after)")
        st.set_lr(cfg.lr)
        b = train_set.batch(gen, cfg.batch, cfg.frames, net.audio.past, net.audio.future,
                            cfg.warp, cfg.freq_masks)
        model.train()
        losses = batch_losses(model, b, train_set.targets, geo, cfg, device)
        st.optimise(losses["total"])
        stop = st.after_step({f"train_{k}": round(v.item(), 5) for k, v in losses.items()},
                             lambda: validate_stage1(net, val_set, cfg, geo, device))
    st.close()
    st.use_average()
    return st


def prefixed(module, prefix: str) -> dict:
    return {prefix + k: v for k, v in module.state_dict().items()}


# ---------------------------------------------------------------- stage 2
@torch.no_grad()
def encode_codes(model: MeshTalkLite, ts: TrainingSet, device, progress=True) -> list:
    """Every sequence of a split through the frozen stage-1 encoders:
    -> [(audio features (T, Da), audio codes (T, Ha), expression codes (T, He))]."""
    model.eval()
    enc, out = model.audio, []
    for i in tqdm(range(len(ts)), desc="encode codes", disable=not progress, leave=False):
        n = int(ts.n_frames[i])
        start, length, rel = mel_window(0, n, ts.fps, enc.past, enc.future)
        mel = ts.mels[i][None, :, start:start + length].to(device)
        af = model.audio_features(mel, rel.to(device))
        ef = model.expression(ts.offsets_mm(i)[None].to(device))
        a_log, e_log = model.logits(af, ef)
        out.append((af[0].cpu(), a_log[0].argmax(-1).cpu(), e_log[0].argmax(-1).cpu()))
    return out


def prior_batch(codes: list, gen: torch.Generator, size: int, frames: int):
    """Random crops -> (audio feat (B, F, Da), audio codes (B, F, Ha), expr codes (B, F, He),
    previous expr codes (B, He), -1 where a crop starts its utterance)."""
    ok = [i for i, c in enumerate(codes) if len(c[0]) >= frames]
    rows = []
    for j in torch.randint(len(ok), (size,), generator=gen).tolist():
        af, ac, ec = codes[ok[j]]
        k0 = int(torch.randint(len(af) - frames + 1, (1,), generator=gen))
        prev = ec[k0 - 1] if k0 > 0 else torch.full_like(ec[0], -1)
        rows.append((af[k0:k0 + frames], ac[k0:k0 + frames], ec[k0:k0 + frames], prev))
    return [torch.stack(x) for x in zip(*rows)]


def train_stage2(model, prior, train_codes, val_codes, cfg: TrainConfig, out: Path, data_desc,
                 rank, world, device, progress=True):
    opt = torch.optim.AdamW(prior.parameters(), lr=cfg.prior_lr, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + 500 + rank)
    st = Stage("stage2", out / "stage2.safetensors", prior, opt, gen, cfg.prior_steps,
               cfg.prior_minutes, rank, world, {"train_config": dataclasses.asdict(cfg)},
               model.cfg, data_desc, cfg.validate_every, progress)
    frames = 2 * cfg.frames
    val = prior_batch(val_codes, torch.Generator().manual_seed(54321), cfg.val_crops, frames)

    @torch.no_grad()
    def validate() -> dict:
        logits, _ = module_of(prior).eval()(*(x.to(device) for x in val))
        target = val[2].to(device)
        return {"val_nll": round(F.cross_entropy(logits.flatten(0, 2), target.flatten()).item(), 5),
                "val_acc": round((logits.argmax(-1) == target).float().mean().item(), 4)}

    stop = st.done or st.should_stop()
    while not stop:
        st.set_lr(cfg.prior_lr)
        af, ac, ec, prev = (x.to(device) for x in prior_batch(train_codes, gen, cfg.batch, frames))
        prior.train()
        logits, _ = prior(af, ac, ec, prev)
        loss = F.cross_entropy(logits.flatten(0, 2), ec.flatten())
        st.optimise(loss, "nll")
        stop = st.after_step({"train_nll": round(loss.item(), 5)}, validate)
    st.close()
    return st


# ---------------------------------------------------------------- export, curves, main
def export_model(path: Path, model: MeshTalkLite, prior: CodePrior, data_desc: dict,
                 training: dict) -> Path:
    """The inference checkpoint: model without the expression encoder and phone head (both
    training only), plus the prior."""
    tensors = {k: v for k, v in prefixed(model, "model.").items()
               if not k.startswith(("model.expression.", "model.phones."))}
    tensors.update(prefixed(prior, "prior."))
    return save_checkpoint(path, tensors, model.cfg, data_desc, training, contents="model+prior")


def plot_curves(s1: list, s2: list, path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    steps = [r["step"] for r in s1]
    for key in ("train_total", "train_full", "train_mouth_swap", "train_upper_swap"):
        ax[0].plot(steps, [r.get(key) for r in s1], label=key[6:])
    for key in ("val_lip_mm", "val_lip_swap_mm", "val_gap_swap_mm"):
        if s1 and key in s1[-1]:
            ax[0].plot(steps, [r.get(key) for r in s1], "--", label=key)
    ax[0].set(yscale="log", xlabel="step", title="stage 1 (losses mm², val mm)")
    ax[0].legend(fontsize=7)
    for key in ("train_nll", "val_nll"):
        ax[1].plot([r["step"] for r in s2], [r.get(key) for r in s2], label=key)
    ax[1].set(xlabel="step", title="stage 2 prior (nats per head and frame)")
    ax[1].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def parse_set(pairs: list) -> dict:
    """--set key=value overrides for ModelConfig (JSON values: 4, 0.5, [64,32])."""
    out = {}
    for p in pairs:
        key, _, value = p.partition("=")
        out[key] = json.loads(value)
    return out


def open_training_data(args, progress: bool) -> Path:
    """The corpus folder to train on: ``args.corpus`` itself when it is a Speechface corpus,
    else a capture dataset imported into RUN_DIR/corpus (once; reruns reuse it)."""
    from train.captures import import_captures
    from train.loaders import detect_layout

    if (args.corpus / "corpus.json").is_file():
        return args.corpus
    imported = args.out / "corpus"
    if not (imported / "corpus.json").is_file():
        if not args.corpus.is_dir():
            raise FileNotFoundError(f"{args.corpus}: no such folder")
        if args.layout is None:
            try:
                detect_layout(args.corpus)
            except ValueError as exc:
                raise FileNotFoundError(
                    f"{args.corpus} is not a Speechface corpus (no corpus.json; make one with "
                    f"`python3 -m train synth --out DIR`) nor a capture dataset: {exc}") from None
        options = {k: v for k, v in (("scale", args.capture_scale), ("fps", args.capture_fps),
                                     ("target_fps", args.target_fps)) if v is not None}
        import_captures(args.corpus, imported, args.layout, args.capture_mesh, args.capture_up,
                        progress=progress, **options)
        info = json.loads((imported / "corpus.json").read_text())
        print(f"imported {sum(info['counts'].values())} sequences of {len(info['subjects'])} "
              f"subjects ({info['hours'] * 60:.1f} min) into {imported}; {info['components']} "
              f"components keep {100 * info['variance_explained']:.3f} % of the motion's variance")
    return imported


def main_fit(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m train fit", description=__doc__.split("\n")[0])
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--out", type=Path, required=True, help="run folder (resumes if it exists)")
    ap.add_argument("--size", choices=sorted(SIZES), default="default")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=JSON",
                    help="model config overrides, e.g. classes=64 decoder_widths=[64,32]")
    for f in dataclasses.fields(TrainConfig):
        ap.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    ap.add_argument("--limit", type=int, default=None, help="use only the first N sequences")
    ap.add_argument("--quiet", action="store_true")
    cap = ap.add_argument_group("captured motion (CORPUS is a VOCASET, BIWI or Multiface folder; "
                                "imported once into RUN_DIR/corpus, see train/captures.py)")
    cap.add_argument("--layout", choices=LAYOUTS, default=None,
                     help="dataset layout (detected when left out)")
    cap.add_argument("--capture-mesh", type=Path, default=None,
                     help=".obj with the captures' topology, when their files hold no faces")
    cap.add_argument("--capture-up", choices=["z", "y"], default="z",
                     help="the captures' up axis: z (Blender) or y (OBJ, FLAME, VOCASET)")
    cap.add_argument("--capture-scale", type=float, default=None,
                     help="metres per stored unit (default: the layout's)")
    cap.add_argument("--capture-fps", type=float, default=None,
                     help="frame rate of the captures (default: the layout's)")
    cap.add_argument("--target-fps", type=float, default=None,
                     help="resample every capture to this frame rate")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})
    rank, world = setup_distributed(args.device)
    progress = not args.quiet and rank == 0
    corpus = Corpus(open_training_data(args, progress))
    overrides = parse_set(args.set)
    ear = bool(overrides.get("phone_ear", False))
    train_set = TrainingSet(corpus, "train", args.limit, progress, ear)
    if corpus.ids("val"):
        val_set = TrainingSet(corpus, "val", args.limit, progress, ear)
    else:
        print("warning: the corpus has no 'val' split; validating on training sequences")
        val_set = train_set
    head = load_default_head()
    if cfg.phone_weight > 0 and not train_set.has_phones:
        print("note: the corpus has no phone timings; training without the phone head")
        cfg = dataclasses.replace(cfg, phone_weight=0.0)
    if cfg.phone_weight > 0:
        overrides.setdefault("phone_classes", len(PHONES))
    mcfg = SIZES[args.size](**{"n_vertices": head.n_vertices, "fps": corpus.fps, **overrides})
    data_desc = {"corpus": corpus.root.name, "format_version": corpus.info.get("version"),
                 "corpus_seed": corpus.info.get("seed"), "hours": corpus.info.get("hours"),
                 "train_sequences": len(train_set), "val_sequences": len(val_set),
                 "fps": corpus.fps, "identities": corpus.identity_names}
    torch.manual_seed(cfg.seed)                       # identical initial weights on every rank
    model = MeshTalkLite(mcfg, torch.from_numpy(head.vertices)).to(args.device)
    prior = CodePrior(mcfg).to(args.device)
    ddp = (lambda m: torch.nn.parallel.DistributedDataParallel(m)) if world > 1 else (lambda m: m)
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        s1 = train_stage1(ddp(model), train_set, val_set, cfg, args.out, data_desc, rank, world,
                          args.device, progress)
    except Interrupted as exc:
        print(exc)
        return 3
    train_codes = encode_codes(model, train_set, args.device, progress)
    val_codes = encode_codes(model, val_set, args.device, progress)
    s2 = train_stage2(model, ddp(prior), train_codes, val_codes, cfg, args.out, data_desc, rank,
                      world, args.device, progress)
    if rank == 0:
        training = {"command": "python3 -m train " + " ".join(["fit"] + list(sys.argv[1:] if argv is None else argv)),
                    "size": args.size, "world_size": world, "train_config": dataclasses.asdict(cfg),
                    "stage1": s1.history[-1] if s1.history else {},
                    "stage2": s2.history[-1] if s2.history else {},
                    "stage1_minutes": round(s1.elapsed / 60, 2),
                    "stage2_minutes": round(s2.elapsed / 60, 2)}
        path = export_model(args.out / "model.safetensors", model, prior, data_desc, training)
        plot_curves(s1.history, s2.history, args.out / "curves.png",
                    f"{args.size}: {len(train_set)} train sequences, world {world}")
        print(f"model -> {path.resolve()}\ncurves -> {(args.out / 'curves.png').resolve()}")
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return 0
