"""The farm batch: several .blend files in parallel processes, logs, exit status, re-runs,
determinism, atomic saves."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import soundfile as sf

bpy = pytest.importorskip("bpy")

from blender_env import add_speech, evaluated_vertices, fresh_scene  # noqa: E402


@pytest.fixture(scope="module")
def shots(tmp_path_factory, clips):
    """Two .blend files, each with the head, a 2 s strip (relative path) and a recorded shot."""
    root = tmp_path_factory.mktemp("shots")
    x, rate = sf.read(str(clips["arctic_a0009"][0]), dtype="float32")
    files = []
    for i, name in enumerate(("one", "two")):
        wav = root / f"{name}.wav"
        sf.write(wav, x[i * rate // 2: i * rate // 2 + 2 * rate], rate, subtype="PCM_16")
        fresh_scene()
        bpy.ops.speechface.add_head()
        scene = bpy.context.scene
        add_speech(scene, wav, frame_start=3)
        shot = scene.speechface.shots.add()
        shot.target, shot.strip, shot.options = scene.speechface.target, "speech", json.dumps({"seed": 7})
        path = root / f"{name}.blend"
        bpy.ops.wm.save_as_mainfile(filepath=str(path), relative_remap=True)
        files.append(path)
    return files


def run_batch(argv) -> int:
    ext = fresh_scene()
    return ext.addon.batch.main([str(a) for a in argv])


def baked_frame(path, frame=20):
    bpy.ops.wm.open_mainfile(filepath=str(path))
    obj = bpy.data.objects["Speechface Head"]
    key = obj.data.shape_keys
    assert key is not None and any(kb.name.startswith("speechface.") for kb in key.key_blocks)
    return evaluated_vertices(obj, frame)


def test_batch_bakes_recorded_shots_in_parallel_and_skips_on_rerun(shots, tmp_path, capsys):
    out = tmp_path / "out"
    assert run_batch([*shots, "--output-dir", out, "--processes", 2]) == 0
    log = capsys.readouterr().out
    assert log.count("[speechface] ok") == 2, log
    assert sorted(p.name for p in out.glob("*.blend")) == ["one.blend", "two.blend"]
    assert not list(out.glob("*partial*"))
    first = baked_frame(out / "one.blend")
    mtime = (out / "one.blend").stat().st_mtime_ns

    assert run_batch([*shots, "--output-dir", out]) == 0             # re-run: nothing to redo
    log = capsys.readouterr().out
    assert log.count("[speechface] skip") == 2, log
    assert (out / "one.blend").stat().st_mtime_ns == mtime

    out2 = tmp_path / "out2"                                           # same inputs, same result
    assert run_batch([shots[0], "--output-dir", out2, "--processes", 1]) == 0
    # to float32 rounding: one process uses both cores' threads, two use one each, and torch's
    # sums split across threads round differently. The baked positions are float32 at up to
    # ~0.75 m, where one step of float32 is 6e-8 m (measured: session 9's model up to 1.5e-8 m
    # in 126 of 14118 values, session 10's 1.2e-7 m, two steps, in 1); a different code or
    # seal would differ by millimetres
    np.testing.assert_allclose(baked_frame(out2 / "one.blend"), first, rtol=1e-6, atol=1e-7)


def test_batch_job_list_in_place_and_failures(shots, tmp_path, capsys):
    work = tmp_path / "work"
    work.mkdir()
    for f in shots:
        shutil.copy(f, work / f.name)
        shutil.copy(f.with_suffix(".wav"), work / f.with_suffix(".wav").name)
    jobs = work / "jobs.json"
    jobs.write_text(json.dumps([
        {"file": "one.blend", "object": "Speechface Head", "strip": "speech",
         "options": {"seed": 2, "output_mode": "EXACT"}},
        {"file": "two.blend", "object": "Nobody", "strip": "speech"},
    ]))
    original_two = (work / "two.blend").read_bytes()
    assert run_batch(["--jobs", jobs]) == 1
    log = capsys.readouterr().out
    assert "[speechface] ok" in log and "FAILED" in log and "no object named 'Nobody'" in log
    bpy.ops.wm.open_mainfile(filepath=str(work / "one.blend"))
    key = bpy.data.objects["Speechface Head"].data.shape_keys
    assert sum(kb.name.startswith("speechface.frame.") for kb in key.key_blocks) > 30
    assert (work / "two.blend").read_bytes() == original_two         # failed: left as it was
    assert not list(work.glob("*partial*"))


def test_batch_is_a_blender_command_line_command():
    ext = fresh_scene()
    assert ext.addon._cli_handle is not None                  # blender --command speechface ...
    assert ext.addon.batch.cli_command([]) == 2                 # usage, not a crash
    assert ext.addon.batch.cli_command(["batch"]) == 2          # nothing to do


def test_invoke_headless_runs_synchronously(shots):
    fresh_scene()
    bpy.ops.wm.open_mainfile(filepath=str(shots[0]))
    assert bpy.ops.speechface.bake("INVOKE_DEFAULT") == {"FINISHED"}
    key = bpy.data.objects["Speechface Head"].data.shape_keys
    assert any(kb.name.startswith("speechface.") for kb in key.key_blocks)
