"""``zoo evaluate`` on a segmentation folder (images/ + masks/ as .npy): sliding-window inference
per case, metrics.csv and summary.json checked against Dice and HD95 computed here, and the
overwrite rule."""

from __future__ import annotations

import csv
import json

import keras
import numpy as np
import pytest

from zoo.cli import main
from zoo.metrics import hausdorff_distance


def _nearest_class_net(path, classes=3, shape=(8, 8, 8)):
    """A 1x1x1 convolution whose softmax picks the class nearest to the intensity: logit_c =
    a c x - a c^2 / 2, so the argmax is round(x) for x in [0, classes - 1]."""
    inp = keras.Input((*shape, 1))
    model = keras.Model(inp, keras.layers.Conv3D(classes, 1, activation="softmax")(inp))
    c = np.arange(classes, dtype="float32")
    model.set_weights([(4.0 * c).reshape(1, 1, 1, 1, classes), -2.0 * c**2])
    model.save(path)
    return path


def _cases(folder, rng):
    """Three cases: intensities = labels + noise, except where the mask says otherwise."""
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    shape = (10, 12, 12)
    out = {}
    for name in ("a", "b", "c"):
        labels = np.zeros(shape, np.int64)
        if name != "c":  # case c: nothing to find, and nothing in the image
            labels[2:7, 3:9, 2:8] = 1
            labels[6:9, 8:11, 7:11] = 2
        image = labels + rng.uniform(-0.2, 0.2, shape)
        mask = labels.copy()
        if name == "b":
            mask[0:2, 0:3, 0:3] = 2  # a reference blob the image does not show
        np.save(folder / "images" / f"{name}.npy", image.astype("float32"))
        np.save(folder / "masks" / f"{name}.npy", mask.astype("uint8"))
        out[name] = (labels, mask)  # labels: what the model must predict
    return out


def test_zoo_evaluate_writes_per_case_rows_and_class_means(tmp_path, capsys):
    model = _nearest_class_net(tmp_path / "seg.keras")
    cases = _cases(tmp_path / "data", np.random.default_rng(0))
    out = tmp_path / "eval"
    args = ["evaluate", str(model), str(tmp_path / "data"), "--out", str(out), "--spacing", "2.5",
            "0.8", "0.8", "--overlap", "0.5", "--bootstrap", "50"]
    assert main(args) == 0
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["case"], r["class"]) for r in rows] == [(n, str(c)) for n in "abc" for c in (1, 2)]
    assert list(rows[0]) == ["case", "class", "dice", "iou", "hd95_mm", "asd_mm", "flag", "spacing"]
    for r in rows:
        predicted, mask = cases[r["case"]]
        t, p = mask == int(r["class"]), predicted == int(r["class"])
        if r["case"] == "c":
            assert r["flag"] == "both empty" and float(r["dice"]) == 1.0 and r["hd95_mm"] == "nan"
            continue
        dice = 2 * (t & p).sum() / (t.sum() + p.sum())
        assert float(r["dice"]) == pytest.approx(dice) and float(r["iou"]) == pytest.approx(
            (t & p).sum() / (t | p).sum())
        hd = hausdorff_distance(t, p, spacing=(2.5, 0.8, 0.8))
        assert float(r["hd95_mm"]) == pytest.approx(hd) and r["flag"] == "" and r["spacing"] == "2.5 0.8 0.8"
    assert float(rows[0]["dice"]) == 1.0 and float(rows[3]["dice"]) < 0.95  # case b, class 2
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_cases"] == 3 and summary["num_classes"] == 3
    for c in ("1", "2"):
        dices = [float(r["dice"]) for r in rows if r["class"] == c]
        m = summary["classes"][c]["dice"]
        assert m["value"] == pytest.approx(np.mean(dices)) and m["low"] <= m["value"] <= m["high"]
        assert summary["classes"][c]["hd95_mm"]["n"] == 2 and summary["classes"][c]["flags"] == {"both empty": 1}
    assert "class 2: dice" in capsys.readouterr().out

    # never over an earlier output without --overwrite; with it, the same numbers again
    before = (out / "metrics.csv").read_bytes()
    assert main(args) == 2
    assert "exists" in capsys.readouterr().err and (out / "metrics.csv").read_bytes() == before
    assert main([*args, "--overwrite", "--tta", "--largest-component"]) == 0
    with open(out / "metrics.csv", newline="") as f:
        again = list(csv.DictReader(f))
    assert [r["dice"] for r in again] == [r["dice"] for r in rows]  # flips and LCC change nothing here


def test_zoo_evaluate_refuses_mismatched_folders_and_classifiers(tmp_path, capsys):
    model = _nearest_class_net(tmp_path / "seg.keras")
    data = tmp_path / "data"
    _cases(data, np.random.default_rng(1))
    (data / "images" / "d.npy").write_bytes((data / "images" / "a.npy").read_bytes())
    assert main(["evaluate", str(model), str(data)]) == 2
    assert "['d'] have an image without a mask" in capsys.readouterr().err
    (data / "images" / "d.npy").unlink()
    np.save(data / "masks" / "a.npy", np.full((10, 12, 12), 3, np.uint8))
    assert main(["evaluate", str(model), str(data)]) == 2
    assert "label values [3] are outside the declared classes 0..2" in capsys.readouterr().err
    inp = keras.Input((8, 8, 8, 1))
    classifier = keras.Model(inp, keras.layers.Dense(2, activation="softmax")(
        keras.layers.GlobalAveragePooling3D()(inp)))
    classifier.save(tmp_path / "cls.keras")
    assert main(["evaluate", str(tmp_path / "cls.keras"), str(data)]) == 2
    assert "needs a segmentation model" in capsys.readouterr().err


def test_nifti_cases_bring_their_spacing_and_masks_must_share_the_image_grid(tmp_path, capsys):
    """NIfTI images bring their spacing (read_nifti); a NIfTI mask is read onto its image's grid
    (read_mask), and a mask on another grid is refused, not scored against the wrong voxels."""
    nib = pytest.importorskip("nibabel")
    model = _nearest_class_net(tmp_path / "seg.keras", classes=2)
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    mask = np.zeros((10, 12, 12), np.uint8)
    mask[3:7, 3:9, 3:9] = 1
    shifted = np.roll(mask, 1, axis=0)  # what the image shows: one slice further along z
    # NIfTI's first array axis is i; the zoo's (z, y, x) is its transpose, spacing (3, 1, 1)
    affine = np.diag([1.0, 1.0, 3.0, 1.0])
    nib.Nifti1Image(shifted.T.astype("float32"), affine).to_filename(data / "images" / "x.nii.gz")
    nib.Nifti1Image(mask.T, affine).to_filename(data / "masks" / "x.nii.gz")
    out = tmp_path / "eval"
    assert main(["evaluate", str(model), str(data), "--out", str(out), "--spacing", "1", "1", "1"]) == 0
    with open(out / "metrics.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert row["spacing"] == "3 1 1" and float(row["hd95_mm"]) == pytest.approx(3.0)  # the header's z

    moved = affine.copy()
    moved[0, 3] = 5.0  # the mask's grid starts 5 mm away from the image's
    nib.Nifti1Image(mask.T, moved).to_filename(data / "masks" / "x.nii.gz")
    assert main(["evaluate", str(model), str(data)]) == 2
    assert "origin" in capsys.readouterr().err
