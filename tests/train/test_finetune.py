"""zoo.finetune end to end on tiny data: files written, best weights kept, early stopping, bad input; CLI."""

from __future__ import annotations

import argparse
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from zoo.data.synthetic import make_phantoms
from zoo.errors import DataError, InvalidArgumentError
from zoo.export import add_export_parser
from zoo.train.cli import add_finetune_parser
from zoo.train.finetune import as_arrays, finetune
from zoo.train.folder_data import load_labelled_folder

SMALL = dict(in_chans=1, num_classes=2, input_shape=(32, 32), widths=(8, 8, 8, 8, 12))


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    return zoo.load("simple_cnn", **SMALL)


@pytest.fixture(scope="module")
def data():
    return make_phantoms(36, size=32, seed=11), make_phantoms(12, size=32, seed=12)


def _events(folder) -> dict:
    values = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for v in event.summary.value:
                assert v.metadata.plugin_data.plugin_name == "scalars"
                values.setdefault(v.tag, {})[event.step] = float(tf.make_ndarray(v.tensor))
    return values


@pytest.mark.slow
def test_two_stages_write_checkpoint_record_and_tensorboard(data, tmp_path):
    train, val = data
    model = _model()
    stage1_start = [w.copy() for w in model.get_layer("stage1_conv1").get_weights()]
    out = tmp_path / "run"
    result = finetune(model, train, val, epochs=(2, 2), batch_size=12, unfreeze_from="stage5_conv1",
                      class_weight="balanced", seed=1, out_dir=out, strategy="cpu", verbose=0, patience=5)
    assert result.checkpoint == out / "best.keras" and result.checkpoint.is_file()
    assert [row["stage"] for row in result.history] == ["stage1"] * 2 + ["stage2"] * 2
    assert [row["learning_rate"] for row in result.history] == pytest.approx([1e-3] * 2 + [1e-4] * 2)
    best = min(result.history, key=lambda r: r["val_loss"])
    assert (result.best_epoch, result.best_value) == (best["epoch"], pytest.approx(best["val_loss"]))

    reloaded = zoo.load_model(result.checkpoint)  # the saved model is the returned (best) one
    np.testing.assert_allclose(reloaded.predict(val.images, verbose=0), result.model.predict(val.images, verbose=0), atol=1e-6)
    for a, b in zip(stage1_start, result.model.get_layer("stage1_conv1").get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)  # before unfreeze_from: never trained

    record = json.loads(result.record.read_text())
    assert result.record == out / "run.json"
    assert record["versions"]["tensorflow"] == tf.__version__ and record["versions"]["keras"] == keras.__version__
    assert record["arguments"]["epochs"] == [2, 2] and record["arguments"]["class_weight"] == "balanced"
    assert record["stage1"]["cached_features"] is True and record["stage1"]["cache_shape"] == [12]
    assert record["stage1"]["first_trainable"] == "head_fc"
    assert record["stage2"]["first_trainable"] == "stage5_conv1"  # BatchNorm stays frozen
    assert record["data"]["train_class_counts"] == np.bincount(train.labels, minlength=2).tolist()
    assert record["history"] == json.loads(json.dumps(result.history))

    logged = _events(out / "logs" / "validation")
    assert logged["epoch_loss"] == pytest.approx({r["epoch"]: r["val_loss"] for r in result.history}, rel=1e-6)
    assert _events(out / "logs" / "train")["epoch_accuracy"] == pytest.approx(
        {r["epoch"]: r["accuracy"] for r in result.history}, rel=1e-6)


def test_early_stopping_without_improvement(data, tmp_path):
    train, val = data
    result = finetune(_model(), train, val, epochs=(6, 0), learning_rate=(1e-9, 1e-9), monitor="val_accuracy",
                      patience=2, batch_size=12, out_dir=tmp_path, strategy="cpu", verbose=0)
    assert len(result.history) == 3 and result.best_epoch == 0  # accuracy cannot move at lr 1e-9


def test_validation_split_is_held_out(data, tmp_path):
    train, _ = data
    result = finetune(_model(), train, epochs=(1, 0), batch_size=12, validation_split=0.25, out_dir=tmp_path,
                      strategy="cpu", verbose=0)
    record = json.loads(result.record.read_text())
    assert record["data"]["train"][0] == 27 and record["data"]["validation"][0] == 9


def test_bad_input_is_explained(data, tmp_path):
    train, val = data
    kw = dict(out_dir=tmp_path, strategy="cpu", verbose=0)
    with pytest.raises(DataError, match="labels go up to 4 but the model has 2 outputs"):
        finetune(_model(), (train.images, np.full(36, 4)), val, **kw)
    with pytest.raises(DataError, match=r"images of shape \(64, 64, 1\) but the model takes \(32, 32, 1\)"):
        finetune(_model(), make_phantoms(4, size=64), val, **kw)
    with pytest.raises(DataError, match="36 images but labels of shape"):
        finetune(_model(), (train.images, train.labels[:5]), val, **kw)
    with pytest.raises(InvalidArgumentError, match="epochs=.*not both 0"):
        finetune(_model(), train, val, epochs=(0, 0), **kw)
    with pytest.raises(InvalidArgumentError, match="monitor='auc'"):
        finetune(_model(), train, val, monitor="auc", **kw)
    with pytest.raises(InvalidArgumentError, match="Unknown strategy 'gpu'"):
        finetune(_model(), train, val, out_dir=tmp_path, strategy="gpu")
    with pytest.raises(DataError, match="too few to hold out"):
        finetune(_model(), (train.images[:1], train.labels[:1]), **kw)
    with pytest.raises(DataError, match="NaN"):
        as_arrays((np.full((2, 4, 4), np.nan), [0, 1]), "train_data")


def test_dataset_input_is_read_in_order(data):
    train, _ = data
    ds = tf.data.Dataset.from_tensor_slices((train.images[:10], train.labels[:10])).batch(4)
    x, y = as_arrays(ds, "train_data")
    np.testing.assert_array_equal(x, train.images[:10])
    np.testing.assert_array_equal(y, train.labels[:10])


def test_labelled_folder(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (8, 8)).astype(np.uint8)
    b = rng.integers(0, 65535, (8, 8, 1)).astype(np.uint16)
    np.save(tmp_path / "a.npy", a.astype(np.float32))
    (tmp_path / "b.png").write_bytes(tf.io.encode_png(b).numpy())
    (tmp_path / "labels.csv").write_text("file,label\na.npy,lesion\nb.png,normal\n")
    x, y, names = load_labelled_folder(tmp_path)
    assert names == ["lesion", "normal"] and y.tolist() == [0, 1] and x.shape == (2, 8, 8, 1)
    np.testing.assert_array_equal(x[0, ..., 0], a)
    np.testing.assert_array_equal(x[1], b.astype(np.float32))  # 16-bit values kept
    (tmp_path / "labels.csv").write_text("file,label\na.npy,0\nmissing.png,1\n")
    with pytest.raises(DataError, match="missing.png: listed in the labels CSV but not found"):
        load_labelled_folder(tmp_path)
    (tmp_path / "labels.csv").write_text("name,class\na.npy,0\n")
    with pytest.raises(DataError, match="'file' and 'label' columns"):
        load_labelled_folder(tmp_path)


def _cli(argv):
    parser = argparse.ArgumentParser(prog="zoo")
    sub = parser.add_subparsers(dest="command", required=True)
    add_finetune_parser(sub)
    add_export_parser(sub)
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.mark.slow
def test_cli_finetune_demo_then_export(tmp_path, capsys):
    out = tmp_path / "ft"
    assert _cli(["finetune", "simple_cnn.phantom", "--demo", "--demo-size", "24", "--epochs", "1", "0",
                 "--batch-size", "12", "--strategy", "cpu", "--out", str(out), "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["checkpoint"] == str(out / "best.keras") and (out / "run.json").is_file()
    assert json.loads((out / "run.json").read_text())["arguments"]["model_or_name"] == "simple_cnn.phantom"
    assert _cli(["export", str(out / "best.keras"), str(tmp_path / "sm")]) == 0
    loaded = tf.saved_model.load(str(tmp_path / "sm"))
    x = make_phantoms(3, seed=9).images
    np.testing.assert_allclose(loaded.signatures["serving_default"](image=tf.constant(x))["head_fc"].numpy(),
                               zoo.load_model(out / "best.keras").predict(x, verbose=0), atol=1e-5)
    with pytest.raises(InvalidArgumentError, match="--data FOLDER"):
        _cli(["finetune", "--out", str(out)])
