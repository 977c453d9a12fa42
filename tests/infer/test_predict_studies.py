"""``zoo predict`` on DICOM studies (issue 15 item 3): one row per series for a 3D model, keyed by
SeriesInstanceUID or a pseudonym; the pydicom corpus with planted PHI for a 2D model; exported
ONNX models through their sidecar; heat maps for Keras models only.

References are computed independently: the synthetic series' own HU volume (not what the reader
decoded) through the DICOM window, and the pydicom corpus decoded by zoo.data.dicom.read_dicom.
"""

from __future__ import annotations

import csv
import json
import shutil
import warnings

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

import zoo
import zoo.infer.sources
from tests.data.test_dicom_phi import PID, SEEDS, leaks, plant, write_raw
from zoo import figures
from zoo.data.dicom import read_dicom
from zoo.data.synthetic import make_phantoms
from zoo.data.synthetic_dicom import write_ct_series
from zoo.data.windows import DEFAULT_CT_STACK, stack_windows
from zoo.errors import DataError, InvalidArgumentError
from zoo.infer.cli import predict_folder

UIDS = ("1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.22", "1.2.826.0.1.3680043.8.498.3")


def _rows(out):
    with open(out / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    with open(out / "skipped.csv") as f:
        skipped = {r["id"]: r["reason"] for r in csv.DictReader(f)}
    return rows, skipped


def _all_text(*folders) -> str:
    return "".join(p.read_text(errors="replace") for d in folders for p in d.rglob("*")
                   if p.is_file() and p.suffix != ".png")


@pytest.fixture(scope="module")
def model3d():
    return zoo.load("simple_cnn3d", in_chans=1, num_classes=2)


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    """a/: one series, a truncated slice and a text file; b/: two series in one folder, a corrupt .dcm and a text file;
    c/: a CT slice whose SeriesInstanceUID holds a patient ID (not a UID); d/: a colour image."""
    root = tmp_path_factory.mktemp("studies")
    volumes = {}
    s = write_ct_series(root / "a", n_slices=16, size=32, series_uid=UIDS[0], seed=1)
    volumes[UIDS[0]] = s.volume
    (root / "a" / "readme.txt").write_text("a file beside one series")
    (root / "a" / "zz_broken.dcm").write_bytes(s.paths[0].read_bytes()[:400])  # truncated
    for k, uid in enumerate(UIDS[1:]):
        s = write_ct_series(root / f"tmp{k}", n_slices=16, size=32, series_uid=uid, seed=k + 2)
        volumes[uid] = s.volume
        (root / "b").mkdir(exist_ok=True)
        for p in s.paths:
            p.rename(root / "b" / f"s{k}_{p.name}")
        shutil.rmtree(root / f"tmp{k}")
    (root / "b" / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00garbage")
    (root / "b" / "notes.txt").write_text("not an image")
    (root / "c").mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        plant(ds)
        write_raw(ds, "SeriesInstanceUID", PID)
        ds.save_as(root / "c" / "odd.dcm")
    (root / "d").mkdir()
    shutil.copy(get_testdata_file("SC_rgb.dcm"), root / "d" / "rgb.dcm")  # colour: no volume
    return root, volumes


def _reference(model, hu_volume):
    """The model's scores on the true HU volume through the first default CT window."""
    x = stack_windows(hu_volume, DEFAULT_CT_STACK[:1]) * 255.0
    return model(x[None], training=False).numpy()[0]


def test_one_row_per_series_keyed_by_uid(model3d, studies, tmp_path, capsys, caplog):
    root, volumes = studies
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = predict_folder(model3d, root, tmp_path / "out", engine="tensorflow", batch=2)
    logs = caplog.text + "".join(str(w.message) for w in caught)
    rows, skipped = _rows(tmp_path / "out")
    by_id = {r["id"]: r for r in rows}
    assert set(by_id) - set(UIDS) == {next(i for i in by_id if i.startswith("series-"))}
    assert len(rows) == 4 and summary["predicted"] == 4
    assert {by_id[u]["slices"] for u in UIDS} == {"16"}
    assert set(skipped) == {"a/readme.txt", "a/zz_broken.dcm", "b/broken.dcm", "b/notes.txt",
                            "d/rgb.dcm"}
    assert skipped["d/rgb.dcm"].startswith("series ") and "colour" in skipped["d/rgb.dcm"]
    assert not [r for r in skipped.values() if str(root) in r]  # relative paths only
    for uid in UIDS:
        got = [float(by_id[uid][c]) for c in ("class_0", "class_1")]
        np.testing.assert_allclose(got, _reference(model3d, volumes[uid]), atol=1e-4)
        assert by_id[uid]["predicted"] == f"class_{int(np.argmax(got))}"
    captured = capsys.readouterr()
    assert not leaks(_all_text(tmp_path / "out") + captured.out + captured.err + logs)


def test_pseudonymised_keys_and_local_mapping(model3d, studies, tmp_path):
    root, _ = studies
    plain = predict_folder(model3d, root, tmp_path / "plain", engine="tensorflow")
    summary = predict_folder(model3d, root, tmp_path / "out", engine="tensorflow",
                             pseudonymise=True)
    mapping = tmp_path / "out.pseudonyms.csv"
    assert summary["mapping"] == str(mapping) and "local" in summary["mapping_note"]
    with open(mapping) as f:
        table = {r["pseudonym"]: r["original"] for r in csv.DictReader(f)}
    rows, skipped = _rows(tmp_path / "out")
    plain_rows, plain_skipped = _rows(tmp_path / "plain")
    assert all(r["id"].startswith("anon-") for r in rows) and len(rows) == plain["predicted"]
    assert {table[r["id"]] for r in rows} == {r["id"] for r in plain_rows}  # same series
    assert {table[k] for k in skipped} == set(plain_skipped)
    by_plain = {r["id"]: r for r in plain_rows}
    for r in rows:
        assert r["class_1"] == by_plain[table[r["id"]]]["class_1"]
    text = _all_text(tmp_path / "out")
    assert summary["warnings"] >= 1  # the odd UID; its text is in the summary, cleaned
    originals = [*UIDS, "broken.dcm", "notes.txt", str(root), *(p for p in table.values())]
    assert not [o for o in originals if o in text] and not leaks(text)
    with pytest.raises(InvalidArgumentError, match="outside"):
        predict_folder(model3d, root, tmp_path / "o2", pseudonymise=True,
                       mapping=tmp_path / "o2" / "map.csv")


def _phi_corpus(folder):
    """The PHI test's seed files with a fake name and ID planted, one with them in
    SeriesInstanceUID and Modality too, plus a truncated copy."""
    folder.mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for seed in SEEDS:
            ds = pydicom.dcmread(get_testdata_file(seed))
            plant(ds)
            ds.save_as(folder / seed)
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        plant(ds)
        write_raw(ds, "SeriesInstanceUID", PID)
        write_raw(ds, "Modality", PID)
        ds.save_as(folder / "mutated.dcm")
    data = (folder / "CT_small.dcm").read_bytes()
    (folder / "truncated.dcm").write_bytes(data[: len(data) // 2])


def test_pydicom_corpus_with_phi_every_image_a_row(tmp_path, monkeypatch, capsys):
    from zoo.cli import main

    phantom = zoo.load("simple_cnn.phantom")
    monkeypatch.setattr("zoo.models.factory.load", lambda *a, **k: phantom)
    _phi_corpus(tmp_path / "in")
    expected, unreadable = {}, set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for p in sorted((tmp_path / "in").iterdir()):
            try:
                expected[p.name] = read_dicom(p).meta.frames
            except zoo.errors.ZooError:
                unreadable.add(p.name)
    assert "truncated.dcm" in unreadable and len(expected) >= 8
    args = ["predict", "simple_cnn.phantom", str(tmp_path / "in"), "--out", str(tmp_path / "out")]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main([*args, "--engine", "tensorflow"]) == 0
    assert not leaks("".join(str(w.message) for w in caught))
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["warnings"] >= 1
    rows, skipped = _rows(tmp_path / "out")
    counts = {}
    for r in rows:
        counts[r["id"]] = counts.get(r["id"], 0) + 1
    assert counts == expected and set(skipped) == unreadable
    assert all(np.isfinite(float(r["lesion"])) for r in rows)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert not leaks(_all_text(tmp_path / "out") + captured.out + captured.err)


def test_exported_onnx_runs_through_its_sidecar(tmp_path):
    pytest.importorskip("tf2onnx", reason="the onnx extra (tf2onnx) is not installed")
    pytest.importorskip("onnxruntime", reason="the onnx extra (onnxruntime) is not installed")
    model = zoo.load("simple_cnn.phantom")
    path = zoo.export(model, tmp_path / "m.onnx", format="onnx")
    images = make_phantoms(3, size=64, seed=4).images
    (tmp_path / "in").mkdir()
    for i, image in enumerate(images):
        np.save(tmp_path / "in" / f"p{i}.npy", image)
    reference = model(images, training=False).numpy()
    engines = ["onnxruntime"]
    try:
        import openvino  # noqa: F401  (OpenVINO reads ONNX too)

        engines.append("openvino")
    except ImportError:
        pass
    for engine in engines:
        out = tmp_path / f"out_{engine}"
        summary = predict_folder(path, tmp_path / "in", out, engine=engine)
        assert (summary["model_kind"], summary["engine"]) == ("onnx", engine)
        rows, _ = _rows(out)
        got = np.array([[float(r["class_0"]), float(r["class_1"])] for r in rows])
        np.testing.assert_allclose(got, reference, atol=1e-4)
    with pytest.raises(InvalidArgumentError, match="exported onnx model"):
        predict_folder(path, tmp_path / "in", tmp_path / "o3", heatmaps="saliency")
    with pytest.raises(InvalidArgumentError, match="--engine tensorflow cannot run"):
        predict_folder(path, tmp_path / "in", tmp_path / "o4", engine="tensorflow")
    (tmp_path / "m.onnx.json").unlink()
    with pytest.raises(DataError, match="zoo export"):
        predict_folder(path, tmp_path / "in", tmp_path / "o5")


def test_heatmaps_for_series(model3d, studies, tmp_path):
    root, _ = studies
    predict_folder(model3d, root / "a", tmp_path / "out", engine="tensorflow",
                   heatmaps="gradcam")
    rows, _ = _rows(tmp_path / "out")
    assert [r["heatmap"] for r in rows] == ["heatmaps/000001.png"]
    png = (tmp_path / "out" / rows[0]["heatmap"]).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["heatmaps"] == "gradcam" and summary["predicted"] == 1


@pytest.mark.parametrize("fmt", ["saved_model", "openvino"])
def test_exported_folders_run_through_their_sidecar(fmt, tmp_path):
    if fmt == "openvino":
        pytest.importorskip("openvino", reason="the openvino extra is not installed")
    model = zoo.load("simple_cnn.phantom")
    path = zoo.export(model, tmp_path / fmt, format=fmt)
    images = make_phantoms(2, size=64, seed=5).images
    (tmp_path / "in").mkdir()
    for i, image in enumerate(images):
        np.save(tmp_path / "in" / f"p{i}.npy", image)
    summary = predict_folder(path, tmp_path / "in", tmp_path / "out")
    assert summary["model_kind"] == fmt
    rows, _ = _rows(tmp_path / "out")
    got = np.array([[float(r["class_0"]), float(r["class_1"])] for r in rows])
    np.testing.assert_allclose(got, model(images, training=False).numpy(), atol=1e-4)


def test_streams_a_folder_batch_by_batch(tmp_path, monkeypatch):
    """The first batch is predicted after ``batch`` reads, not after the whole folder is decoded."""
    import zoo.infer.predict_common as common

    phantom = zoo.load("simple_cnn.phantom")
    for i, image in enumerate(make_phantoms(7, size=64, seed=6).images):
        (tmp_path / "in" / f"d{i % 3}").mkdir(parents=True, exist_ok=True)
        np.save(tmp_path / "in" / f"d{i % 3}" / f"p{i}.npy", image)
    reads, calls = [], []
    read = common._read_image
    monkeypatch.setattr(common, "_read_image", lambda *a: reads.append(1) or read(*a))
    opened = zoo.infer.sources.open_model

    def spy(*a, **k):  # each predict call records its batch size and the reads before it
        model = opened(*a, **k)
        run = model.predict
        model.predict = lambda x: calls.append((len(reads), len(x))) or run(x)
        return model

    monkeypatch.setattr("zoo.infer.sources.open_model", spy)
    summary = predict_folder(phantom, tmp_path / "in", tmp_path / "out", engine="tensorflow",
                             batch=3)
    assert summary["predicted"] == 7
    assert calls == [(3, 3), (6, 3), (7, 1)]


def test_a_model_with_its_own_windows_gets_hounsfield_units(tmp_path):
    """zoo.data.windows.with_hu_input puts the windows in the graph: the CT is fed as HU."""
    from zoo.data.windows import with_hu_input

    model = with_hu_input(zoo.load("simple_cnn.phantom"), windows=["abdomen_soft_tissue"])
    series = write_ct_series(tmp_path / "ct", n_slices=2, size=64)
    summary = predict_folder(model, tmp_path / "ct", tmp_path / "out", engine="tensorflow")
    assert "Hounsfield" in summary["note"]
    rows, _ = _rows(tmp_path / "out")
    got = np.array([[float(r["class_0"]), float(r["class_1"])] for r in rows])
    reference = model(series.volume[..., None], training=False).numpy()  # one row per slice
    match = [int(np.argmin(np.abs(reference - g).max(axis=1))) for g in got]
    assert sorted(match) == [0, 1]  # the files are shuffled: each row is one of the slices
    np.testing.assert_allclose(got, reference[match], atol=1e-4)


def test_heatmaps_for_images_follow_the_explained_map(tmp_path):
    """A 2D overlay per row; the map drawn is explain_batch's for the row's predicted class."""
    from zoo.explain.api import explain_batch

    phantom = zoo.load("simple_cnn.phantom")
    images = make_phantoms(2, size=64, seed=8).images
    (tmp_path / "in").mkdir()
    for i, image in enumerate(images):
        np.save(tmp_path / "in" / f"p{i}.npy", image)
    drawn = []
    real = figures.explanation_figure

    def spy(path, image, heat, **kw):
        drawn.append(heat)
        return real(path, image, heat, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(figures, "explanation_figure", spy)
        predict_folder(phantom, tmp_path / "in", tmp_path / "out", engine="tensorflow",
                       heatmaps="saliency")
    rows, _ = _rows(tmp_path / "out")
    assert [r["heatmap"] for r in rows] == ["heatmaps/000001.png", "heatmaps/000002.png"]
    assert all((tmp_path / "out" / r["heatmap"]).stat().st_size > 1000 for r in rows)
    classes = phantom(images, training=False).numpy().argmax(-1)
    for k in range(2):
        expected = explain_batch(phantom, images[k : k + 1], "saliency", class_index=int(classes[k]))
        np.testing.assert_allclose(drawn[k], expected[0], rtol=1e-4, atol=1e-6)
