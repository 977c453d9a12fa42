"""zoo.semi's contract: the method registry, the labelled + unlabelled stream, input checks, the
cluster toy set and the supervised baseline (equal to the engine's Classification task)."""

from __future__ import annotations

import numpy as np
import pytest

from zoo.data.synthetic import make_clusters
from zoo.errors import DataError, InvalidArgumentError, UnknownNameError
from zoo.semi import METHODS, list_methods, register_method
from zoo.semi.data import SemiStream, check_inputs


def test_registry_names_and_did_you_mean():
    assert list_methods()[0] == "supervised"
    spec = METHODS["supervised"]
    assert spec.family == "supervised" and spec.backbones
    with pytest.raises(UnknownNameError, match="Did you mean 'supervised'"):
        METHODS.get("supervisd")
    with pytest.raises(ValueError, match="family"):
        register_method("x", family="magic", summary="", backbones="")


def test_unknown_option_and_bad_weight_before_training():
    from zoo.semi.api import build_task

    with pytest.raises(InvalidArgumentError, match="takes no option 'tau'"):
        METHODS["supervised"].task(None, num_classes=2, tau=0.9)
    with pytest.raises(InvalidArgumentError, match="unlabelled_weight=-1"):
        build_task("supervised", None, num_classes=2, unlabelled_weight=-1)


def _stream(n=10, m=23, b=4, ub=5, seed=3):
    x = np.arange(n, dtype=np.float32)[:, None, None, None] * np.ones((1, 2, 2, 1), np.float32)
    y = np.arange(n) % 2
    u = 100 + np.arange(m, dtype=np.float32)[:, None, None, None] * np.ones((1, 2, 2, 1))
    return SemiStream((x, y), u, batch_size=b, unlabelled_batch_size=ub, seed=seed), x, y, u


def _epoch(stream, epoch):
    return [(  {k: np.asarray(v) for k, v in xs.items()}, np.asarray(y), np.asarray(w))
            for xs, y, w in stream.dataset(epoch)]


def test_stream_one_pass_over_unlabelled_labelled_cycled():
    stream, x, y, u = _stream()
    batches = _epoch(stream, 0)
    assert len(batches) == len(stream) == 5  # ceil(23 / 5)
    index = np.concatenate([b[0]["index"] for b in batches])
    assert sorted(index.tolist()) == list(range(23))  # every unlabelled image exactly once
    for xs, yl, wl in batches:
        assert xs["labelled"].dtype == np.float32 and yl.dtype == np.int32
        assert xs["index"].dtype == np.int64 and np.all(wl == 1)
        np.testing.assert_array_equal(xs["unlabelled"], u[xs["index"]])  # index = row in u
        rows = xs["labelled"][:, 0, 0, 0].astype(int)
        np.testing.assert_array_equal(yl, y[rows])
        assert len(yl) == 4
    rows = np.concatenate([b[0]["labelled"][:, 0, 0, 0] for b in batches]).astype(int)
    assert sorted(rows[:10].tolist()) == list(range(10))  # a full shuffle before any repeat
    assert sorted(rows[10:20].tolist()) == list(range(10))


def test_stream_deterministic_per_epoch():
    a, b = _stream()[0], _stream()[0]
    e0, again, e1 = _epoch(a, 0), _epoch(b, 0), _epoch(a, 1)
    for p, q in zip(e0, again, strict=True):
        np.testing.assert_array_equal(p[0]["index"], q[0]["index"])
        np.testing.assert_array_equal(p[1], q[1])
    assert not np.array_equal(e0[0][0]["index"], e1[0][0]["index"])


def test_stream_from_datasets_has_no_index():
    import tensorflow as tf

    _, x, y, u = _stream()
    lab = tf.data.Dataset.from_tensor_slices((x, y)).batch(3)
    unl = tf.data.Dataset.from_tensor_slices(u).batch(6)
    batches = _epoch(SemiStream(lab, unl, batch_size=3), 0)
    assert len(batches) == 4  # ceil(23 / 6): one pass over the unlabelled pipeline
    assert all(np.all(b[0]["index"] == -1) for b in batches)
    assert sum(len(b[0]["unlabelled"]) for b in batches) == 23


@pytest.mark.parametrize("case, match", [
    ("shape", "unlabelled images of shape"),
    ("range", "unlabelled images span"),
    ("empty", "no unlabelled images"),
    ("label", "labels go from 0 to 3"),
    ("nan", "NaN"),
])
def test_check_inputs_errors(case, match):
    x = np.random.default_rng(0).uniform(0, 255, (6, 8, 8, 1)).astype(np.float32)
    y = np.array([0, 1, 0, 1, 0, 1])
    u = np.random.default_rng(1).uniform(0, 255, (9, 8, 8, 1)).astype(np.float32)
    if case == "shape":
        u = u[:, :4]
    elif case == "range":
        u = u / 255.0
    elif case == "empty":
        u = u[:0]
    elif case == "label":
        y = y * 3
    else:
        u[2, 1, 1, 0] = np.nan
    with pytest.raises(DataError, match=match):
        check_inputs(x, y, u, num_classes=2)
    check_inputs(x, np.array([0, 1, 0, 1, 0, 1]),
                 np.random.default_rng(1).uniform(0, 255, (9, 8, 8, 1)), num_classes=2)


def test_make_clusters_structure():
    c = make_clusters(400, seed=0)
    np.testing.assert_array_equal(c.images, make_clusters(400, seed=0).images)
    assert c.images.shape == (400, 16, 16, 1) and c.images.dtype == np.float32
    assert 0 <= c.images.min() and c.images.max() <= 255
    test = make_clusters(300, seed=9)
    flat, other = c.images.reshape(400, -1), test.images.reshape(300, -1)
    dist = ((other[:, None] - flat[None]) ** 2).sum(-1)
    # clusters: with every label, the nearest neighbour in pixel space is right
    assert np.mean(c.labels[dist.argmin(1)] == test.labels) > 0.97
    # ... but two labels per class leave it ambiguous (numpy 1-NN, independent of the zoo)
    few = np.concatenate([np.flatnonzero(c.labels == k)[:2] for k in (0, 1)])
    assert np.mean(c.labels[few][dist[:, few].argmin(1)] == test.labels) < 0.8


def test_supervised_equals_engine_classification():
    """The baseline on the stream = the engine's Classification on the same labelled batches."""
    import keras
    import tensorflow as tf

    from zoo.train.engine import Engine
    from zoo.train.tasks import Classification

    stream, x, y, u = _stream(n=12, m=16, b=4, ub=4)

    def model():
        keras.utils.set_random_seed(0)
        return keras.Sequential([keras.Input((2, 2, 1)), keras.layers.Flatten(),
                                 keras.layers.Dense(2, activation="softmax")])

    a, b = model(), model()
    semi = METHODS["supervised"].task(a, num_classes=2, unlabelled_weight=1.0)
    Engine(semi, keras.optimizers.SGD(0.01)).fit(stream, epochs=2)

    def plain(epoch):
        return stream.dataset(epoch).map(lambda xs, yl, wl: (xs["labelled"], yl, wl))

    Engine(Classification(b), keras.optimizers.SGD(0.01)).fit(plain, epochs=2)
    for p, q in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_array_equal(p, q)
    assert not np.array_equal(a.get_weights()[0], model().get_weights()[0])  # it did train
    assert tf.is_tensor(semi.iterations) and int(semi.iterations.numpy()) == 8


def test_docs_table_lists_every_method():
    """docs/semi.md's method x network table has a row for every registered method."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "semi.md").read_text()
    missing = [m for m in METHODS if f"| `{m}` |" not in text]
    assert not missing, f"add rows for {missing} to docs/semi.md's method table"


def test_cli_errors_are_one_line(capsys):
    from zoo.cli import main

    assert main(["semi", "mean_teachr", "--quick"]) == 2
    assert "Did you mean 'mean_teacher'" in capsys.readouterr().err
    assert main(["semi", "fixmatch"]) == 2
    assert "give --labelled and --unlabelled" in capsys.readouterr().err
