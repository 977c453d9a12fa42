"""zoo.semi.fit's closing BatchNorm pass (zoo.train.batchnorm.recompute_batchnorm): the moving
statistics become the statistics of the labelled + unlabelled images under the final weights
(checked against numpy on the layer's inputs), frozen layers keep theirs, and a frozen weight
average (FixMatch's) is recomputed like the trained network."""

from __future__ import annotations

import numpy as np
import pytest

from zoo.errors import InvalidArgumentError


def _net(seed=0):
    import keras

    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((8, 8, 1)), keras.layers.Rescaling(1 / 127.5, -1.0),
        keras.layers.Conv2D(4, 3, padding="same", name="conv"),
        keras.layers.BatchNormalization(name="bn"), keras.layers.ReLU(),
        keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2, activation="softmax")])


def _bn_input(model, x):
    """The BatchNorm layer's input for images ``x`` (numpy, float64), per channel rows."""
    import keras

    probe = keras.Model(model.inputs[0], model.get_layer("conv").output)
    return np.asarray(probe(x), np.float64).reshape(-1, 4)


def _batch_stats(model, batches):
    """Image-weighted mean of the per-batch means and (biased) variances, by numpy."""
    rows = [_bn_input(model, b) for b in batches]
    n = np.array([len(b) for b in batches], np.float64)[:, None]
    mean = (np.stack([r.mean(0) for r in rows]) * n).sum(0) / n.sum()
    var = (np.stack([r.var(0) for r in rows]) * n).sum(0) / n.sum()
    return mean, var


def test_recompute_sets_population_mean_and_average_batch_variance():
    from zoo.train.batchnorm import recompute_batchnorm

    model = _net()
    rng = np.random.default_rng(0)
    batches = [rng.uniform(0, 255, (k, 8, 8, 1)).astype(np.float32) for k in (5, 5, 3)]
    bn = model.get_layer("bn")
    assert recompute_batchnorm(model, batches) == 13
    mean, var = _batch_stats(model, batches)
    np.testing.assert_allclose(bn.moving_mean.numpy(), mean,
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(mean, _bn_input(model, np.concatenate(batches)).mean(0),
                               rtol=1e-4, atol=1e-5)  # the weighted mean is the population's
    np.testing.assert_allclose(bn.moving_variance.numpy(), var, rtol=1e-4)
    assert bn.momentum == 0.99 and bn.trainable  # put back


def test_a_layer_frozen_in_the_trained_network_keeps_its_statistics_and_a_frozen_copy_moves():
    from zoo.train.batchnorm import recompute_batchnorm

    trained, copy = _net(), _net(1)
    copy.trainable = False  # FixMatch's weight average is a frozen copy
    x = np.random.default_rng(1).uniform(0, 255, (6, 8, 8, 1)).astype(np.float32)
    recompute_batchnorm(copy, [x], like=trained)
    mean, _ = _batch_stats(copy, [x])
    np.testing.assert_allclose(copy.get_layer("bn").moving_mean.numpy(), mean, rtol=1e-4,
                               atol=1e-5)
    assert not copy.get_layer("bn").trainable
    trained.get_layer("bn").trainable = False
    before = trained.get_layer("bn").moving_mean.numpy().copy()
    recompute_batchnorm(trained, [x])
    np.testing.assert_array_equal(trained.get_layer("bn").moving_mean.numpy(), before)


@pytest.mark.parametrize("method", ["supervised", "fixmatch"])
def test_fit_ends_with_the_statistics_of_labelled_and_unlabelled_images(method):
    """Fails on a fit without the closing pass: its moving averages mix earlier weights."""
    from zoo.semi import fit

    rng = np.random.default_rng(2)
    x, u = (rng.uniform(0, 255, (k, 8, 8, 1)).astype(np.float32) for k in (6, 12))
    y = np.array([0, 1] * 3)
    runs = {}
    for recompute in (True, False):
        result = fit(method, _net(), (x, y), u, epochs=2, batch_size=3, unlabelled_batch_size=6,
                     seed=3, recompute_bn=recompute)
        runs[recompute] = result.classifier
    model = runs[True]
    mean, var = _batch_stats(model, [x[:6], u[:6], u[6:]])
    np.testing.assert_allclose(model.get_layer("bn").moving_mean.numpy(), mean, rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_allclose(model.get_layer("bn").moving_variance.numpy(), var, rtol=1e-4)
    old = runs[False]
    old_mean, _ = _batch_stats(old, [x[:6], u[:6], u[6:]])
    assert not np.allclose(old.get_layer("bn").moving_mean.numpy(), old_mean, atol=1e-3)


def test_recompute_bn_must_be_a_bool():
    from zoo.semi import fit

    x = np.zeros((2, 8, 8, 1), np.float32)
    with pytest.raises(InvalidArgumentError, match="recompute_bn"):
        fit("supervised", _net(), (x, np.array([0, 1])), x, recompute_bn="yes")


def test_fit_on_pipelines_recomputes_over_their_batches():
    """tf.data pipelines: the closing pass reads their batches as they come."""
    import tensorflow as tf

    from zoo.semi import fit

    rng = np.random.default_rng(4)
    x, u = (rng.uniform(0, 255, (k, 8, 8, 1)).astype(np.float32) for k in (6, 10))
    y = np.array([0, 1] * 3)
    lab = tf.data.Dataset.from_tensor_slices((x, y)).batch(3)
    unl = tf.data.Dataset.from_tensor_slices(u).batch(4)
    model = fit("supervised", _net(), lab, unl, num_classes=2, epochs=1, seed=1).classifier
    mean, var = _batch_stats(model, [x[:3], x[3:], u[:4], u[4:8], u[8:]])
    np.testing.assert_allclose(model.get_layer("bn").moving_mean.numpy(), mean, rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_allclose(model.get_layer("bn").moving_variance.numpy(), var, rtol=1e-4)
