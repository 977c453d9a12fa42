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
from zoo.train.finetune import Augment, _AugmentedBatches, finetune
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
                      class_weight="balanced", seed=1, augment=False, out_dir=out, strategy="cpu", verbose=0, patience=5)
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
    from sklearn.metrics import roc_auc_score  # the clinical metrics come from the best model

    probs = result.model.predict(val.images, verbose=0)[:, 1]
    assert record["validation_metrics"]["auc"]["value"] == pytest.approx(
        roc_auc_score(val.labels, probs), abs=1e-6)

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
        finetune(_model(), (train.images, np.arange(36) % 5), val, **kw)
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
    with pytest.raises(DataError, match="groups has 3 entries for 36"):
        finetune(_model(), train, groups=["a", "b", "c"], **kw)
    with pytest.raises(DataError, match="one patient"):  # a patient-wise split needs two patients
        finetune(_model(), train, groups=["p1"] * 36, **kw)
    with pytest.raises(DataError, match="NaN"):
        finetune(_model(), (np.full((2, 32, 32), np.nan), [0, 1]), val, **kw)


def test_a_streamed_dataset_trains_batch_by_batch(data, tmp_path, monkeypatch):
    """tf.data input is consumed as a stream (no whole copy): the generator never runs more than
    prefetch + 2 batches ahead of training, and the loss goes down."""
    train, val = data
    lead = []

    def batches():  # each pass: how many batches it handed over that training has not used yet
        base = consumed()
        for i, start in enumerate(range(0, 36, 6)):
            lead.append(i - (consumed() - base))
            yield train.images[start:start + 6], train.labels[start:start + 6]

    spec = (tf.TensorSpec((None, 32, 32, 1), tf.float32), tf.TensorSpec((None,), tf.int64))
    stream = tf.data.Dataset.from_generator(batches, output_signature=spec).prefetch(2)
    val_ds = tf.data.Dataset.from_tensor_slices((val.images, val.labels)).batch(6)
    model = _model()
    steps = []  # the running engine's count of trained batches

    def consumed():
        return steps[-1]() if steps else 0

    import zoo.train.engine as engine_module

    real_fit = engine_module.Engine.fit

    def fit(self, *args, **kwargs):
        start = int(self.optimizers["main"].iterations.numpy())
        steps.append(lambda: int(self.optimizers["main"].iterations.numpy()) - start)
        return real_fit(self, *args, **kwargs)

    monkeypatch.setattr(engine_module.Engine, "fit", fit)
    result = finetune(model, stream, val_ds, epochs=(0, 3), learning_rate=(1e-3, 3e-3), augment=False,
                      out_dir=tmp_path, strategy="cpu", verbose=0, patience=5)
    assert max(lead) <= 2 + 2
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert json.loads(result.record.read_text())["data"]["streamed"] is True
    with pytest.raises(DataError, match="give val_data as a dataset"):
        finetune(_model(), stream, out_dir=tmp_path / "b", strategy="cpu", verbose=0)


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


def _refused(tmp_path, exc, match, *args, **kwargs):
    """Raises ``exc`` matching ``match`` and trains nothing: no checkpoint or record is written."""
    out = tmp_path / "run"
    with pytest.raises(exc, match=match):
        finetune(*args, out_dir=kwargs.pop("out_dir", out), strategy="cpu", verbose=0, **kwargs)
    assert not (out / "best.keras").exists() and not (out / "run.json").exists()


def test_m8_degenerate_data_is_refused_before_training(data, tmp_path):
    """Issue 12 M8: each bad input is a ZooError naming the input and the fix, raised before any epoch."""
    train, val = data
    model = _model()
    _refused(tmp_path, DataError, r"train_data holds only class 0 .*give num_classes=", model,
             (train.images, np.zeros(36, int)), val)
    _refused(tmp_path, DataError, r"train_data values all lie in \[0, 1\].*multiply by 255", model,
             (train.images / 255.0, train.labels), val)
    _refused(tmp_path, DataError, r"val_data values span \[-1e\+03.*Hounsfield", model,
             train, (val.images * 8 - 1000, val.labels))
    _refused(tmp_path, DataError, r"val_data is empty", model, train, (np.zeros((0, 32, 32, 1)), np.zeros(0, int)))
    _refused(tmp_path, DataError, r"train_data: 36 images but labels of shape \(35,\)", model,
             (train.images, train.labels[:35]), val)
    _refused(tmp_path, DataError, r"labels of type <U6.*np.unique\(labels, return_inverse=True\)", model,
             (train.images, np.where(train.labels == 1, "lesion", "normal")), val)
    _refused(tmp_path, InvalidArgumentError, r"weight_decay=-1: must be a number >= 0", model, train, val,
             weight_decay=-1)
    (tmp_path / "file").write_text("not a folder")
    _refused(tmp_path, InvalidArgumentError, r"out_dir=.*file' is a file, not a folder", model, train, val,
             out_dir=tmp_path / "file")
    assert (tmp_path / "file").read_text() == "not a folder"
    with pytest.raises(DataError, match="val_data: the dataset yields no batches"):
        empty = tf.data.Dataset.from_tensor_slices((np.zeros((0, 32, 32, 1)), np.zeros(0))).batch(4)
        finetune(model, train, empty, out_dir=tmp_path / "e", strategy="cpu", verbose=0)


def test_m8_one_class_is_allowed_when_num_classes_is_given(data, tmp_path):
    train, val = data
    result = finetune("simple_cnn", (train.images, np.zeros(36, int)), val, num_classes=2, input_shape=(32, 32),
                      in_chans=1, epochs=(1, 0), batch_size=12, out_dir=tmp_path, strategy="cpu", verbose=0)
    assert result.model.outputs[0].shape[-1] == 2


def _views(batches, epoch):
    return np.concatenate([x for x, _, _ in batches.dataset(epoch).as_numpy_iterator()])


def test_augmentation_moves_whole_pixels_and_keeps_the_noise(data):
    """Issue 11: bilinear resampling blurs noise and small lesions; Augment only moves pixels (and jitters gain)."""
    train, _ = data
    x, y = train.images, train.labels
    batches = _AugmentedBatches(x, y, 12, 3, None, Augment(shift=0.1, gain=0, offset=0), (0.0, 255.0))
    views, order = _views(batches, 0), batches.order(0)
    np.testing.assert_array_equal(views, _views(batches, 0))  # same seed and epoch: same views
    assert not np.array_equal(views, _views(batches, 1))
    shifts = set()
    for view, src in zip(views, x[order], strict=True):  # the centre is the source moved by whole pixels
        match = [(dy, dx) for dy in range(-3, 4) for dx in range(-3, 4)
                 if np.array_equal(view[8:-8, 8:-8], np.roll(src, (dy, dx), axis=(0, 1))[8:-8, 8:-8])]
        assert match, "a view is not an integer shift of its source"
        shifts.add(match[0])
    assert len(shifts) > 5
    rough = lambda im: float(np.std(np.diff(im, axis=2)))  # noqa: E731  pixel-to-pixel differences
    assert rough(views) == pytest.approx(rough(x), rel=0.05)
    blurred = keras.layers.RandomRotation(0.02, seed=0)(x, training=True)  # the old default: resampled
    assert rough(keras.ops.convert_to_numpy(blurred)) < 0.8 * rough(x)

    turned = _AugmentedBatches(x, y, 12, 3, None, Augment(shift=0, rot90=True, flip=True, gain=0, offset=0), None)
    for view, src in zip(_views(turned, 0), x[turned.order(0)], strict=True):
        assert any(np.array_equal(view, np.rot90(f, k)) for f in (src, src[:, ::-1]) for k in range(4))
    jitter = _AugmentedBatches(x, y, 12, 3, None, Augment(shift=0, gain=0.05, offset=0.02), (0.0, 255.0))
    ratio = _views(jitter, 0) / np.maximum(x[jitter.order(0)], 1)
    assert 0.0 <= _views(jitter, 0).min() and _views(jitter, 0).max() <= 255.0
    assert np.abs(np.median(ratio, axis=(1, 2, 3)) - 1).max() < 0.1


def test_stage2_that_does_not_improve_keeps_stage1(data, tmp_path, capsys):
    """Stage 2 never ends below stage 1 on validation: a destructive stage 2 is rolled back and reported."""
    train, val = data
    result = finetune(_model(), train, val, epochs=(2, 2), learning_rate=(1e-3, 30.0), batch_size=12,
                      patience=2, augment=False, out_dir=tmp_path, strategy="cpu", verbose=0)
    assert result.stage2_kept is False and result.history[result.best_epoch]["stage"] == "stage1"
    stage1_best = min(r["val_loss"] for r in result.history if r["stage"] == "stage1")
    assert result.best_value == pytest.approx(stage1_best)
    val_loss = float(keras.losses.sparse_categorical_crossentropy(val.labels, result.model(val.images)).numpy().mean())
    assert val_loss == pytest.approx(stage1_best, rel=1e-4)  # the returned model holds stage 1's weights
    record = json.loads(result.record.read_text())
    assert record["stage2"]["kept"] is False and "keeps stage 1's weights" in record["stage2"]["note"]
    assert record["best"]["stage"] == "stage1"
    assert "keeps stage 1's weights" in capsys.readouterr().out


def test_m8_a_run_folder_is_replaced_only_with_overwrite_and_never_with_user_files(data, tmp_path):
    """M8 / issue 12 item 7: an earlier run is kept unless overwrite=True; a user's files are never deleted."""
    from zoo.errors import OutputError

    train, val = data
    out = tmp_path / "run"
    kw = dict(epochs=(1, 0), batch_size=12, augment=False, strategy="cpu", verbose=0)
    first = finetune(_model(), train, val, out_dir=out, **kw)
    assert (out / "curves.png").stat().st_size > 0  # training curves next to run.json
    record = (out / "run.json").read_bytes()
    with pytest.raises(OutputError, match="exists; pass overwrite=True"):
        finetune(_model(), train, val, out_dir=out, **kw)
    assert (out / "run.json").read_bytes() == record and first.checkpoint.is_file()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="notes.txt"):
        finetune(_model(), train, val, out_dir=out, overwrite=True, **kw)
    assert (out / "notes.txt").read_text() == "mine" and (out / "run.json").read_bytes() == record
    (out / "notes.txt").unlink()
    finetune(_model(), train, val, out_dir=out, overwrite=True, **kw)
    assert json.loads((out / "run.json").read_text())["arguments"]["overwrite"] is True


def test_multilabel_and_segmentation_tasks_fine_tune_and_check_their_labels(tmp_path):
    """task='multilabel' records per-finding AUCs; task='segmentation' trains on masks (Dice); labels
    that do not fit the task are refused before training."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (24, 16, 16, 1)).astype("float32")
    inputs = keras.Input((16, 16, 1))
    body = keras.layers.Conv2D(4, 3, padding="same", name="body")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D()(body)
    multilabel = keras.Model(inputs, keras.layers.Dense(3, activation="sigmoid", name="head_fc")(pooled))
    kw = dict(epochs=(1, 1), augment=False, strategy="cpu", verbose=0, batch_size=8)
    findings = (rng.random((24, 3)) > 0.5).astype("int32")
    result = finetune(multilabel, (x, findings), task="multilabel", out_dir=tmp_path / "ml", **kw)
    metrics = json.loads(result.record.read_text())["validation_metrics"]
    assert len(metrics["auc_per_finding"]) == 3 and "val_accuracy" in result.history[0]
    segmenter = keras.Model(inputs, keras.layers.Conv2D(2, 1, activation="softmax", name="head_conv")(body))
    masks = (x[..., 0] > 128).astype("int32")
    result = finetune(segmenter, (x, masks), task="segmentation", monitor="val_dice", cache_features=False,
                      out_dir=tmp_path / "seg", **kw)
    assert 0 <= result.history[-1]["val_dice"] <= 1
    with pytest.raises(DataError, match=r"masks of shape \(8, 16\)"):
        finetune(segmenter, (x, masks[:, :8]), task="segmentation", out_dir=tmp_path / "bad", **kw)
    with pytest.raises(DataError, match="use task='multilabel'"):
        finetune(_model(), (np.zeros((8, 32, 32, 1)), np.zeros((8, 2), int)), out_dir=tmp_path / "bad", **kw)


def test_cli_finetune_segmentation_folder_with_a_loss(tmp_path, capsys):
    """zoo finetune --task segmentation reads images/ + masks/ (zoo evaluate's layout, through
    zoo.data.seg_folder) and trains with --loss; --loss names every registered loss in its help."""
    from zoo.data.seg_folder import load_segmentation_folder
    from zoo.errors import UnknownNameError
    from zoo.train.seg_losses import SEG_LOSSES

    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("val", 2)):
        for sub in ("images", "masks"):
            (tmp_path / split / sub).mkdir(parents=True)
        for i in range(n):
            y0, x0 = rng.integers(2, 14, 2)
            mask = np.zeros((24, 24), np.uint8)
            mask[y0:y0 + 8, x0:x0 + 8] = 1
            np.save(tmp_path / split / "images" / f"c{i}.npy", 60 + 120 * mask + rng.normal(0, 10, mask.shape))
            np.save(tmp_path / split / "masks" / f"c{i}.npy", mask)
    x, y, names = load_segmentation_folder(tmp_path / "train")
    assert x.shape == (6, 24, 24, 1) and x.dtype == np.float32 and y.dtype == np.int32 and names[0] == "c0"
    out = tmp_path / "run"
    argv = ["finetune", "dilated_cnn", "--data", str(tmp_path / "train"), "--val-data", str(tmp_path / "val"),
            "--task", "segmentation", "--loss", "dice", "--epochs", "0", "1", "--batch-size", "3", "--no-augment",
            "--strategy", "cpu", "--out", str(out), "--quiet"]
    assert _cli(argv) == 0
    record = json.loads((out / "run.json").read_text())
    assert record["task"] == "segmentation" and record["arguments"]["loss"] == "dice"
    assert record["data"]["train"] == [6, 24, 24, 1] and record["data"]["validation"] == [2, 24, 24, 1]
    assert "val_dice" in record["history"][0] and zoo.load_model(out / "best.keras").output.shape == (None, 24, 24, 2)
    with pytest.raises(UnknownNameError, match="dice_ce"):
        _cli([*argv[:-5], "--loss", "dice_cee", "--out", str(tmp_path / "bad"), "--quiet"])
    parser = argparse.ArgumentParser(prog="zoo")
    add_finetune_parser(parser.add_subparsers())
    help_text = parser._subparsers._group_actions[0].choices["finetune"].format_help()
    assert all(name in help_text for name in SEG_LOSSES.names())


def test_checkpoints_leave_out_best_weights_the_model_holds_and_a_resume_fills_them(tmp_path):
    from zoo.train.finetune import _Run

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2), keras.layers.Dense(1)])
    run = _Run(model, tmp_path, "val_loss", True, 0)
    assert run.best_arrays() == {}
    run.save_best(0)
    assert run.best_arrays() == {}  # just improved: the same values the engine saves
    best = [w.copy() for w in model.get_weights()]
    model.layers[1].kernel.assign(model.layers[1].kernel + 1.0)  # trained on, no improvement
    arrays = run.best_arrays()
    assert sorted(arrays) == ["w2"]
    np.testing.assert_array_equal(arrays["w2"], best[2])
    assert not (tmp_path / "best.keras").exists()  # written once, at the end of the run

    resumed = _Run(model, tmp_path, "val_loss", True, 0)
    resumed.load_state({"history": [], "best_value": 1.0, "best_epoch": 0, "floor": {},
                        "best_weights": len(best)}, arrays)
    resumed.resolve_best()  # the engine has restored the model's variables by now
    for a, b in zip(resumed.best_weights, best, strict=True):
        np.testing.assert_array_equal(a, b)
    resumed.restore_best()
    resumed.write_best()
    for a, b in zip(keras.models.load_model(tmp_path / "best.keras").get_weights(), best,
                    strict=True):
        np.testing.assert_array_equal(a, b)
