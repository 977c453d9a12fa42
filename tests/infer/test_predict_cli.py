"""``zoo predict``: a folder of images, DICOM and broken files -> one row per image, a skip report,
no patient identifier in any output, exit 0 when anything was predicted."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

import zoo
from zoo.data.synthetic import make_phantoms
from zoo.data.synthetic_dicom import FAKE_PHI, write_ct_series
from zoo.infer.cli import predict_folder


@pytest.fixture(scope="module")
def model():
    return zoo.load("simple_cnn.phantom")


def _folder(root):
    """Two .npy phantoms, two CT slices (with fake PHI), a corrupt .dcm, a text file."""
    images = make_phantoms(2, size=64, seed=9).images
    (root / "npy").mkdir(parents=True)
    for i, image in enumerate(images):
        np.save(root / "npy" / f"p{i}.npy", image)
    write_ct_series(root / "ct", n_slices=2, size=32)
    (root / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00garbage")
    (root / "notes.txt").write_text("not an image")
    return images


def test_predict_folder_rows_skips_and_no_phi(model, tmp_path, monkeypatch):
    # the same checkpoint, loaded once per module
    monkeypatch.setattr("zoo.models.factory.load", lambda *a, **k: model)
    images = _folder(tmp_path / "in")
    summary = predict_folder(
        "simple_cnn.phantom", tmp_path / "in", tmp_path / "out", engine="tensorflow", batch=3
    )
    assert (summary["predicted"], summary["skipped"], summary["engine"]) == (4, 2, "tensorflow")
    with open(tmp_path / "out" / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["id"] for r in rows][2:] == ["npy/p0.npy", "npy/p1.npy"]
    assert set(rows[0]) == {
        "id",
        "frame",
        "no-lesion",
        "lesion",
        "predicted",
    }  # the card's class names
    reference = model(images, training=False).numpy()
    got = np.array([[float(r["no-lesion"]), float(r["lesion"])] for r in rows[2:]])
    np.testing.assert_allclose(got, reference, atol=1e-5)
    assert [r["predicted"] for r in rows[2:]] == [
        ["no-lesion", "lesion"][k] for k in reference.argmax(-1)
    ]
    with open(tmp_path / "out" / "skipped.csv") as f:
        skipped = {r["id"]: r["reason"] for r in csv.DictReader(f)}
    assert set(skipped) == {"broken.dcm", "notes.txt"}
    text = "".join(p.read_text() for p in (tmp_path / "out").iterdir())
    assert not [v for v in FAKE_PHI.values() if v in text]
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["predicted"] == 4


def test_cli_exit_codes(model, tmp_path, capsys):
    """A saved .keras model; exit 1 when nothing was readable, 0 when something was, 2 on refusal."""
    from zoo.cli import main

    model.save(tmp_path / "m.keras")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "junk.png").write_bytes(b"not a png")

    def predict(out):
        args = ["predict", str(tmp_path / "m.keras"), str(tmp_path / "in"), "--out", str(out)]
        return main([*args, "--engine", "tensorflow"])

    assert predict(tmp_path / "o1") == 1  # nothing readable: a skip report, no traceback
    assert "0 image(s) predicted, 1 file(s) skipped" in capsys.readouterr().out
    np.save(tmp_path / "in" / "ok.npy", make_phantoms(1, size=64, seed=3).images[0])
    assert predict(tmp_path / "o2") == 0
    with open(tmp_path / "o2" / "predictions.csv") as f:
        assert [r["id"] for r in csv.DictReader(f)] == ["ok.npy"]
    assert predict(tmp_path / "o2") == 2  # an existing output needs --overwrite
    assert "--overwrite" in capsys.readouterr().err
