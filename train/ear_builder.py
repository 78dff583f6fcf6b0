"""Build ``core/assets/phone_ear.npz`` from pocketsphinx's en-us acoustic model.

``python3 -m train build-ear [--check]``. The pinned PyPI package ``pocketsphinx`` (already a
dependency: the aligner) ships CMU Sphinx's generic US English model, trained on human speech:
a phonetically tied mixture model (PTM) with one codebook of 128 diagonal Gaussians per
context-independent (CI) phone and feature stream (13 cepstra, their deltas, their second
deltas), and mixture weights per senone. Only the CI senones' weights are kept (3 states x 42
phones): ``core.phone_ear`` scores them per 10 ms frame, without any search.

File layout (all from the model, nothing learned here):
  phones     (42,) str          CI phone names, the model's order (+NSN+ +SPN+ AA ... ZH, SIL)
  means      (42, 3, 128, 13) float32   Gaussian means per phone codebook, stream, density
  variances  (42, 3, 128, 13) float32   their diagonal variances, floored at VARIANCE_FLOOR
  mixw_q     (3, 128, 126) uint8        quantised CI-senone mixture weights (senone 3 p + s is
                                        phone p's state s): ln w = -q * MIXW_LN_STEP
  mixw_ln_step ()  float64              the quantisation step in natural-log units
"""
from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

ASSET_NAME = "phone_ear.npz"
POCKETSPHINX_VERSION = "5.1.1"
VARIANCE_FLOOR = 1e-4          # as sphinx's -varfloor default
# sendump weights are -log base 1.0001 of w, shifted right by 10 bits (SENSCR_SHIFT)
MIXW_LN_STEP = 1024 * np.log(1.0001)
N_STATES = 3


def model_dir() -> Path:
    """The en-us model folder of the installed pocketsphinx, which must be the pinned version
    (requirements.txt): another release may ship other parameters."""
    from importlib.metadata import version

    import pocketsphinx
    if version("pocketsphinx") != POCKETSPHINX_VERSION:
        raise RuntimeError(f"pocketsphinx {version('pocketsphinx')} is installed; the phone ear "
                           f"is built from {POCKETSPHINX_VERSION} (pip install "
                           f"pocketsphinx=={POCKETSPHINX_VERSION})")
    return Path(pocketsphinx.get_model_path()) / "en-us" / "en-us"


def read_s3_gaussians(path) -> np.ndarray:
    """Sphinx-3 binary means/variances file -> (codebooks, streams, densities, veclen) float32."""
    b = Path(path).read_bytes()
    i = b.index(b"endhdr\n") + len(b"endhdr\n")
    if struct.unpack_from("<I", b, i)[0] != 0x11223344:
        raise ValueError(f"{path}: not a little-endian sphinx-3 parameter file")
    i += 4
    n_cb, n_feat, n_den = struct.unpack_from("<3i", b, i)
    i += 12
    veclen = struct.unpack_from(f"<{n_feat}i", b, i)
    i += 4 * n_feat
    n, = struct.unpack_from("<i", b, i)
    i += 4
    if len(set(veclen)) != 1 or n != n_cb * n_feat * n_den * veclen[0]:
        raise ValueError(f"{path}: unexpected layout {n_cb, n_feat, n_den, veclen, n}")
    return np.frombuffer(b, "<f4", n, i).reshape(n_cb, n_feat, n_den, veclen[0]).astype(np.float32)


def read_sendump(path, n_streams: int) -> np.ndarray:
    """pocketsphinx ``sendump`` -> quantised mixture weights (streams, codewords, senones) uint8."""
    b = Path(path).read_bytes()
    p = 0
    while True:                                    # length-prefixed header strings, 0 ends them
        n, = struct.unpack_from("<i", b, p)
        p += 4
        if n == 0:
            break
        p += n
    n_cw, n_sen = struct.unpack_from("<2i", b, p)
    p += 8
    if len(b) - p != n_streams * n_cw * n_sen:
        raise ValueError(f"{path}: {len(b) - p} bytes of weights, expected {n_streams * n_cw * n_sen}")
    return np.frombuffer(b, np.uint8, n_streams * n_cw * n_sen, p).reshape(n_streams, n_cw, n_sen)


def read_ci_phones(path) -> list:
    """The CI phone names from a binary ``mdef`` (BMDF), in the model's order."""
    b = Path(path).read_bytes()
    tag = b"END FILE FORMAT DESCRIPTION"
    p = b.index(tag) + len(tag)
    p = (p + 3) // 4 * 4
    n_ci = struct.unpack_from("<i", b, p)[0]
    p += 40                                        # ten int32 counts
    names = []
    for _ in range(n_ci):
        end = b.index(b"\0", p)
        names.append(b[p:end].decode("ascii"))
        p = end + 1
    return names


def build(out_dir) -> dict:
    """Write ASSET_NAME into out_dir (deterministic bytes); returns a summary."""
    d = model_dir()
    phones = read_ci_phones(d / "mdef")
    means = read_s3_gaussians(d / "means")
    variances = np.maximum(read_s3_gaussians(d / "variances"), VARIANCE_FLOOR).astype(np.float32)
    if means.shape[0] != len(phones):
        raise ValueError(f"{len(phones)} CI phones but {means.shape[0]} codebooks: not a PTM model")
    mixw = read_sendump(d / "sendump", means.shape[1])[:, :, :N_STATES * len(phones)]
    out = Path(out_dir) / ASSET_NAME
    out.parent.mkdir(parents=True, exist_ok=True)
    # np.savez (not _compressed): its zip entries carry no timestamps that would vary
    with open(out, "wb") as f:
        np.savez(f, phones=np.array(phones), means=means, variances=variances,
                 mixw_q=np.ascontiguousarray(mixw), mixw_ln_step=np.float64(MIXW_LN_STEP))
    return {"file": str(out), "phones": len(phones), "bytes": os.path.getsize(out)}
