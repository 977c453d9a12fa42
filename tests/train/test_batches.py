"""A whole engine epoch against a hand computation (global-batch loss weighting, class weights, a short
last batch); Batches' data order, class weights, BatchNorm sync."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from zoo.errors import DataError, InvalidArgumentError
from zoo.train.batches import Batches, class_weights_to_samples
from zoo.train.distribute import strategy
from zoo.train.engine import Engine, sync_batchnorm
from zoo.train.tasks import Classification


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _numpy_sgd(W, b, x, y, w, lr, batch_size, order):
    """Plain numpy: weighted softmax cross-entropy, each batch's sum divided by its own size."""
    losses = []
    for start in range(0, len(x), batch_size):
        idx = order[start:start + batch_size]
        p = _softmax(x[idx] @ W + b)
        onehot = np.eye(W.shape[1])[y[idx]]
        losses.append(-np.log(p[np.arange(len(idx)), y[idx]]) * w[idx])
        delta = (p - onehot) * w[idx, None] / len(idx)
        W, b = W - lr * x[idx].T @ delta, b - lr * delta.sum(0)
    return W, b, np.concatenate(losses).sum() / len(x)


@pytest.mark.parametrize("batch_size,whole_epoch", [(5, False), (2, False), (2, True)])
def test_one_epoch_equals_numpy_sgd(batch_size, whole_epoch):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 3)).astype("float32")
    y = np.array([0, 1, 1, 0, 1], np.int32)
    weights = class_weights_to_samples(y, {0: 1.0, 1: 3.0}, 2)
    inputs = keras.Input((3,), name="x")
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="head_fc")(inputs))
    W0, b0 = (v.numpy().copy() for v in model.weights)
    batches = Batches(x, y, batch_size=batch_size, seed=3, sample_weight=weights)
    engine = Engine(Classification(model), keras.optimizers.SGD(0.1), strategy("cpu"), whole_epoch=whole_epoch)
    metrics = engine.fit(batches, epochs=1)[0]
    W, b, loss = _numpy_sgd(W0.astype(np.float64), b0.astype(np.float64), x, y, weights, 0.1, batch_size, batches.order(0))
    np.testing.assert_allclose(model.weights[0].numpy(), W, atol=1e-6)
    np.testing.assert_allclose(model.weights[1].numpy(), b, atol=1e-6)
    assert metrics["loss"] == pytest.approx(loss, rel=1e-5)
    evaluated = engine.evaluate(Batches(x, y, batch_size=4, shuffle=False))
    p = _softmax(x @ W + b)
    assert evaluated["accuracy"] == pytest.approx(np.mean(p.argmax(-1) == y))
    assert evaluated["loss"] == pytest.approx(np.mean(-np.log(p[np.arange(5), y])), rel=1e-5)


def test_epoch_order_is_seeded_and_changes_per_epoch():
    b = Batches(np.zeros((10, 2)), np.zeros(10), batch_size=4, seed=7)
    assert len(b) == 3
    assert np.array_equal(b.order(2), Batches(np.zeros((10, 2)), np.zeros(10), 4, seed=7).order(2))
    assert sorted(b.order(0)) == list(range(10)) and not np.array_equal(b.order(0), b.order(1))
    assert np.array_equal(Batches(np.zeros((3, 1)), np.zeros(3), 2, shuffle=False).order(5), [0, 1, 2])


def test_the_engine_iterates_batches_without_tf_data_autotuning(tmp_path):
    """The pipeline the engine iterates (Batches in memory and on disk, with a map) has tf.data's
    autotuning off: with it on, each exhausted epoch iterator waited in its destructor for the
    autotuning thread (seconds per ResNet-50 epoch, see finish_batches); the batches are the
    arrays' rows in the epoch's order either way."""
    import tensorflow as tf

    from zoo.train.engine import epoch_source

    x = np.arange(30, dtype=np.float32).reshape(10, 3)
    y = np.arange(10) % 2
    disk = np.lib.format.open_memmap(tmp_path / "x.npy", "w+", np.float32, x.shape)
    disk[:] = x
    b = Batches(x, y, batch_size=4, seed=3)
    sources = [b, Batches(disk, y, batch_size=4, seed=3), lambda e: b.dataset(e, lambda *t: t)]
    for source in sources:
        ds = epoch_source(source, weights=False)(1)
        assert ds.options().autotune.enabled is False
        got = np.concatenate([np.asarray(t[0]) for t in ds])
        np.testing.assert_array_equal(got, x[b.order(1)])
    assert tf.data.Dataset.range(3).options().autotune.enabled is not False  # TF's default: on


def test_bad_batches():
    with pytest.raises(DataError, match="3 inputs but 2 labels"):
        Batches(np.zeros((3, 2)), np.zeros(2), 2)
    with pytest.raises(DataError, match="empty"):
        Batches(np.zeros((0, 2)), np.zeros(0), 2)
    with pytest.raises(InvalidArgumentError, match="batch_size=0"):
        Batches(np.zeros((3, 2)), np.zeros(3), 0)


def test_class_weights():
    y = np.array([0, 0, 0, 1])
    balanced = class_weights_to_samples(y, "balanced", 2)  # n / (k * count): 4/6 and 4/2
    np.testing.assert_allclose(balanced, [2 / 3, 2 / 3, 2 / 3, 2.0])
    assert balanced.sum() == pytest.approx(len(y))
    np.testing.assert_allclose(class_weights_to_samples(y, {1: 5.0}, 2), [1, 1, 1, 5])
    assert class_weights_to_samples(y, None, 2) is None
    with pytest.raises(InvalidArgumentError, match=r"keys \[2\]"):
        class_weights_to_samples(y, {2: 1.0}, 2)
    with pytest.raises(InvalidArgumentError, match="'balanced'"):
        class_weights_to_samples(y, "inverse", 2)


def test_sync_batchnorm_only_for_trainable_bn_and_several_replicas():
    inputs = keras.Input((4,))
    frozen = keras.layers.BatchNormalization(name="bn_frozen")
    frozen.trainable = False
    out = keras.layers.BatchNormalization(name="bn_train")(frozen(inputs))
    model = keras.Model(inputs, out)
    assert sync_batchnorm(model, 1) == 0 and not model.get_layer("bn_train").synchronized
    assert sync_batchnorm(model, 2) == 1
    assert model.get_layer("bn_train").synchronized and not model.get_layer("bn_frozen").synchronized
