"""train.loaders on small datasets written here in the VOCASET/BIWI and Multiface layouts."""
import io
import os
import pickle
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf

from train.loaders import (SafeUnpickler, Sequence, UnsafePickleError, detect_layout,
                           open_dataset, read_obj)

FILE_SR = 22050  # espeak-ng's rate; the loaders must resample to 16 kHz


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> np.ndarray:
    """~3 s of espeak-ng speech at 22.05 kHz float32 (harmonic tone if espeak-ng is missing)."""
    if shutil.which("espeak-ng"):
        path = tmp_path_factory.mktemp("speech") / "s.wav"
        subprocess.run(["espeak-ng", "-w", str(path), "Bright vixens jump; dozy fowl quack."],
                       check=True)
        x, rate = sf.read(path, dtype="float32")
        assert rate == FILE_SR
        return x
    t = np.arange(3 * FILE_SR) / FILE_SR  # pragma: no cover
    return (0.3 * np.sin(2 * np.pi * 140 * t)).astype(np.float32)  # pragma: no cover


def clip(speech: np.ndarray, seconds: float) -> np.ndarray:
    """Speech cut or looped to `seconds` at FILE_SR."""
    n = int(round(seconds * FILE_SR))
    return np.resize(speech, n)


def motion(n_frames: int, n_verts: int, amplitude: float, seed: int = 0) -> np.ndarray:
    """Smooth known offsets (T, V, 3): every vertex moves along a fixed direction."""
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=(1, n_verts, 3))
    phase = np.sin(np.arange(n_frames) / 4.0)[:, None, None]
    return amplitude * phase * direction


def write_vocaset(root, speech, stems_seconds, n_verts, fps, unit=1.0, pickled=None):
    """FaceFormer layout with positions stored in `unit` metres per value; templates.pkl holds
    the true templates, or `pickled` (a dict, stored as given) to make it disagree.
    Returns ({stem: offsets (T, V, 3) m}, {subject: template (V, 3) m})."""
    (root / "wav").mkdir(parents=True)
    (root / "vertices_npy").mkdir()
    rng = np.random.default_rng(1)
    subject_of = {s: s.rsplit("_sentence", 1)[0] if "_sentence" in s else s.split("_")[0]
                  for s in stems_seconds}
    tmpl = {s: rng.uniform(-0.1, 0.1, (n_verts, 3)) for s in sorted(set(subject_of.values()))}
    offsets = {}
    for i, (stem, seconds) in enumerate(stems_seconds.items()):
        off = motion(int(round(seconds * fps)), n_verts, 0.004, seed=i)
        offsets[stem] = off
        positions = (tmpl[subject_of[stem]] + off) / unit
        np.save(root / "vertices_npy" / f"{stem}.npy", positions.reshape(len(off), -1))
        sf.write(root / "wav" / f"{stem}.wav", clip(speech, seconds), FILE_SR)
    with open(root / "templates.pkl", "wb") as f:
        pickle.dump(pickled if pickled is not None else {s: v / unit for s, v in tmpl.items()}, f)
    return offsets, tmpl


VOCA_STEMS = {"FaceTalk_170725_00137_TA_sentence01": 2.0, "FaceTalk_170725_00137_TA_sentence02": 1.5,
              "FaceTalk_170728_03272_TA_sentence01": 1.0}


def test_vocaset_round_trip(tmp_path, speech):
    offsets, tmpl = write_vocaset(tmp_path, speech, VOCA_STEMS, n_verts=50, fps=60)
    assert detect_layout(tmp_path) == "vocaset"
    with pytest.warns(UserWarning, match="pickle"):
        ds = open_dataset(tmp_path)
    assert len(ds) == 3
    seqs = list(ds)
    assert all(isinstance(s, Sequence) for s in seqs)
    first = seqs[0]
    assert (first.subject, first.sentence) == ("FaceTalk_170725_00137_TA", "sentence01")
    assert first.sample_rate == 16000 and first.audio.dtype == np.float32
    assert len(first.audio) == 32000  # 2 s at 22.05 kHz resampled to 16 kHz
    assert first.fps == 60 and first.offsets.shape == (120, 50, 3)
    assert first.offsets.dtype == np.float32 and first.template.dtype == np.float32
    np.testing.assert_allclose(first.offsets, offsets["FaceTalk_170725_00137_TA_sentence01"], atol=1e-6)
    np.testing.assert_allclose(first.template, tmpl["FaceTalk_170725_00137_TA"], atol=1e-7)
    assert seqs[2].subject == "FaceTalk_170728_03272_TA"
    assert first.source.endswith("FaceTalk_170725_00137_TA_sentence01.npy")


def test_vocaset_target_fps_and_subject_filter(tmp_path, speech):
    offsets, _ = write_vocaset(tmp_path, speech, VOCA_STEMS, n_verts=20, fps=60)
    with pytest.warns(UserWarning):
        ds = open_dataset(tmp_path, target_fps=30, subjects=["FaceTalk_170725_00137_TA"])
    assert len(ds) == 2
    seq = ds[0]
    assert seq.fps == 30 and seq.offsets.shape == (60, 20, 3)
    np.testing.assert_allclose(seq.offsets, offsets["FaceTalk_170725_00137_TA_sentence01"][::2], atol=1e-6)
    with pytest.warns(UserWarning):
        seq25 = open_dataset(tmp_path, target_fps=25)[0]  # non-integer ratio: interpolated
    assert seq25.fps == 25 and seq25.offsets.shape[0] == 50
    src = offsets["FaceTalk_170725_00137_TA_sentence01"]  # frame 6 = 0.24 s = source frame 14.4
    np.testing.assert_allclose(seq25.offsets[6], 0.6 * src[14] + 0.4 * src[15], atol=1e-6)


def test_biwi_detection_units_and_names(tmp_path, speech):
    stems = {"F2_e01": 1.0}
    offsets, tmpl = write_vocaset(tmp_path, speech, stems, n_verts=23370, fps=25, unit=0.001)
    assert detect_layout(tmp_path) == "biwi"
    with pytest.warns(UserWarning) as caught:  # mm data with the preset's 0.186 m per unit
        open_dataset(tmp_path)
    assert any("Wrong `scale`" in str(w.message) for w in caught)
    with pytest.warns(UserWarning, match="pickle"):
        ds = open_dataset(tmp_path, scale=0.001)  # stored in millimetres
    seq = ds[0]
    assert (seq.subject, seq.sentence, seq.fps) == ("F2", "e01", 25.0)
    assert seq.offsets.shape == (25, 23370, 3)
    np.testing.assert_allclose(seq.offsets, offsets["F2_e01"], atol=2e-6)


def test_custom_fps_scale_and_pattern(tmp_path, speech):
    write_vocaset(tmp_path, speech, {"spk1_take07": 2.0}, n_verts=10, fps=50, unit=0.01)
    with pytest.warns(UserWarning):
        seq = open_dataset(tmp_path, layout="vocaset", fps=50, scale=0.01)[0]
    assert (seq.subject, seq.sentence, seq.fps, seq.n_frames) == ("spk1", "take07", 50.0, 100)
    assert np.ptp(seq.template) < 0.25  # centimetres became metres
    with pytest.warns(UserWarning):
        ds = open_dataset(tmp_path, layout="vocaset", fps=50, scale=0.01,
                          pattern=r"(?P<subject>spk\d)_take(?P<sentence>\d+)")
    assert ds[0].sentence == "07"


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_restricted_unpickler_refuses_code(tmp_path, speech):
    write_vocaset(tmp_path, speech, {"F1_e01": 1.0}, n_verts=10, fps=25)
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"F1": _Exploit(marker)})
    (tmp_path / "templates.pkl").write_bytes(payload)
    with pytest.warns(UserWarning, match="pickle"), pytest.raises(UnsafePickleError, match="system"):
        open_dataset(tmp_path, layout="biwi")
    assert not marker.exists()
    for evil in (pickle.dumps(eval), pickle.dumps(shutil.rmtree), b"cbuiltins\nexec\n(S'1'\ntR."):
        with pytest.raises(UnsafePickleError):
            SafeUnpickler(io.BytesIO(evil)).load()


def test_restricted_unpickler_reads_python2_builtins():
    py2_set = b"\x80\x02c__builtin__\nset\nq\x00]q\x01K\x01a\x85q\x02Rq\x03."  # set([1])
    assert SafeUnpickler(io.BytesIO(py2_set), encoding="latin1").load() == {1}
    with pytest.raises(UnsafePickleError, match="eval"):
        SafeUnpickler(io.BytesIO(b"c__builtin__\neval\n(S'1'\ntR.")).load()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_restricted_unpickler_reads_numpy(protocol):
    data = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": [np.float64(1.5), (1, "x")]}
    blob = pickle.dumps(data, protocol=protocol)
    out = SafeUnpickler(io.BytesIO(blob), encoding="latin1").load()
    np.testing.assert_array_equal(out["a"], data["a"])
    assert out["b"] == [1.5, (1, "x")]


def test_vertex_count_mismatch_names_file(tmp_path, speech):
    write_vocaset(tmp_path, speech, {"F3_e02": 1.0}, n_verts=12, fps=25,
                  pickled={"F3": np.zeros((10, 3))})
    with pytest.warns(UserWarning):
        ds = open_dataset(tmp_path, layout="biwi", scale=1.0)
    with pytest.raises(ValueError, match=r"F3_e02\.npy.*36 values per frame.*10 vertices"):
        ds[0]


def test_nan_and_length_mismatch(tmp_path, speech):
    write_vocaset(tmp_path, speech, {"M1_e01": 2.0, "M1_e02": 2.0, "M1_e03": 2.0}, n_verts=8, fps=25)
    bad = np.load(tmp_path / "vertices_npy" / "M1_e01.npy")
    bad[7, 4] = np.nan
    np.save(tmp_path / "vertices_npy" / "M1_e01.npy", bad)
    sf.write(tmp_path / "wav" / "M1_e02.wav", clip(speech, 1.2), FILE_SR)  # 0.8 s short: error
    sf.write(tmp_path / "wav" / "M1_e03.wav", clip(speech, 2.3), FILE_SR)  # 0.3 s long: fine
    with pytest.warns(UserWarning):
        ds = open_dataset(tmp_path, layout="biwi", scale=1.0)
    with pytest.raises(ValueError, match=r"M1_e01\.npy.*NaN.*\[7\]"):
        ds[0]
    with pytest.raises(ValueError, match=r"M1_e02\.npy.*audio lasts 1\.20 s but motion 2\.00 s"):
        ds[1]
    assert ds[2].n_frames == 50
    with pytest.warns(UserWarning):
        lenient = open_dataset(tmp_path, layout="biwi", scale=1.0, skip_invalid=True)
    assert [s.sentence for s in lenient] == ["e03"]


def test_unknown_subject_and_layout(tmp_path, speech):
    write_vocaset(tmp_path / "d", speech, {"F4_e01": 1.0}, n_verts=5, fps=25,
                  pickled={"F9": np.zeros((5, 3))})
    with pytest.warns(UserWarning):
        ds = open_dataset(tmp_path / "d", layout="biwi", scale=1.0)
    with pytest.raises(KeyError, match="F4_e01.*'F4'"):
        ds[0]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="unknown dataset layout"):
        open_dataset(tmp_path / "empty")


# --- Multiface ------------------------------------------------------------------------------
def write_obj(path, verts, faces=()):
    lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in verts]
    lines += ["vt 0.5 0.5"] + ["f " + " ".join(f"{i + 1}/1" for i in face) for face in faces]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# test mesh\n" + "\n".join(lines) + "\n")


def write_multiface(root, speech, subject="m--20180227--0000--6795937--GHS", n_verts=9,
                    first_frame=9, layout=None):
    """Sentence SEN_a as .obj frames 9, 10, ... (numeric, not text order), SEN_b as .bin frames,
    EXP_smile without audio. Millimetres. Returns (template mm (V,3), {sentence: offsets mm})."""
    layout = layout or {"mesh": "{subject}/tracked_mesh/{sentence}",
                        "audio": "{subject}/audio/{sentence}.wav", "template": "{subject}/template.obj"}
    rng = np.random.default_rng(5)
    template = rng.uniform(-90, 90, (n_verts, 3))
    write_obj(root / layout["template"].format(subject=subject), template, faces=[(0, 1, 2, 3), (4, 5, 6)])
    truth = {}
    for k, (sentence, seconds) in enumerate((("SEN_a", 1.0), ("SEN_b", 0.5), ("EXP_smile", 0.5))):
        off = motion(int(seconds * 30), n_verts, 3.0, seed=k)  # 3 mm motion
        truth[sentence] = off
        folder = root / layout["mesh"].format(subject=subject, sentence=sentence)
        folder.mkdir(parents=True, exist_ok=True)
        for i, frame in enumerate(template + off):
            number = first_frame + i
            if sentence == "SEN_b":
                frame.astype("<f4").tofile(folder / f"{number:06d}.bin")
            else:
                write_obj(folder / f"{number}.obj", frame)
        if sentence.startswith("SEN"):
            wav = root / layout["audio"].format(subject=subject, sentence=sentence)
            wav.parent.mkdir(parents=True, exist_ok=True)
            sf.write(wav, clip(speech, seconds), FILE_SR)
    return template, truth


def test_multiface_round_trip(tmp_path, speech):
    template, truth = write_multiface(tmp_path, speech)
    assert detect_layout(tmp_path) == "multiface"
    ds = open_dataset(tmp_path)
    assert len(ds) == 2  # EXP_smile has no audio
    a, b = list(ds)
    assert (a.subject, a.sentence, a.fps) == ("m--20180227--0000--6795937--GHS", "SEN_a", 30.0)
    assert a.offsets.shape == (30, 9, 3) and len(a.audio) == 16000
    np.testing.assert_allclose(a.template, template * 1e-3, atol=1e-8)
    np.testing.assert_allclose(a.offsets, truth["SEN_a"] * 1e-3, atol=1e-8)  # numeric frame order
    np.testing.assert_allclose(b.offsets, truth["SEN_b"] * 1e-3, atol=1e-7)  # .bin frames
    assert a.faces.tolist() == [[0, 1, 2], [0, 2, 3], [4, 5, 6]]
    single = open_dataset(tmp_path / "m--20180227--0000--6795937--GHS")  # one subject's folder
    assert [s.sentence for s in single] == ["SEN_a", "SEN_b"]


def test_multiface_custom_layout_and_options(tmp_path, speech):
    layout = {"mesh": "meshes/{subject}/{sentence}", "audio": "wavs/{subject}_{sentence}.wav",
              "template": "neutral/{subject}.obj"}
    _, truth = write_multiface(tmp_path, speech, subject="p1", layout=layout)
    ds = open_dataset(tmp_path, layout="multiface", mesh_dir=layout["mesh"],
                      audio="wavs/{subject}_{sentence}", template=layout["template"],
                      scale=1.0, target_fps=15)
    assert len(ds) == 2
    seq = ds[0]
    assert seq.fps == 15 and seq.offsets.shape == (15, 9, 3)
    np.testing.assert_allclose(seq.offsets, truth["SEN_a"][::2], atol=1e-5)


def test_multiface_missing_template_and_mismatch(tmp_path, speech):
    write_multiface(tmp_path, speech, subject="p2")
    (tmp_path / "p2" / "template.obj").unlink()
    with pytest.raises(FileNotFoundError, match="p2/template.obj"):
        open_dataset(tmp_path)[0]
    with pytest.warns(UserWarning, match="first frame"):
        seq = open_dataset(tmp_path, template_fallback="first_frame")[0]
    assert np.abs(seq.offsets[0]).max() < 1e-7 and seq.faces is None
    write_obj(tmp_path / "p2" / "template.obj", np.zeros((7, 3)))
    with pytest.raises(ValueError, match=r"9 vertices.*template of 'p2' has 7"):
        open_dataset(tmp_path)[0]
    write_obj(tmp_path / "p2" / "template.obj", np.zeros((9, 3)))
    write_obj(tmp_path / "p2" / "tracked_mesh" / "SEN_a" / "20.obj", np.zeros((8, 3)))
    with pytest.raises(ValueError, match=r"20\.obj: 8 vertices"):
        open_dataset(tmp_path)[0]


def test_read_obj_details(tmp_path):
    path = tmp_path / "m.obj"
    path.write_text("v 0 0 0\nv 1 0 0 0.5 0.5 0.5\nv 0 1 0\nvn 0 0 1\nf -3//1 -2//1 -1//1\n")
    verts, faces = read_obj(path, with_faces=True)  # colour-extended v lines, relative indices
    assert verts.tolist() == [[0, 0, 0], [1, 0, 0], [0, 1, 0]] and faces.tolist() == [[0, 1, 2]]
    path.write_text("v 0 0\n")
    with pytest.raises(ValueError, match="m.obj"):
        read_obj(path)
