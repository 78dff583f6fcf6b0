"""``python3 -m core animate SPEECH -o OUT.npz [--fps 30] [--seed 0] [--checkpoint PATH]``

Writes the animation contract (see ``core.pipeline.write_npz``). Errors exit non-zero with a
one-line reason on stderr.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main_animate(argv) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m core animate",
                                 description="speech file -> face animation (.npz)")
    ap.add_argument("speech", type=Path, help="wav, flac or ogg (any rate, mono or stereo)")
    ap.add_argument("-o", "--output", type=Path, required=True, help="output .npz")
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=0,
                    help="draws blinks and brows (the mouth's codes do not depend on it)")
    ap.add_argument("--checkpoint", type=Path, default=None, help="default: the shipped model")
    ap.add_argument("--identity", default=None, help="animate one of the shipped identities")
    ap.add_argument("--temperature", type=float, default=1.0,
                    help="prior sampling temperature; 0 picks the most likely upper face")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)

    from tqdm import tqdm

    from .assets import load_default_head
    from .audio import AudioError
    from .checkpoint import CheckpointError
    from .pipeline import animate, get_model, write_npz

    try:
        template = load_default_head().identity(args.identity) if args.identity else None
    except ValueError:
        names = ", ".join(load_default_head().identity_names)
        print(f"error: unknown identity {args.identity!r}; choose one of {names}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    bar = tqdm(total=100, desc="animate", unit="%", disable=args.quiet)
    try:
        model = get_model(args.checkpoint)
        anim = animate(args.speech, fps=args.fps, template=template, model=model, seed=args.seed,
                       temperature=args.temperature or None,
                       progress=lambda f: bar.update(round(100 * f) - bar.n))
        bar.close()
        args.output.parent.mkdir(parents=True, exist_ok=True)
        write_npz(anim, args.output)
    except (AudioError, CheckpointError, ValueError, OSError) as exc:
        bar.close()
        print(f"error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
              file=sys.stderr)
        return 1
    if not args.quiet:
        print(f"{anim.n_frames} frames at {anim.fps:g} fps ({anim.duration_s:.2f} s of speech) "
              f"in {time.perf_counter() - t0:.2f} s -> {args.output.resolve()}")
    return 0


COMMANDS = {"animate": main_animate}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        print(__doc__, file=sys.stderr if argv else sys.stdout)
        return 2 if argv else 0
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
