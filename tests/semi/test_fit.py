"""zoo.semi.fit end to end: weight 0 is the supervised run exactly (every registered method), the
unlabelled images help on the cluster toy set, errors before training, .keras and published
cards."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from zoo.data.synthetic import make_clusters
from zoo.errors import DataError, InvalidArgumentError, UnknownNameError
from zoo.semi import METHODS, fit


def _model(seed=0, classes=2):
    import keras

    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((8, 8, 1)), keras.layers.Rescaling(1 / 127.5, -1.0),
        keras.layers.Conv2D(4, 3, padding="same"), keras.layers.BatchNormalization(),
        keras.layers.ReLU(), keras.layers.GlobalAveragePooling2D(), keras.layers.Dropout(0.3),
        keras.layers.Dense(classes, activation="softmax")])


@pytest.fixture(scope="module")
def small():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (6, 8, 8, 1)).astype(np.float32)
    u = rng.uniform(0, 255, (12, 8, 8, 1)).astype(np.float32)
    return x, np.array([0, 1] * 3), u


def _run(method, data, weight, **options):
    x, y, u = data
    model = _model()
    if "value_range" in METHODS[method].options():  # a plain Keras model does not say it
        options.setdefault("value_range", (0.0, 255.0))
    result = fit(method, model, (x, y), u, epochs=1, batch_size=3, unlabelled_batch_size=6,
                 unlabelled_weight=weight, seed=5, **options)
    return result.classifier.get_weights()


# methods whose weight-0 check needs more than a network and lives in their own test file
ELSEWHERE = {"m1m2": "needs a trained M1 VAE (m1=); tests/semi/test_vae_m1m2.py checks weight 0"}


@pytest.fixture(scope="module")
def baseline(small):
    return _run("supervised", small, 1.0)


@pytest.mark.parametrize("method", [m for m in METHODS if m != "supervised"])
def test_weight_zero_is_supervised_exactly(method, small, baseline):
    """Same batches, loss, dropout draws and BatchNorm statistics as the baseline; weight > 0
    does change the result (the unlabelled images are really used)."""
    if method in ELSEWHERE:
        pytest.skip(f"{method}: {ELSEWHERE[method]}")
    base = baseline
    for got, want in zip(_run(method, small, 0.0), base, strict=True):
        np.testing.assert_array_equal(got, want)
    options = METHODS[method].options()
    extra = {"ramp_up": 0} if "ramp_up" in options else {}
    if method == "pseudo_label":
        extra = {"stage_epochs": 1, "reinit": False}
    used = _run(method, small, 1.0, **extra)
    assert any(not np.array_equal(a, b) for a, b in zip(used, base, strict=True))


def _cluster_accuracy(method, seed, labels_per_class=2):
    import keras

    train, test = make_clusters(320, seed=seed), make_clusters(400, seed=100 + seed)
    rng = np.random.default_rng(seed)
    idx = np.concatenate([rng.choice(np.flatnonzero(train.labels == c), labels_per_class,
                                     replace=False) for c in (0, 1)])
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((16, 16, 1)), keras.layers.Rescaling(1 / 127.5, -1.0),
                              keras.layers.Flatten(), keras.layers.Dense(32, activation="relu"),
                              keras.layers.Dense(2, activation="softmax")])
    options = {"ramp_up": 40} if "ramp_up" in METHODS[method].options() else {}
    result = fit(method, model, (train.images[idx], train.labels[idx]), train.images,
                 epochs=24, batch_size=4, unlabelled_batch_size=64, learning_rate=3e-3,
                 seed=seed, **options)
    pred = result.classifier.predict(test.images, verbose=0).argmax(-1)
    return float(np.mean(pred == test.labels))


SEEDS = [int(s) for s in os.environ.get("ZOO_SEMI_SEEDS", "0").split(",")]
MINE = ["pi_model", "temporal_ensembling", "mean_teacher", "fixmatch", "pseudo_label"]


@pytest.mark.slow
def test_unlabelled_images_help_on_clusters():
    """CI: one seed; the labels leave supervised training wrong on > 10% of the test images,
    and each method at least halves its error. ZOO_SEMI_SEEDS=0,1,2: the issue's rule, a mean
    gain of more than 2 pooled standard deviations over the seeds (benchmarks/bench_semi.py
    reports the same with 3 seeds)."""
    base = np.array([_cluster_accuracy("supervised", s) for s in SEEDS])
    assert base.mean() < 0.9  # the few labels are ambiguous for supervised training
    for method in MINE:
        acc = np.array([_cluster_accuracy(method, s) for s in SEEDS])
        gain = acc.mean() - base.mean()
        if len(SEEDS) > 1:
            pooled = np.sqrt((acc.var(ddof=1) + base.var(ddof=1)) / 2)
            assert gain > 2 * pooled, (method, acc, base)
        else:
            assert 1 - acc.mean() < 0.5 * (1 - base.mean()), (method, acc, base)


@pytest.mark.parametrize("call, error, match", [
    (dict(method="mean_teachr"), UnknownNameError, "Did you mean 'mean_teacher'"),
    (dict(tau=0.9, method="mean_teacher"), InvalidArgumentError, "takes no option 'tau'"),
    (dict(unlabelled=np.zeros((0, 8, 8, 1))), DataError, "no unlabelled images"),
    (dict(unlabelled=np.zeros((4, 8, 6, 1))), DataError, "unlabelled images of shape"),
    (dict(unlabelled=np.full((4, 8, 8, 1), 0.5)), DataError, "unlabelled images span"),
    (dict(num_classes=1), DataError, "labels go from 0 to 1"),
    (dict(unlabelled_weight=float("nan")), InvalidArgumentError, "unlabelled_weight=nan"),
    (dict(tag="mine"), InvalidArgumentError, "tag= publishes a zoo network by name"),
    (dict(model="no_such_net"), UnknownNameError, "Unknown model 'no_such_net'"),
    (dict(val="pool"), DataError, "also in the unlabelled pool"),
])
def test_errors_before_training(call, error, match, small):
    x, y, u = small
    kwargs = {"method": "fixmatch", "model": None, "unlabelled": u, **call}
    if kwargs.get("val") == "pool":  # validation images that the unlabelled pool holds
        kwargs["val"] = (u[3:5], np.array([0, 1]))
    with pytest.raises(error, match=match):
        fit(kwargs.pop("method"), kwargs.pop("model"), (x, y), kwargs.pop("unlabelled"),
            epochs=1, **kwargs)


def _volume_model():
    import keras

    return keras.Sequential([keras.Input((8, 8, 8, 1)), keras.layers.Conv3D(2, 3),
                             keras.layers.GlobalAveragePooling3D(),
                             keras.layers.Dense(2, activation="softmax")])


def test_volumes_train_and_fixmatch_refuses_them():
    """3D: the weak augmentation flips volumes; FixMatch's 2D strong one refuses before training."""
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 255, (4, 8, 8, 8, 1)).astype(np.float32)
    u = rng.uniform(0, 255, (8, 8, 8, 8, 1)).astype(np.float32)
    y = np.array([0, 1, 0, 1])
    result = fit("mean_teacher", _volume_model(), (x, y), u, epochs=1, batch_size=2,
                 unlabelled_batch_size=4, ramp_up=0)
    assert np.isfinite(result.history[-1]["loss"])
    with pytest.raises(InvalidArgumentError, match="fixmatch needs a 2D classifier"):
        fit("fixmatch", _volume_model(), (x, y), u, epochs=1)


def test_pipeline_unlabelled_refused_for_per_image_methods(small):
    import tensorflow as tf

    x, y, u = small
    with pytest.raises(DataError, match="as an array"):
        fit("temporal_ensembling", _model(), (x, y), tf.data.Dataset.from_tensor_slices(u).batch(4),
            epochs=1, num_classes=2)


def test_cli_publishes_a_card_that_loads_in_a_fresh_process_and_round_trips(tmp_path, capsys):
    """`zoo semi ... --tag` trains simple_cnn from .npz/.npy files and writes a card; the
    classifier round-trips .keras in safe mode, and the card loads in a fresh offline process
    to the same outputs."""
    import zoo
    from zoo.cli import main
    from zoo.saving import load_model

    c = make_clusters(12, seed=2, size=32)
    np.savez(tmp_path / "lab.npz", images=c.images[:4], labels=c.labels[:4])
    np.save(tmp_path / "pool.npy", c.images)
    code = main(["semi", "mean_teacher", "--model", "simple_cnn", "--labelled",
                 str(tmp_path / "lab.npz"), "--unlabelled", str(tmp_path / "pool.npy"),
                 "--epochs", "1", "--batch-size", "4", "--option", "ramp_up=0",
                 "--tag", "semi_test_mt"])
    out = capsys.readouterr().out
    assert code == 0 and "mean_teacher: 1 epochs" in out and "simple_cnn.semi_test_mt" in out
    card = zoo.get_card("simple_cnn.semi_test_mt")
    assert card.include_top and card.num_classes == 2 and card.extra["recipe"] == "mean_teacher"
    model = zoo.load("simple_cnn", pretrained="semi_test_mt")
    probe = c.images[:3]
    model.save(tmp_path / "m.keras")
    again = load_model(tmp_path / "m.keras", safe_mode=True)
    want = model.predict(probe, verbose=0)
    np.testing.assert_allclose(again.predict(probe, verbose=0), want, rtol=1e-5, atol=1e-6)
    np.save(tmp_path / "probe.npy", probe)
    code = ("import sys, numpy as np, zoo; m = zoo.load('simple_cnn', pretrained='semi_test_mt');"
            "np.save(sys.argv[1] + '/out.npy', m.predict(np.load(sys.argv[1] + '/probe.npy'), "
            "verbose=0))")
    env = {**os.environ, "ZOO_OFFLINE": "1"}
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, env=env, timeout=120,
                   cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), want, rtol=1e-5, atol=1e-6)
