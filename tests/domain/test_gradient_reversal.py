"""The gradient-reversal layer: the identity forward, exactly -lambda times the incoming gradient
backward (eager, compiled, after a lambda change without re-tracing), DANN's schedule, .keras."""

from __future__ import annotations

import math

import numpy as np
import pytest

from zoo.errors import InvalidArgumentError


def _case(seed=0, shape=(3, 5, 4, 2)):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape).astype(np.float32), rng.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("lam", [0.0, 0.37, 1.0, 2.5])
def test_forward_is_identity_and_gradient_is_minus_lambda_times_upstream(lam):
    import tensorflow as tf

    from zoo.layers.gradient_reversal import GradientReversal

    x, upstream = _case()
    layer = GradientReversal(lam)
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = layer(xt)
        loss = tf.reduce_sum(y * upstream)  # d loss / d y == upstream
    np.testing.assert_array_equal(y.numpy(), x)
    grad = tape.gradient(loss, xt).numpy()
    np.testing.assert_array_equal(grad, -np.float32(lam) * upstream)


def test_lambda_change_reaches_a_compiled_function_without_retracing():
    import tensorflow as tf

    from zoo.layers.gradient_reversal import GradientReversal

    x, upstream = _case(1, (4, 6))
    layer = GradientReversal(0.0)
    traces = []

    @tf.function
    def grad(v):
        traces.append(1)
        with tf.GradientTape() as tape:
            tape.watch(v)
            loss = tf.reduce_sum(layer(v) * upstream)
        return tape.gradient(loss, v)

    for lam in (0.0, 0.25, 0.9):
        layer.set_lambda(lam)
        np.testing.assert_array_equal(grad(tf.constant(x)).numpy(), -np.float32(lam) * upstream)
    assert len(traces) == 1
    assert layer.lambda_ == pytest.approx(0.9)
    assert not layer.trainable_variables  # lambda is set, never learned


def test_dann_schedule_closed_form():
    from zoo.layers.gradient_reversal import dann_lambda

    for p in (0.0, 0.1, 0.5, 1.0):
        assert dann_lambda(p) == pytest.approx(2.0 / (1.0 + math.exp(-10.0 * p)) - 1.0, abs=1e-15)
    assert dann_lambda(0.0) == 0.0 and dann_lambda(1.0) > 0.9999
    with pytest.raises(InvalidArgumentError, match="progress"):
        dann_lambda(1.5)


def test_bad_lambda_is_refused():
    from zoo.layers.gradient_reversal import GradientReversal

    with pytest.raises(InvalidArgumentError, match="lambda_"):
        GradientReversal(-1.0)
    with pytest.raises(InvalidArgumentError, match="lambda"):
        GradientReversal(1.0).set_lambda(float("nan"))


def test_keras_round_trip_in_safe_mode_keeps_the_current_lambda(tmp_path):
    import keras
    import tensorflow as tf

    from zoo.layers.gradient_reversal import GradientReversal
    from zoo.saving import load_model

    inputs = keras.Input((4,))
    grl = GradientReversal(0.1, name="grl")
    model = keras.Model(inputs, keras.layers.Dense(2, name="fc")(grl(inputs)))
    grl.set_lambda(0.6)
    path = tmp_path / "m.keras"
    model.save(path)
    back = load_model(path)  # safe mode
    assert isinstance(back.get_layer("grl"), GradientReversal)
    assert back.get_layer("grl").lambda_ == pytest.approx(0.6)
    x = tf.constant(_case(2, (3, 4))[0])
    np.testing.assert_allclose(back(x).numpy(), model(x).numpy(), rtol=1e-6)
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = back.get_layer("grl")(x)
    np.testing.assert_allclose(tape.gradient(out, x).numpy(), -0.6 * np.ones((3, 4)), rtol=1e-6)
