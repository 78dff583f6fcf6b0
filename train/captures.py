"""Captured face motion (VOCASET, BIWI, Multiface layouts) -> a Speechface corpus to train on.

``python3 -m train fit DATASET --out RUN`` calls :func:`import_captures` when DATASET is not a
Speechface corpus, so studios train on their captures with the same command as the default
model. Any topology: for each subject the default head is registered onto the subject's
neutral mesh (``core.retarget``), and every frame's motion is carried onto the default head's
vertices (each takes the motion of the closest point of the capture's surface). The model
keeps one topology, so the pipeline, the add-on and retargeting work unchanged.

What is written (the corpus format of ``train.corpus`` with dense targets)::

    OUT/corpus.json   ..., "targets": "dense", "source": DATASET, "subjects": [...]
    OUT/basis.npz     basis (K+1, V*3) float32 metres: row 0 the mean offset, then the first K
                      principal components of the training frames' offsets
    OUT/seq/<id>.npz  coeffs (T, K+1) float32 (column 0 is 1: offsets = coeffs @ basis),
                      arkit (T, 52) the face units fitted to the motion (bounded least squares,
                      for the model's ARKit head), no phones, meta (identity = subject)
    OUT/identities.npz  each subject's neutral on the default head's topology

Default-head vertices the capture has no surface near (teeth, tongue, the inside of the mouth,
anything more than ``MAX_GAP_MM`` away) take the motion of the nearest vertex that has one.
The split holds out whole subjects when there are at least 3 (the last for test, the one
before for validation), otherwise every 10th sentence (validation) and the next one (test).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from core.arkit import ARKIT_NAMES
from core.assets import load_default_head
from core.retarget import (RetargetError, build_map, retarget, skin_vertices, triangulate,
                           vertex_normals)
from core.rig import identity_scale
from core.surface_map import lip_sides
from train.corpus import FORMAT, VERSION
from train.loaders import SAMPLE_RATE, open_dataset, read_obj

MAX_GAP_MM = 3.0          # a default-head vertex farther than this from the capture is not captured
COMPONENTS = 96           # principal components kept of the motion (plus the mean)
PCA_FRAMES = 20000        # at most this many training frames go into the PCA


class CaptureError(ValueError):
    """A capture dataset that cannot be imported; the message says what to do."""


UP_AXES = {"z": np.eye(3), "y": np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])}
# "z": Blender's convention (+Z up, the face looks along -Y); "y": the OBJ / FLAME / VOCASET
# convention (+Y up, the face looks along +Z), turned into Blender's


def carry_onto_default(template: np.ndarray, faces, head=None, up: str = "z"):
    """Register the default head onto one subject's neutral mesh.

    template (N, 3) float metres, faces: polygons of the capture topology; up: its up axis
    (``UP_AXES``). Returns (neutral (V, 3) float32 metres: the subject's face on the default
    head's vertices, brought to the default head's size and pose by the registration's
    similarity; carry: a function offsets (T, N, 3) m -> (T, V, 3) m on the default head, in
    that same frame and scale)."""
    from scipy.sparse import csr_matrix, diags, vstack
    from scipy.spatial import cKDTree

    head = head or load_default_head()
    turn = UP_AXES[up]
    template = np.asarray(template, np.float64) @ turn.T
    tris = triangulate(faces)
    m = retarget(template, faces, head)
    rot, s, t = m.rotation, m.scale, m.translation
    fitted = m.fitted.astype(np.float64)                                    # (V, 3) capture units
    normals = vertex_normals(fitted, head.triangles().astype(np.int64))
    # each island of the head (skin, teeth, eyes) takes its motion from the capture's island
    # it lies closest to, so the inner lips never take the tongue's motion
    # ... and each lip vertex from the capture's same lip (sides carried by the forward map)
    sides = np.sign((m.weight * lip_sides(head)[m.index]).sum(1)).astype(np.int8)
    idx, bary, dist = build_map(template, tris, fitted, normals, s,
                                target_tris=head.triangles().astype(np.int64), sides=sides)
    skin = skin_vertices(head)
    captured = skin & (dist < MAX_GAP_MM / 1000 * s)
    if captured.sum() < 0.3 * skin.sum():
        raise CaptureError("the capture mesh covers too little of the face to learn from "
                           f"({captured.sum()} of {skin.sum()} skin vertices within {MAX_GAP_MM} mm)")
    on_surface = np.einsum("vk,vkd->vd", bary, np.asarray(template, np.float64)[idx])
    neutral_capture = np.where(captured[:, None], on_surface, fitted)
    neutral = ((neutral_capture - t) @ rot / s).astype(np.float32)
    # Motion: the transpose of the forward map (capture vertex -> registered head triangle),
    # each row normalised: a head vertex averages the capture vertices that map onto its
    # triangles, weighted by its barycentric share. The forward map never lets a lower-lip
    # vertex take the upper lip's place, so neither does its transpose (the closest point
    # alone does where lips touch at rest). Head vertices no capture vertex lands near take
    # the closest point's motion; uncaptured ones the motion of the nearest captured vertex.
    forward = m.matrix().T.tocsr()                                         # (V, N)
    share = np.asarray(forward.sum(1)).ravel()
    landed = np.flatnonzero(captured & (share > 0.05))
    closest = np.flatnonzero(captured & (share <= 0.05))
    rows = vstack([diags(1.0 / share[landed]) @ forward[landed],
                   csr_matrix((bary[closest].ravel(),
                               (np.repeat(np.arange(len(closest)), 3), idx[closest].ravel())),
                              shape=(len(closest), len(template)))]).tocsr()
    pick = np.empty(head.n_vertices, np.int64)
    pick[np.concatenate([landed, closest])] = np.arange(len(landed) + len(closest))
    fill = np.flatnonzero(~captured)
    donor = np.flatnonzero(captured)[cKDTree(neutral[captured]).query(neutral[fill])[1]]
    pick[fill] = pick[donor]
    carry_matrix = rows[pick].astype(np.float32)                           # (V, N)
    to_default = (turn.T @ rot / s).astype(np.float32)

    def carry(offsets: np.ndarray) -> np.ndarray:
        off = np.asarray(offsets, np.float32)
        moved = np.stack([carry_matrix @ f for f in off])                  # (T, V, 3)
        return moved @ to_default
    return neutral, carry


def _split(subjects: list) -> dict:
    order = sorted(set(subjects))
    if len(order) >= 3:
        role = {order[-1]: "test", order[-2]: "val"}
        return {i: role.get(s, "train") for i, s in enumerate(subjects)}
    return {i: ("val" if i % 10 == 9 else "test" if i % 10 == 0 and i else "train")
            for i in range(len(subjects))}


def import_captures(dataset, out, layout: str | None = None, mesh=None, up: str = "z",
                    components: int = COMPONENTS, progress: bool = True, **options) -> Path:
    """Convert a capture dataset folder into a Speechface corpus at ``out`` (see the module doc).

    mesh: an .obj with the capture topology's faces, for layouts whose files hold vertices
    only (VOCASET/BIWI); up: the captures' up axis, "z" or "y" (``UP_AXES``); options go to ``train.loaders.open_dataset`` (fps, scale, ...).
    Nothing is left at ``out`` on error. Returns ``out``."""
    import shutil

    out = Path(out)
    if (out / "corpus.json").is_file():
        raise CaptureError(f"{out} already holds a corpus; remove it or pick another folder")
    ds = open_dataset(dataset, layout, **options)
    if len(ds) == 0:
        raise CaptureError(f"{dataset}: no sequences found")
    mesh_faces = read_obj(mesh, with_faces=True)[1] if mesh else None
    head = load_default_head()
    work = out.with_name(f".{out.name}.importing")
    shutil.rmtree(work, ignore_errors=True)
    (work / "seq").mkdir(parents=True)
    (work / "motion").mkdir()
    try:
        per_subject, seqs, fps = {}, [], None
        for seq in tqdm(ds, total=len(ds), desc="import captures", disable=not progress):
            faces = seq.faces if seq.faces is not None else mesh_faces
            if faces is None:
                raise CaptureError(f"{seq.source}: the dataset has no faces for its meshes; pass "
                                   "--capture-mesh FILE.obj (any mesh with its topology, e.g. "
                                   "the template as .obj)")
            if fps is not None and abs(seq.fps - fps) > 1e-6:
                raise CaptureError(f"{seq.source}: {seq.fps} fps, the others {fps}; pass "
                                   "--target-fps to resample them all")
            fps = seq.fps
            if seq.subject not in per_subject:
                if np.max(faces) >= len(seq.template):
                    raise CaptureError(f"{seq.source}: the faces index {np.max(faces) + 1} "
                                       f"vertices, the template has {len(seq.template)}")
                try:
                    per_subject[seq.subject] = carry_onto_default(seq.template, faces, head, up)
                except RetargetError as exc:
                    raise CaptureError(f"{seq.source}: subject {seq.subject!r}: {exc} (captures "
                                       "with +Y up: pass --capture-up y)") from exc
            seq_id = f"{len(seqs):06d}"
            moved = work / "motion" / f"{seq_id}.npy"      # on disk: a dataset can be hours long
            np.save(moved, per_subject[seq.subject][1](seq.offsets))
            sf.write(work / "seq" / f"{seq_id}.wav", np.clip(seq.audio, -1, 1), SAMPLE_RATE,
                     subtype="PCM_16")
            seqs.append((seq_id, seq.subject, seq.sentence, seq.source, moved))
        split = _split([s[1] for s in seqs])
        train = [s[4] for i, s in enumerate(seqs) if split[i] == "train"] or [s[4] for s in seqs]
        motion = {p: np.load(p, mmap_mode="r") for p in train}
        where = np.concatenate([np.stack([np.full(len(m), i), np.arange(len(m))], 1)
                                for i, m in enumerate(motion.values())])
        rng = np.random.default_rng(0)
        where = where[np.sort(rng.choice(len(where), min(len(where), PCA_FRAMES), replace=False))]
        arrays = list(motion.values())
        pick = np.stack([arrays[i][k].reshape(-1) for i, k in where]).astype(np.float64)
        del motion, arrays
        mean = pick.mean(0)
        _, sv, vt = np.linalg.svd(pick - mean, full_matrices=False)
        k = min(components, len(vt))
        basis = np.concatenate([mean[None], vt[:k]]).astype(np.float32)         # (K+1, V*3)
        units = head.units.dense().reshape(len(ARKIT_NAMES), -1)
        subjects = list(per_subject)
        for i, (seq_id, subject, sentence, source, moved) in enumerate(seqs):
            flat = np.load(moved).reshape(-1, basis.shape[1])
            coeffs = np.concatenate([np.ones((len(flat), 1), np.float32),
                                     ((flat - mean) @ vt[:k].T).astype(np.float32)], 1)
            scale = identity_scale(per_subject[subject][0])
            arkit = rig_fit(coeffs, basis, units * scale)
            meta = {"identity": subject, "sentence": sentence, "source": source,
                    "voice": subject, "text": None}
            with open(work / "seq" / f".{seq_id}.tmp.npz", "wb") as fh:
                np.savez(fh, coeffs=coeffs, arkit=arkit, phone_names=np.array([], str),
                         phone_times=np.zeros((0, 2), np.float32),
                         meta=np.array(json.dumps(meta, sort_keys=True)))
            os.replace(work / "seq" / f".{seq_id}.tmp.npz", work / "seq" / f"{seq_id}.npz")
        explained = float((sv[:k] ** 2).sum() / max((sv ** 2).sum(), 1e-30))
        np.savez(work / "basis.npz", basis=basis)
        np.savez(work / "identities.npz", names=np.array(subjects),
                 templates=np.stack([per_subject[s][0] for s in subjects]))
        ids = {r: [seqs[i][0] for i in split if split[i] == r] for r in ("train", "val", "test")}
        (work / "split.json").write_text(json.dumps(ids, indent=1))
        hours = sum(sf.info(str(work / "seq" / f"{s[0]}.wav")).duration for s in seqs) / 3600
        shutil.rmtree(work / "motion")
        (work / "corpus.json").write_text(json.dumps({
            "format": FORMAT, "version": VERSION, "fps": fps, "sample_rate": SAMPLE_RATE,
            "arkit_names": list(ARKIT_NAMES), "identities": subjects, "targets": "dense",
            "source": str(Path(dataset).resolve()), "subjects": subjects, "hours": hours,
            "components": k, "variance_explained": round(explained, 5),
            "counts": {r: len(v) for r, v in ids.items()}}, indent=1))
        os.replace(work, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def rig_fit(coeffs: np.ndarray, basis: np.ndarray, units: np.ndarray) -> np.ndarray:
    """Face-unit weights (T, 52) in 0..1 closest to offsets = coeffs @ basis (metres)."""
    from core.rig_drive import fit_weights
    return fit_weights(coeffs, basis, np.zeros(basis.shape[1], np.float32), units, iters=200)


def export_multiface(corpus, out, limit: int | None = None, seed: int = 0) -> Path:
    """Write a Speechface corpus as a Multiface-style capture dataset, on a copy of the head with
    its vertices shuffled and its quads split into triangles, in millimetres: what a capture
    studio would hand over, for trying ``train fit`` on captures (and for the tests).

    OUT/<identity>/template.obj, OUT/<identity>/tracked_mesh/<seq id>/<frame>.bin (float32 x y
    z per vertex), OUT/<identity>/audio/<seq id>.wav. ``limit``: the first N sequences only.
    Capture vertex i is the head's vertex ``order[i]``; returns ``out``."""
    from train.corpus import Corpus

    corpus = corpus if isinstance(corpus, Corpus) else Corpus(corpus)
    if corpus.dense:
        raise CaptureError(f"{corpus.root} already holds captured motion")
    head = load_default_head()
    order = np.random.default_rng(seed).permutation(head.n_vertices)
    tris = np.argsort(order)[head.triangles()]
    out = Path(out)
    for seq_id in corpus.ids()[:limit]:
        seq = corpus.load(seq_id)
        folder = out / seq.meta["identity"]
        template_mm = seq.template[order] * 1000
        if not (folder / "template.obj").exists():
            folder.mkdir(parents=True, exist_ok=True)
            lines = [f"v {x:.5f} {y:.5f} {z:.5f}" for x, y, z in template_mm]
            lines += ["f " + " ".join(str(i + 1) for i in t) for t in tris]
            (folder / "template.obj").write_text("\n".join(lines) + "\n")
        frames = folder / "tracked_mesh" / seq_id
        frames.mkdir(parents=True, exist_ok=True)
        for k, off in enumerate(seq.offsets()):
            (template_mm + off[order] * 1000).astype("<f4").tofile(frames / f"{k:06d}.bin")
        (folder / "audio").mkdir(exist_ok=True)
        sf.write(folder / "audio" / f"{seq_id}.wav", seq.audio, seq.sample_rate)
    return out


def main_export_multiface(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python3 -m train export-multiface",
                                 description=export_multiface.__doc__.split("\n")[0])
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--limit", type=int, default=None, help="the first N sequences only")
    args = ap.parse_args(argv)
    path = export_multiface(args.corpus, args.out, args.limit)
    print(f"captures -> {path.resolve()}")
    return 0
