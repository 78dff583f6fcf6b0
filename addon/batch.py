"""Batch baking for farms: many .blend files, several processes, safe to re-run.

    blender --command speechface batch [FILE.blend ...] [--jobs JOBS.json] [--output-dir DIR]
                                       [--processes N] [--state STATE.jsonl]

Under the ``bpy`` module the same runs as ``main([...])`` after enabling the extension.

- Shots: with ``--jobs``, a JSON list of ``{"file", "object", "strip", "options"}`` (paths
  relative to the JSON file; ``options`` as in the panel, any left out come from the file's
  settings); otherwise every strip-object pair recorded in each FILE's Speechface settings
  (each bake records its pair).
- Each file is baked by its own child process (``--processes`` at a time), opened, baked
  shot by shot, and saved to a temporary file that then replaces the target in one rename: a
  crash never leaves a half-written .blend in place of a good one. Without ``--output-dir`` the
  files are saved in place.
- A log line per shot; the exit status is 1 if any shot failed.
- Finished shots are appended to the state file (default ``speechface-batch.jsonl`` in the
  output folder, or beside the first file) and skipped when the batch runs again.
- The same inputs and seeds give the same bakes.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import bpy

PACKAGE = __package__.rsplit(".", 1)[0]          # the extension's module, e.g. bl_ext.user_default.speechface
REPO_MODULE = PACKAGE.split(".")[1] if PACKAGE.startswith("bl_ext.") else ""
REPO_DIR = Path(os.path.abspath(__file__)).parents[2]   # the repository folder (links kept)
RESULT = "SPEECHFACE-SHOT "                      # prefix of a child's result lines on stdout


def parse(argv):
    ap = argparse.ArgumentParser(prog="speechface batch", description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="*", type=Path, help=".blend files (their recorded shots)")
    ap.add_argument("--jobs", type=Path, help="JSON job list of file, object, strip, options")
    ap.add_argument("--output-dir", type=Path, help="save baked files here (default: in place)")
    ap.add_argument("--processes", type=int, default=2, help="files baked at once (default 2)")
    ap.add_argument("--state", type=Path, help="finished-shot log (default: speechface-batch.jsonl)")
    return ap.parse_args(argv)


def load_jobs(args) -> dict:
    """-> {source .blend path: [shot dicts] or None (= the file's recorded shots)}."""
    plan: dict = {}
    for f in args.files:
        plan[str(f.resolve())] = None
    if args.jobs:
        try:
            jobs = json.loads(args.jobs.read_text())
        except (OSError, ValueError) as ex:
            raise SystemExit(f"speechface batch: cannot read the job list {args.jobs}: {ex}")
        if not isinstance(jobs, list):
            raise SystemExit(f"speechface batch: {args.jobs} must hold a JSON list of jobs")
        for i, job in enumerate(jobs):
            if not isinstance(job, dict) or "file" not in job:
                raise SystemExit(f"speechface batch: job {i} in {args.jobs} needs a \"file\"")
            path = (args.jobs.parent / job["file"]).resolve()
            plan.setdefault(str(path), []).append(
                {"object": job.get("object", ""), "strip": job.get("strip", ""),
                 "options": job.get("options", {})})
    return plan


def shot_key(target: str, shot: dict) -> str:
    blob = json.dumps([target, shot.get("object"), shot.get("strip"), shot.get("options")],
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _child_command(spec: dict) -> list:
    # the child enables this same extension; its repository is registered there if unknown
    # (the bpy module does not load saved preferences, and a session's repositories may be unsaved)
    boot = ("import sys, bpy, addon_utils, importlib; "
            "repos = bpy.context.preferences.extensions.repos; "
            f"any(r.module == {REPO_MODULE!r} for r in repos) or repos.new(name={REPO_MODULE!r}, "
            f"module={REPO_MODULE!r}, custom_directory={str(REPO_DIR)!r}); "
            f"addon_utils.enable({PACKAGE!r}, default_set=False); "
            f"importlib.import_module({PACKAGE!r} + '.addon.batch').child_main(sys.argv[-1])")
    if bpy.app.binary_path:                   # real Blender
        return [bpy.app.binary_path, "-b", "--python-expr", boot, "--", json.dumps(spec)]
    return [sys.executable, "-c", boot, json.dumps(spec)]   # the bpy module


def main(argv) -> int:
    args = parse(argv)
    plan = load_jobs(args)
    if not plan:
        print("speechface batch: nothing to do: give .blend files or --jobs", file=sys.stderr)
        return 2
    first = Path(next(iter(plan)))
    out_dir = args.output_dir.resolve() if args.output_dir else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    state = args.state or ((out_dir or first.parent) / "speechface-batch.jsonl")
    done = {}                                    # shot key -> the file it was saved into
    if state.is_file():
        for line in state.read_text().splitlines():
            if line.strip():
                entry = json.loads(line)
                done[entry["key"]] = entry["target"]
    threads = max(1, (os.cpu_count() or 2) // max(1, args.processes))
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    pending = []
    for src, shots in plan.items():
        target = str((out_dir / Path(src).name) if out_dir else Path(src))
        skip = sorted(k for k, t in done.items() if t == target)
        # shots already saved into the target: continue from it, or they would be lost
        start = target if skip and Path(target).is_file() else src
        pending.append({"source": src, "open": start, "target": target, "shots": shots,
                        "skip": skip})
    failed = 0
    running: list = []
    t0 = time.perf_counter()
    while pending or running:
        while pending and len(running) < max(1, args.processes):
            spec = pending.pop(0)
            proc = subprocess.Popen(_child_command(spec), stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, env=env)
            running.append((spec, proc))
        spec, proc = running.pop(0)
        out, err = proc.communicate()
        lines = [json.loads(x[len(RESULT):]) for x in out.splitlines() if x.startswith(RESULT)]
        for r in lines:
            status = "skip" if r.get("skipped") else ("ok" if r["ok"] else "FAILED")
            failed += status == "FAILED"
            print(f"[speechface] {status:6s} {Path(spec['source']).name}: {r['object']} <- "
                  f"{r['strip']}: {r['message']}", flush=True)
            if r["ok"] and not r.get("skipped") and r.get("saved"):
                with open(state, "a") as fh:
                    fh.write(json.dumps({"key": r["key"], "target": spec["target"]}) + "\n")
        if proc.returncode != 0 or not lines:
            failed += 1
            tail = (err.strip().splitlines() or ["no output"])[-1]
            print(f"[speechface] FAILED {Path(spec['source']).name}: the baking process exited "
                  f"with {proc.returncode}: {tail}", flush=True)
    print(f"[speechface] batch: {len(plan)} files, {failed} failures, "
          f"{time.perf_counter() - t0:.1f} s", flush=True)
    return 1 if failed else 0


def child_main(spec_json: str) -> None:
    """In the child process: open one file, bake its shots, save atomically, report per shot."""
    from .bake import bake_now, options_of
    from .scene_data import BakeError

    spec = json.loads(spec_json)
    skip = set(spec["skip"])
    results = []
    try:
        bpy.ops.wm.open_mainfile(filepath=spec["open"], load_ui=False)
    except Exception as ex:
        print(RESULT + json.dumps({"object": "*", "strip": "*", "ok": False,
                                   "message": f"cannot open the file: {ex}"}), flush=True)
        sys.exit(1)
    scene = bpy.context.scene
    shots = spec["shots"]
    if shots is None:
        shots = [{"object": s.target.name if s.target else "", "strip": s.strip,
                  "options": json.loads(s.options or "{}")} for s in scene.speechface.shots]
        if not shots:
            print(RESULT + json.dumps({"object": "*", "strip": "*", "ok": False,
                                       "message": "no recorded shots: bake once in the file, "
                                                  "or give a job list"}), flush=True)
            sys.exit(1)
    changed = False
    for shot in shots:
        options = options_of(scene.speechface, shot["options"])       # what the bake will use
        key = shot_key(spec["target"], dict(shot, options=options))
        row = {"object": shot["object"], "strip": shot["strip"], "key": key}
        if key in skip and Path(spec["target"]).is_file():
            results.append(dict(row, ok=True, skipped=True, message="done before, skipped"))
            continue
        t = time.perf_counter()
        try:
            obj = bpy.data.objects.get(shot["object"])
            if obj is None:
                raise BakeError(f"no object named {shot['object']!r} in the file")
            message = bake_now(scene, obj, shot["strip"], options)
            results.append(dict(row, ok=True, message=f"{message} [{time.perf_counter() - t:.1f} s]"))
            changed = True
        except BakeError as ex:
            results.append(dict(row, ok=False, message=str(ex)))
    if changed:
        target = Path(spec["target"])
        partial = target.with_name(target.stem + ".speechface-partial.blend")
        bpy.ops.wm.save_as_mainfile(filepath=str(partial), copy=True, compress=False)
        os.replace(partial, target)
        for r in results:
            r["saved"] = True
    for r in results:
        print(RESULT + json.dumps(r), flush=True)
    sys.stdout.flush()


def cli_command(argv) -> int:
    """``blender --command speechface batch ...``"""
    if not argv or argv[0] != "batch":
        print("usage: blender --command speechface batch [FILE.blend ...] [--jobs JOBS.json] "
              "[--output-dir DIR] [--processes N]", file=sys.stderr)
        return 2
    return main(list(argv[1:]))
