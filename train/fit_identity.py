"""``python3 -m train fit-identity NEUTRAL --out CKPT [--motion DIR]``: the default model fitted
to one character (the fitting itself: ``core/identity.py``, shared with the add-on).

- NEUTRAL: the character's face at rest, metres: ``.npy`` (N, 3), ``.npz`` with ``vertices``
  (and ``faces`` for another topology) or ``.obj``. On the default head's topology it is the
  identity template itself; on any other topology the default head is registered onto it
  (``core.retarget``), the registered head becomes the template and the map carries motion.
- ``--motion DIR`` (optional): a few minutes of that character speaking, one pair per take:
  ``NAME.npz`` with ``vertices`` (T, N, 3) metres on the neutral's topology and ``fps``, and
  ``NAME.wav`` (or .flac/.ogg) with its audio. Every file is checked first; a bad one stops the
  fit, naming it, before anything is written.
- Tuning: the vertex basis, against the takes' mouth region (``core/identity.py``), then the
  closure head on the takes' closed-lip frames (``core/closure_fit.py``).
- The last quarter of the takes is held out; both the default and the fitted model are scored
  on it (LVE: per frame the largest lip-vertex error, mm; lip closure: share of the takes'
  closed-lip frames the model also closes; false closure: share of the open ones it closes)
  and the figures go into the checkpoint and a JSON report beside it.
- Without motion, the checkpoint carries the new neutral shape (the decoder is conditioned on
  the template) and says so.

The checkpoint is the base model with the tuned weights and ``identity.template``; animate()
uses that template when given none.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from core.identity import FitError, Take, fit_character


def load_neutral(path: Path):
    """-> (vertices (N, 3) float64 m, faces list or None)."""
    path = Path(path)
    if not path.is_file():
        raise FitError(f"{path}: no such file")
    try:
        if path.suffix == ".npy":
            v, faces = np.load(path, allow_pickle=False), None
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as d:
                v = d["vertices"]
                faces = d["faces"] if "faces" in d else None
        elif path.suffix == ".obj":
            v, faces = _read_obj(path)
        else:
            raise FitError(f"{path}: use .npy, .npz (vertices, faces) or .obj for the neutral")
    except (OSError, ValueError, KeyError) as ex:
        raise FitError(f"{path}: cannot read the neutral mesh ({ex})") from None
    v = np.asarray(v, np.float64)
    if v.ndim != 2 or v.shape[1] != 3 or len(v) < 4 or not np.isfinite(v).all():
        raise FitError(f"{path}: the neutral must be finite (N, 3) vertices, got {v.shape}")
    return v, faces


def _read_obj(path: Path):
    verts, faces = [], []
    for line in path.read_text().splitlines():
        parts = line.split()
        if parts and parts[0] == "v":
            verts.append([float(x) for x in parts[1:4]])
        elif parts and parts[0] == "f":
            faces.append([int(p.split("/")[0]) - 1 for p in parts[1:]])
    return np.array(verts), faces


def load_takes(folder: Path, neutral: np.ndarray) -> list:
    """Every NAME.npz + audio pair in folder, checked against the neutral (N, 3) m; FitError
    names the first bad file."""
    from core.audio import AudioError, load_speech

    folder = Path(folder)
    files = sorted(folder.glob("*.npz"))
    if not files:
        raise FitError(f"{folder}: no takes (NAME.npz with vertices and fps, beside NAME.wav)")
    takes = []
    for f in files:
        try:
            with np.load(f, allow_pickle=False) as d:
                verts = np.asarray(d["vertices"], np.float64)
                fps = float(d["fps"])
        except (OSError, ValueError, KeyError) as ex:
            raise FitError(f"{f}: needs 'vertices' (T, N, 3) and 'fps' ({ex})") from None
        if verts.ndim != 3 or verts.shape[2] != 3 or len(verts) < 2:
            raise FitError(f"{f}: vertices must be (T, N, 3), got {verts.shape}")
        if verts.shape[1] != len(neutral):
            raise FitError(f"{f}: {verts.shape[1]} vertices per frame, the neutral has "
                           f"{len(neutral)}: export the takes from the same mesh")
        if not np.isfinite(verts).all():
            raise FitError(f"{f}: the vertices contain NaN or infinite values")
        if not 5 <= fps <= 240:
            raise FitError(f"{f}: fps {fps} is not a frame rate (5-240)")
        audio = next((f.with_suffix(s) for s in (".wav", ".flac", ".ogg") if f.with_suffix(s).is_file()), None)
        if audio is None:
            raise FitError(f"{f}: no audio beside it ({f.stem}.wav, .flac or .ogg)")
        try:
            x = load_speech(audio)
        except AudioError as ex:
            raise FitError(str(ex)) from None
        motion_s, audio_s = len(verts) / fps, len(x) / 16000
        if abs(motion_s - audio_s) > max(0.25, 0.05 * audio_s):
            raise FitError(f"{f}: {motion_s:.2f} s of motion at {fps:g} fps but {audio_s:.2f} s of "
                           f"audio in {audio.name}: check the frame rate or trim them to match")
        offsets = verts - neutral[None]
        size = float(np.ptp(neutral, axis=0).max())
        if np.median(np.abs(offsets)) > 0.05 * size:
            raise FitError(f"{f}: the frames do not sit on the neutral mesh (units or placement "
                           "differ): export both from the same object")
        takes.append(Take(f.stem, x, offsets.astype(np.float32), fps))
    return takes


def _scores(r: dict) -> str:
    """One model's held-out figures in words."""
    out = f"LVE {r['lve_mm']:.2f} mm"
    if "closure" in r:
        out += f", lips closed in {r['closure']:.0%} of closed frames"
    if "false_closure" in r:
        out += f", in {r['false_closure']:.1%} of open ones"
    return out


def main_fit_identity(argv=None) -> int:
    from core.pipeline import DEFAULT_CHECKPOINT

    ap = argparse.ArgumentParser(prog="python3 -m train fit-identity", description=__doc__.split("\n\n")[0])
    ap.add_argument("neutral", type=Path, help="the character at rest: .npy, .npz or .obj, metres")
    ap.add_argument("--out", type=Path, required=True, help="the fitted checkpoint (.safetensors)")
    ap.add_argument("--motion", type=Path, help="folder of takes: NAME.npz (vertices, fps) + NAME.wav")
    ap.add_argument("--name", default=None, help="the identity's name (default: the neutral's)")
    ap.add_argument("--base", type=Path, default=None, help="checkpoint to start from (default model)")
    ap.add_argument("--minutes", type=float, default=3.0, help="tuning time (default 3)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    from tqdm import tqdm
    try:
        neutral, faces = load_neutral(args.neutral)
        takes = load_takes(args.motion, neutral) if args.motion else []
        with tqdm(total=100, desc="fit identity", unit="%", disable=args.quiet or not takes) as bar:
            def show(fraction, loss):
                bar.n = int(100 * fraction)
                bar.set_postfix(loss=f"{loss:.3f}")
                bar.refresh()
            report = fit_character(neutral, faces, takes, args.base or DEFAULT_CHECKPOINT, args.out,
                                   args.name or args.neutral.stem, args.minutes, args.seed, show)
    except FitError as ex:
        print(f"error: {ex}", flush=True)
        return 2
    if takes:
        held = ", ".join(report["held_out"]) or "none: scored on the training takes"
        head = report.get("closure_head", {})
        print(f"held-out takes ({held}):\n"
              f"  default model: {_scores(report['default'])}\n"
              f"  fitted model:  {_scores(report['fitted'])}\n"
              f"  tuned in {report['fit_s']:.0f} s; closure head: "
              + head.get("note", f"tuned on {head.get('closed_frames')} closed-lip frames"), flush=True)
    else:
        print(f"no motion given: the checkpoint is {report['note'][len('no motion: '):]}; give "
              "--motion DIR to fit how this character moves", flush=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}", flush=True)
    return 0
