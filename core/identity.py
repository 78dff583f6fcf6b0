"""Fitting the model to one character: the identity-dependent parts tuned on its takes.

The audio encoder, the code heads, the decoder and the prior stay as they are; the vertex basis
(what each coefficient does to each vertex) is tuned so that the codes inference produces
(``core.pipeline.inference_codes``) give this character's motion: the error on the mouth region
(lips twice) against the takes, the inner-lip gap (an L1 term, and a hinge where the take's
lips are closed, so the tuned mouth still seals: without them closure on held-out takes fell
from 74 % to 58 % of closed frames; through a retarget map on the character's vertices
that carry the head's lip pairs, ``character_lip_gap``),
and the rest of the face held to what the model did before.
(Tuning the decoder as well overfits a few minutes of takes: ``FIT_PARTS``.)
Then the closure head (which frames the seal shuts) is tuned on the frames where the takes'
lips are closed (``core/closure_fit.py``): tuning the basis alone left held-out closure as
the default's.
Characters of another topology go through a retarget map: the registered default head is their
template and the map carries the predicted offsets onto their vertices.

Used by ``python3 -m train fit-identity`` (files, CLI) and by the add-on's "Fit to this
Character" (Blender data). Offsets in metres, frames at each take's fps.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

import numpy as np
import torch

CLOSED_MM = 1.5              # a lip gap below this counts as closed (as the bilabial metric)
OPEN_MM = 3.0                # ... above this as open: the model shutting it is a false closure
GAP_WEIGHT = 0.5             # L1 on the inner-lip gap (mm), relative to the mouth's error (mm^2)
CLOSURE_WEIGHT = 0.5         # hinge on the gap where the take's lips are closed
FIT_LR = 5e-4               # Adam step size of the tuning
FIT_PARTS = "basis"          # what the tuning changes: measured on 1.5 min of takes, the
                             # basis alone cut held-out LVE 27 %, with the decoder only 10 %


class FitError(ValueError):
    """Bad input for fitting; the message names what is wrong and what to do."""


@dataclass
class Take:
    name: str
    samples: np.ndarray          # (S,) 16 kHz mono
    offsets: np.ndarray          # (T, N, 3) metres from the neutral
    fps: float


def identity_template(neutral: np.ndarray, faces, head):
    """-> (template (V, 3) m on the default head's topology, retarget map or None)."""
    if len(neutral) == head.n_vertices and (faces is None or len(faces) == len(head.faces)):
        return neutral.astype(np.float32), None
    if faces is None:
        raise FitError(f"the neutral has {len(neutral)} vertices, not the Speechface head's "
                       f"{head.n_vertices}: give its faces too (.npz 'faces' or .obj)")
    from .retarget import RetargetError, retarget
    try:
        rmap = retarget(neutral, faces)
    except RetargetError as ex:
        raise FitError(f"the neutral mesh: {ex}") from None
    back = (rmap.fitted.astype(np.float64) - rmap.translation) @ rmap.rotation / rmap.scale
    return back.astype(np.float32), rmap


def character_lip_gap(template, rmap, head) -> dict | None:
    """The character's inner-lip gap as a linear function of its offsets.

    On the template topology the head's lip pairs; through a retarget map, for each pair the
    character's vertices that take most of the upper and of the lower template vertex's motion
    (pairs without both are left out). -> {"vector": (N*3,) float32 on the character's
    flattened offsets at the head's size (its units over the map's scale; turned as the
    character is), giving the change of the mean gap in the same unit, "rest_mm": the gap at
    rest in mm}, or None when no pair reaches the character."""
    from .pipeline import lip_gap_vector

    pairs = np.asarray(head.landmarks["lip_pairs"], np.int64)
    t = np.asarray(template, np.float64)
    if rmap is None:
        on, kept, up, n = pairs, pairs, np.array([0.0, 0.0, 1.0]), len(t)
    else:
        m = rmap.matrix().tocsc()
        on, kept = [], []
        for a, b in pairs:
            ca, cb = m.getcol(a), m.getcol(b)
            if ca.nnz and cb.nnz:
                ia, ib = ca.indices[np.argmax(ca.data)], cb.indices[np.argmax(cb.data)]
                if ia != ib:
                    on.append((ia, ib))
                    kept.append((a, b))
        if not on:
            return None
        on, kept = np.array(on, np.int64), np.array(kept, np.int64)
        up, n = rmap.rotation[:, 2], rmap.n_target
    # the head's gap functional (along z) on these vertices, along the character's up instead
    vec = lip_gap_vector(on, n).reshape(n, 3)[:, 2:] * up
    rest = 1000.0 * float(t.reshape(-1) @ lip_gap_vector(kept, len(t)))
    return {"vector": vec.reshape(-1).astype(np.float32), "rest_mm": rest}


class Fitter:
    """The tuning problem: codes per take (as inference makes them), targets on the
    character's own vertices, weights per vertex."""

    def __init__(self, model, template, takes, rmap, head, seed: int = 0):
        from .closure_fit import closure_features
        from .pipeline import _resample_frames, inference_codes, utterance_mel

        self.net, self.prior, _ = model
        self.cfg = self.net.cfg
        self.template = torch.from_numpy(np.asarray(template, np.float32))[None]
        self.rmap = rmap
        # offsets on the character in mm at the head's size (its own units over the map's
        # scale), turned as the character is: the loss weighs every character alike
        unit = 1.0 if rmap is None else 1.0 / rmap.scale
        self.sparse = None
        if rmap is not None:
            m = rmap.matrix().tocoo()
            self.sparse = torch.sparse_coo_tensor(np.vstack([m.row, m.col]), m.data.astype(np.float32),
                                                  m.shape).coalesce()
            self.linear = torch.from_numpy(rmap.rotation.astype(np.float32))
        mouth = head.masks["mouth"].astype(np.float32)
        lips = head.masks["lips"].astype(np.float32)
        self.w_fit = self._on_target(np.stack([mouth + 2 * lips] * 3, 1)[None])[0, :, 0]     # (N,)
        self.w_keep = 1.0 - np.clip(self._on_target(np.stack([mouth] * 3, 1)[None])[0, :, 0], 0, 1)
        ctx = self.net.decoder.ctx
        self.codes, self.targets, self.hearings = [], [], []
        for take in takes:
            duration = len(take.samples) / 16000
            n_model = math.ceil(duration * self.cfg.fps)
            mel = utterance_mel(take.samples, self.cfg.phone_ear)[None]
            codes, _ = inference_codes(mel, self.net, self.prior, n_model, 600, seed, None)
            self.codes.append(codes)                                    # (n_model + 2 ctx, H)
            self.hearings.append(closure_features(self.net, mel, n_model))   # (W, n_model, Da)
            flat = take.offsets.reshape(len(take.offsets), -1)
            target = _resample_frames(flat, take.fps, self.cfg.fps, n_model) * 1000 * unit   # mm
            self.targets.append(torch.from_numpy(target.astype(np.float32)))
        self.ctx = ctx

    def closed(self, lip: dict) -> list:
        """Per take, (n_model,) bool: the take's lips closed (gap below CLOSED_MM) at that
        model frame; lip: ``character_lip_gap``'s."""
        vec = torch.from_numpy(lip["vector"])
        return [(lip["rest_mm"] + (t @ vec).numpy()) < CLOSED_MM for t in self.targets]

    def _on_target(self, x):
        """Template-space (B, V, 3) -> target space (B, N, 3) (numpy; weights, no rotation)."""
        if self.rmap is None:
            return x
        m = self.rmap.matrix()
        return np.stack([m @ b for b in x])

    def predict(self, net, one_hot):
        """-> offsets of ``net`` on the character (B, T, N*3) mm at the head's size."""
        tfeat = net.decoder.template_features(self.template).expand(len(one_hot), -1)
        coeffs = net.decoder(one_hot, tfeat)
        off = net.basis(coeffs)                                         # (B, T, V*3) template mm
        if self.sparse is None:
            return off
        b, t, _ = off.shape
        x = off.reshape(b * t, -1, 3).permute(1, 0, 2).reshape(-1, b * t * 3)
        y = torch.sparse.mm(self.sparse, x).reshape(-1, b * t, 3).permute(1, 0, 2)
        return (y @ self.linear.T).reshape(b, t, -1)

    def batch(self, gen, size: int, frames: int):
        ok = [i for i, c in enumerate(self.codes) if len(c) - 2 * self.ctx >= frames]
        if not ok:
            raise FitError("every take is shorter than one training crop (1.6 s): give longer takes")
        hot, tgt = [], []
        for _ in range(size):
            i = ok[int(torch.randint(len(ok), (1,), generator=gen))]
            k0 = int(torch.randint(len(self.codes[i]) - 2 * self.ctx - frames + 1, (1,), generator=gen))
            hot.append(torch.nn.functional.one_hot(self.codes[i][k0:k0 + frames + 2 * self.ctx],
                                                   self.cfg.classes).float())
            tgt.append(self.targets[i][k0:k0 + frames])
        return torch.stack(hot), torch.stack(tgt)


def fit(model, template, takes, rmap, head, minutes: float = 3.0, seed: int = 0, progress=None,
        cancel=None):
    """Tune the basis of ``model`` in place for ``minutes`` (``FIT_PARTS``), then its closure
    head (seconds). progress(fraction), cancel() -> True stops early (what was tuned so far
    stays). -> {"history": [{"step", "loss"}], "closure_head": what ``tune_closure`` did}."""
    from .closure_fit import tune_closure

    torch.manual_seed(seed)
    f = Fitter(model, template, takes, rmap, head, seed)
    net = f.net
    default = copy.deepcopy(net)                     # what the default does, frozen
    parts = {"basis": [net.basis], "decoder+basis": [net.decoder, net.basis],
             "audio+basis": [net.decoder.audio, net.basis]}[FIT_PARTS]
    params = [p for m in parts for p in m.parameters()]
    for p in list(net.parameters()) + list(default.parameters()):
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=FIT_LR)
    w_fit = torch.from_numpy(np.repeat(f.w_fit, 3).astype(np.float32))
    w_keep = torch.from_numpy(np.repeat(f.w_keep, 3).astype(np.float32))
    gen = torch.Generator().manual_seed(seed)
    lip = character_lip_gap(template, rmap, head)
    gap_vec = rest_gap = None
    if lip is not None:               # pred, tgt: the character's offsets, mm of its units
        gap_vec = torch.from_numpy(lip["vector"])
        rest_gap = lip["rest_mm"]
    history, t0, step = [], time.perf_counter(), 0
    while time.perf_counter() - t0 < minutes * 60 and not (cancel is not None and cancel()):
        hot, tgt = f.batch(gen, 8, 48)
        pred = f.predict(net, hot)
        with torch.no_grad():                     # away from the mouth: as the default does
            keep = f.predict(default, hot)
        loss = ((pred - tgt) ** 2 * w_fit).mean() + 0.5 * ((pred - keep) ** 2 * w_keep).mean()
        if gap_vec is not None:       # the inner-lip gap, and a hinge where the take is closed
            gap_gt, gap_pred = rest_gap + tgt @ gap_vec, rest_gap + pred @ gap_vec     # mm
            closed = gap_gt < CLOSED_MM
            gap_loss = GAP_WEIGHT * (gap_pred - gap_gt).abs().mean()
            if closed.any():
                gap_loss = gap_loss + CLOSURE_WEIGHT * torch.relu(gap_pred - 0.3)[closed].mean()
            loss = loss + w_fit.mean() * gap_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if step % 25 == 0:
            history.append({"step": step, "loss": round(loss.item(), 4)})
            if progress is not None:
                progress(min(1.0, (time.perf_counter() - t0) / (minutes * 60)), loss.item())
    for p in net.parameters():
        p.requires_grad_(False)
    # the closure head, on where the takes' lips are closed (``core/closure_fit.py``)
    if lip is None:
        closure = {"note": "not tuned: no lip pair of the head reaches the character"}
    elif cancel is not None and cancel():
        closure = {"note": "not tuned: cancelled"}
    else:
        closure = tune_closure(net, f.hearings, f.closed(lip), cancel=cancel)
    return {"history": history, "closure_head": closure}


def evaluate(model, template, takes, rmap, head, seed: int = 0) -> dict:
    """LVE (mm at the head's size: a character in other units or of another size is brought
    to it by its map's scale), lip closure (share of the takes' closed-lip frames the model
    closes) and false closure (share of the frames the takes hold open, gap above OPEN_MM,
    that the model closes) on the takes, for a model."""
    from .pipeline import animate

    lips = head.masks["lips"] > 0.5
    lip_v = np.flatnonzero(lips)
    if rmap is not None:              # the character's lip vertices
        lip_v = np.flatnonzero((rmap.weight * lips[rmap.index]).sum(1) > 0.5)
    lip = character_lip_gap(template, rmap, head)
    errs, closed, hit, opened, shut_open = [], 0, 0, 0, 0
    for take in takes:
        anim = animate(take.samples, 16000, fps=take.fps, template=template, model=model, seed=seed)
        pred = anim.offsets()
        n = min(len(pred), len(take.offsets))
        gt = take.offsets[:n]
        pred = pred[:n]
        if rmap is not None:          # in metres at the head's size, as the character is turned
            pred, gt = rmap.transfer(pred) / rmap.scale, gt / rmap.scale
        errs.extend((np.linalg.norm(pred - gt, axis=2)[:, lip_v].max(1) * 1000).tolist())
        if lip is None:
            continue
        gap_gt = lip["rest_mm"] + 1000 * gt.reshape(n, -1) @ lip["vector"]
        gap_pred = lip["rest_mm"] + 1000 * pred.reshape(n, -1) @ lip["vector"]
        shut = gap_gt < CLOSED_MM
        closed += int(shut.sum())
        hit += int((gap_pred[shut] < CLOSED_MM).sum())
        wide = gap_gt > OPEN_MM
        opened += int(wide.sum())
        shut_open += int((gap_pred[wide] < CLOSED_MM).sum())
    out = {"lve_mm": round(float(np.mean(errs)), 3)}
    if closed:
        out["closure"] = round(hit / closed, 3)
        out["closed_frames"] = closed
    if opened:
        out["false_closure"] = round(shut_open / opened, 3)
    return out


def save_fitted(path, base_path, model, template, report: dict):
    """Write the fitted checkpoint: the base checkpoint's tensors with the tuned weights of
    ``model`` (net, prior, meta) and ``identity.template`` (V, 3) m; ``report`` goes into the
    metadata (data.identity and training.fit_identity). Returns the path."""
    from .checkpoint import read_checkpoint, save_checkpoint

    tensors, base_meta = read_checkpoint(base_path)
    state = model[0].state_dict()
    tensors.update({f"model.{k}": v for k, v in state.items() if f"model.{k}" in tensors})
    tensors["identity.template"] = torch.from_numpy(np.asarray(template, np.float32))
    data = dict(base_meta.get("data", {}), identity=report)
    training = dict(base_meta.get("training", {}), fit_identity=report)
    return save_checkpoint(path, tensors, model[0].cfg, data, training,
                           contents="model+prior+identity")


def fit_character(neutral, faces, takes, base_path, out_path, name: str, minutes: float = 3.0,
                  seed: int = 0, progress=None, cancel=None) -> dict:
    """The whole job: template (and map), held-out split, tuning, scores, checkpoint.
    neutral (N, 3) m; faces or None; takes [Take]. -> report (also stored in the checkpoint)."""
    from .assets import load_default_head
    from .checkpoint import CheckpointError
    from .pipeline import get_model

    head = load_default_head()
    template, rmap = identity_template(np.asarray(neutral, np.float64), faces, head)
    try:
        net, prior, meta = get_model(base_path)
    except CheckpointError as ex:
        raise FitError(str(ex)) from None
    model = (copy.deepcopy(net), prior, meta)
    report = {"identity": name, "base": str(base_path), "takes": [t.name for t in takes],
              "topology": "speechface head" if rmap is None else f"{len(neutral)} vertices, retargeted"}
    if takes:
        held = max(1, len(takes) // 4) if len(takes) > 1 else 0
        train, test = takes[:len(takes) - held], takes[len(takes) - held:]
        before = evaluate((net, prior, meta), template, test or train, rmap, head, seed)
        t0 = time.perf_counter()
        done = fit(model, template, train, rmap, head, minutes, seed, progress, cancel)
        after = evaluate(model, template, test or train, rmap, head, seed)
        report.update({"held_out": [t.name for t in test], "default": before, "fitted": after,
                       "fit_s": round(time.perf_counter() - t0, 1),
                       "closure_head": done["closure_head"]})
    else:
        report["note"] = ("no motion: adapted to the new neutral shape only (the decoder is "
                          "conditioned on the template)")
    save_fitted(out_path, base_path, model, template, report)
    return report
