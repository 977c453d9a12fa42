"""``zoo finetune --data`` on a DICOM folder: detected by content, split by patient, streamed
through zoo.dicom_dataset, recorded in run.json; bad input refused with the file named."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from zoo.cli import main
from zoo.data.labels import read_labels
from zoo.data.synthetic_dicom import write_ct_series
from zoo.errors import DataError, InvalidArgumentError, UnknownNameError
from zoo.train.dicom_folder import (
    data_kind,
    is_dicom,
    load_dicom_folder,
    split_rows,
    stream_augmentation,
)

PATIENTS = ("PT-ALPHA-01", "PT-BRAVO-02", "PT-CHARLIE-03", "PT-DELTA-04")


def _enhance(path, hu: int = 150) -> None:
    """Raise the soft tissue (-500..500 HU, not air or bone) by ``hu``: a contrast-enhanced
    slice, written back into the stored pixels."""
    ds = pydicom.dcmread(path)
    stored = ds.pixel_array.astype(np.uint16)
    hu_now = stored.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    stored[(hu_now > -500) & (hu_now < 500)] += hu
    ds.PixelData = stored.tobytes()
    ds.save_as(path)


def _write_csv(folder, rows, header=("path", "label", "patient")) -> None:
    with open(folder / "labels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


@pytest.fixture(scope="module")
def ct_folder(tmp_path_factory):
    """16 CT slices of 16x16: 4 patients, each with a plain and a contrast-enhanced series of 2
    slices; labels.csv lists the files with their patient."""
    root = tmp_path_factory.mktemp("dicom_data")
    rows = []
    for p, patient in enumerate(PATIENTS):
        for c, name in enumerate(("plain", "enhanced")):
            series = write_ct_series(root / f"case{p}" / name, n_slices=2, size=16, seed=2 * p + c)
            for path in series.paths:
                if name == "enhanced":
                    _enhance(path)
                rows.append((path.relative_to(root).as_posix(), name, patient))
    _write_csv(root, rows)
    return root


def _copy(ct_folder, tmp_path):
    folder = tmp_path / "data"
    shutil.copytree(ct_folder, folder)
    return folder


def _patients_by_line(folder) -> dict[int, str]:
    labels = read_labels(folder / "labels.csv")
    return dict(zip(labels.lines, labels.patients))


def test_cli_streams_a_dicom_folder_split_by_patient(ct_folder, tmp_path, capsys, monkeypatch):
    """The CLI run: streamed (the in-memory loader is never called), validation patients apart
    from training ones, balanced class weights counted on the stream, no patient id written."""
    import zoo.train.folder_data as folder_data

    def no_memory_copy(*args, **kwargs):
        raise AssertionError("a DICOM folder must be streamed, not loaded into memory")

    monkeypatch.setattr(folder_data, "load_labelled_folder", no_memory_copy)
    writes, write_text = [], Path.write_text

    def counted(path, *args, **kwargs):  # every run.json write, staged copies included
        if "run.json" in path.name:
            writes.append(path.name)
        return write_text(path, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", counted)
    out = tmp_path / "run"
    code = main(["finetune", "simple_cnn.phantom", "--data", str(ct_folder), "--epochs", "1", "1",
                 "--batch-size", "4", "--strategy", "cpu", "--class-weight", "balanced",
                 "--window", "40,400",
                 "--cache-dir", str(tmp_path / "cache"), "--out", str(out), "--quiet"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    summary = json.loads(printed)
    assert writes == ["run.json"]  # written once, complete (finetune's data_source=)
    record = json.loads((out / "run.json").read_text())
    source = record["data"]["source"]
    assert record["data"]["streamed"] is True and record["data"]["train"] is None
    assert source["kind"] == "dicom" and record["data"]["split"] == source["split"] == "patient"
    assert summary["data"]["skipped"] == [] and summary["data"]["split"] == "patient"

    by_line = _patients_by_line(ct_folder)
    train = {by_line[line] for line in source["rows"]["train"]}
    val = {by_line[line] for line in source["rows"]["validation"]}
    assert train and val and not train & val
    assert sorted(source["rows"]["train"] + source["rows"]["validation"]) == sorted(by_line)
    assert source["patients"] == {"train": len(train), "validation": len(val), "in_both": 0}
    assert source["files"]["train"] + source["files"]["validation"] == 16
    assert source["input_shape"] == [64, 64, 1] and source["input_range"] == [0.0, 255.0]
    assert source["windows"] == [[40.0, 400.0]]

    # balanced weights n / (k * count) over the training files (one sample each), by hand
    labels = read_labels(ct_folder / "labels.csv")
    y = np.array([labels.labels[labels.lines.index(line)] for line in source["rows"]["train"]])
    counts = np.bincount(y, minlength=2)
    expected = {str(c): len(y) / (2 * counts[c]) for c in range(2)}
    assert record["arguments"]["class_weight"] == pytest.approx(expected)
    assert record["augment"] and "RandomTranslation" in record["augment"][0]
    # metrics on the validation stream, per image: each patient has slices of both classes
    metrics = record["validation_metrics"]
    assert metrics["unit"] == "image" and metrics["n"] == source["samples"]["validation"]
    assert 0.0 <= metrics["auc"]["value"] <= 1.0
    assert (out / "reliability.png").is_file()
    manifest = json.loads((out / ".zoo-manifest.json").read_text())["files"]
    assert manifest["run.json"] == (out / "run.json").stat().st_size and "reliability.png" in manifest
    text = (out / "run.json").read_text() + printed
    assert not any(patient in text for patient in PATIENTS)


def test_a_csv_naming_a_missing_file_exits_2_naming_it(ct_folder, tmp_path, capsys):
    folder = _copy(ct_folder, tmp_path)
    with open(folder / "labels.csv", "a") as f:
        f.write("case9/lost_slice.dcm,enhanced,PT-ECHO-05\n")
    code = main(["finetune", "simple_cnn.phantom", "--data", str(folder), "--epochs", "1", "0",
                 "--strategy", "cpu", "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert "lost_slice.dcm" in err and "line 18" in err and "not found" in err
    assert not (tmp_path / "run").exists()


def test_options_a_stream_cannot_take_are_refused_before_decoding(ct_folder, tmp_path, capsys):
    base = ["finetune", "simple_cnn.phantom", "--data", str(ct_folder), "--strategy", "cpu",
            "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "run"), "--quiet"]
    assert main([*base, "--rot90"]) == 2
    assert "--rot90" in capsys.readouterr().err
    assert main([*base, "--window", "lugn"]) == 2
    assert "'lung'" in capsys.readouterr().err  # did you mean
    assert main([*base, "--window", "40,wide"]) == 2
    assert "CENTER,WIDTH" in capsys.readouterr().err
    assert main([*base, "--task", "regression"]) == 2
    assert "task='classification'" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists() and not (tmp_path / "run").exists()

    images = tmp_path / "images"
    images.mkdir()
    np.save(images / "a.npy", np.zeros((8, 8), np.float32))
    np.save(images / "b.npy", np.ones((8, 8), np.float32))
    (images / "labels.csv").write_text("path,label\na.npy,0\nb.npy,1\n")
    assert main(["finetune", "--data", str(images), "--window", "lung", "--out",
                 str(tmp_path / "run")]) == 2
    assert "--window: for --data folders of DICOM" in capsys.readouterr().err


def test_streams_carry_each_files_label_and_the_model_contract(ct_folder, tmp_path):
    """Through split and streams each sample keeps its file's label: every enhanced slice is
    brighter than every plain one (+150 HU soft tissue under the soft-tissue window)."""
    data = load_dicom_folder(ct_folder, "simple_cnn.phantom", batch_size=4, seed=3,
                             cache_dir=tmp_path / "cache")
    assert data.classes == ("enhanced", "plain")
    assert data.source["windows"] == [[50.0, 400.0]]  # "auto": soft tissue for one channel
    means = {0: [], 1: []}
    for ds in (data.train, data.val):
        for x, y in ds:
            assert x.shape[1:] == (64, 64, 1)
            x = x.numpy()
            assert 0.0 <= x.min() and x.max() <= 255.0
            for image, label in zip(x, y.numpy()):
                means[int(label)].append(float(image.mean()))
    assert len(means[0]) == len(means[1]) == 8
    assert min(means[0]) > max(means[1]) + 5  # class 0 = "enhanced" (names sorted)
    assert len(data.val_groups) == data.source["samples"]["validation"]
    assert set(data.val_groups) <= set(PATIENTS)


def test_series_folders_without_a_patient_column_split_by_row(ct_folder, tmp_path):
    """A row that names a series folder is its slices, all on the row's side of the split."""
    folder = _copy(ct_folder, tmp_path)
    rows = [(f"case{p}/{name}", name) for p in range(4) for name in ("plain", "enhanced")]
    _write_csv(folder, rows, header=("path", "label"))
    labels = read_labels(folder / "labels.csv")
    assert data_kind(labels) == "dicom"
    data = load_dicom_folder(folder, "simple_cnn.phantom", batch_size=4,
                             cache_dir=tmp_path / "cache")
    source = data.source
    assert source["split"] == "row" and source["patients"] is None and data.val_groups is None
    assert source["files"] == {"train": 2 * len(source["rows"]["train"]),
                               "validation": 2 * len(source["rows"]["validation"])}
    val_series = {labels.paths[labels.lines.index(line)] for line in source["rows"]["validation"]}
    assert {p.parent for p in data.val.dicom.items} == val_series
    assert not {p.parent for p in data.train.dicom.items} & val_series


def test_detection_by_content_and_mixed_folders(ct_folder, tmp_path):
    folder = _copy(ct_folder, tmp_path)
    first = sorted((folder / "case0" / "enhanced").glob("*.dcm"))[0]
    bare = first.with_name("IM000001")  # PACS exports often have no suffix
    first.rename(bare)
    text = (folder / "labels.csv").read_text().replace(f"case0/enhanced/{first.name}",
                                                       "case0/enhanced/IM000001")
    (folder / "labels.csv").write_text(text)
    assert is_dicom(bare) and is_dicom(bare.parent)
    assert data_kind(read_labels(folder / "labels.csv")) == "dicom"
    notes = folder / "notes"
    notes.write_text("not an image")
    assert not is_dicom(notes)
    np.save(folder / "extra.npy", np.zeros((16, 16), np.float32))
    (folder / "labels.csv").write_text(text + "extra.npy,plain,PT-ECHO-05\n")
    with pytest.raises(DataError, match=r"line 18 lists .*extra\.npy \(not DICOM\).* not both"):
        data_kind(read_labels(folder / "labels.csv"))


def test_unreadable_dicom_is_named_or_skipped_and_reported(ct_folder, tmp_path):
    folder = _copy(ct_folder, tmp_path)
    broken = sorted((folder / "case1" / "plain").glob("*.dcm"))[0]
    broken.write_bytes(broken.read_bytes()[:200])  # truncated inside the header
    options = dict(model="simple_cnn.phantom", batch_size=4, seed=1)
    with pytest.raises(DataError, match=broken.name):
        load_dicom_folder(folder, cache_dir=tmp_path / "c1", **options)
    data = load_dicom_folder(folder, cache_dir=tmp_path / "c2", skip_unreadable=True, **options)
    skipped = data.source["skipped"]
    assert [s["path"] for s in skipped] == [str(broken)] and "Dicom" in skipped[0]["reason"]
    assert data.source["files"]["train"] + data.source["files"]["validation"] == 15


def test_split_refuses_one_class_and_keeps_patients_apart(ct_folder, tmp_path):
    labels = read_labels(ct_folder / "labels.csv")
    for seed in range(5):
        train, val = split_rows(labels, 0.2, seed)
        assert not {labels.patients[r] for r in train} & {labels.patients[r] for r in val}
        assert sorted([*train, *val]) == list(range(16))
    folder = _copy(ct_folder, tmp_path)
    lines = (folder / "labels.csv").read_text().splitlines()
    (folder / "labels.csv").write_text("\n".join(lines[:1] + [row for row in lines[1:]
                                                              if ",enhanced," in row]) + "\n")
    with pytest.raises(DataError, match="only class 'enhanced'.*at least two classes"):
        load_dicom_folder(folder, "simple_cnn.phantom", cache_dir=tmp_path / "cache")
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    val = _copy(ct_folder, tmp_path / "v")
    with pytest.raises(DataError, match="4 patient\\(s\\) of .* are also in"):
        load_dicom_folder(folder, "simple_cnn.phantom", val_folder=val,
                          cache_dir=tmp_path / "cache")
    text = (val / "labels.csv").read_text()
    (val / "labels.csv").write_text(text.replace("PT-", "PT-OTHER-"))
    given = load_dicom_folder(folder, "simple_cnn.phantom", val_folder=val, batch_size=8,
                              cache_dir=tmp_path / "cache")
    assert given.source["split"] == "given" and given.source["files"] == {"train": 16,
                                                                          "validation": 16}
    assert given.source["patients"] == {"train": 4, "validation": 4, "in_both": 0}
    with pytest.raises(UnknownNameError):
        load_dicom_folder(folder, "simple_cnn.phantom", windows="lugn",
                          cache_dir=tmp_path / "cache")
    with pytest.raises(InvalidArgumentError, match="3 windows for 1 channels"):
        load_dicom_folder(folder, "simple_cnn.phantom", windows=["lung", "bone", "brain"],
                          cache_dir=tmp_path / "cache")


def test_stream_augmentation_moves_whole_pixels_and_keeps_the_range():
    """The shift samples at the nearest pixel: every output value is an input value (no
    interpolation); brightness and contrast stay inside the model's input range."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (8, 32, 32, 1)).astype(np.float32)
    shift, brightness, contrast = stream_augmentation((0.0, 255.0), seed=4)
    moved = np.asarray(shift(x, training=True))
    assert np.isin(moved, x).all()
    assert not np.array_equal(moved, x)
    jittered = np.asarray(contrast(brightness(x, training=True), training=True))
    assert jittered.min() >= 0.0 and jittered.max() <= 255.0
    assert not np.allclose(jittered, x)


def test_a_data_source_run_json_cannot_record_is_refused_before_training(tmp_path):
    from zoo.train.finetune import finetune

    x = np.zeros((8, 16, 16, 1), np.float32)
    y = np.arange(8) % 2
    with pytest.raises(InvalidArgumentError, match="data_source=dict.*validation_metrics"):
        finetune("simple_cnn", (x, y), num_classes=2, data_source={"kind": "dicom"},
                 out_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()
