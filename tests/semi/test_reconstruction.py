"""The joint loss lambda_c * L_c + lambda_r * L_r (zoo.semi.reconstruction) against a hand computation;
weight 0 equals the supervised step exactly for the reconstruction hybrids; .keras round trips; errors."""

from __future__ import annotations

import numpy as np
import pytest

from zoo.errors import InvalidArgumentError

WIDTHS = (4, 4, 4, 4, 4)


def tiny_cnn(seed=0, num_classes=3):
    import keras

    from zoo.models.factory import load

    keras.utils.set_random_seed(seed)
    return load("simple_cnn", num_classes=num_classes, in_chans=1, input_shape=(32, 32),
                widths=WIDTHS)


def batch(seed=0, n=4, m=6):
    rng = np.random.default_rng(seed)
    xl = rng.uniform(0, 255, (n, 32, 32, 1)).astype(np.float32)
    xu = rng.uniform(0, 255, (m, 32, 32, 1)).astype(np.float32)
    return {"labelled": xl, "unlabelled": xu}, (np.arange(n) % 3).astype(np.int32), np.ones(
        n, np.float32)


@pytest.mark.parametrize("normalise", [True, False])
def test_joint_loss_is_lambda_c_ce_plus_lambda_r_reconstruction(normalise):
    """normalise=True divides the squared error by the batch's per-pixel variance, averaged."""
    from zoo.semi.methods import METHODS

    task = METHODS["reconstruction"].task(tiny_cnn(), num_classes=3, unlabelled_weight=2.0,
                                          lambda_c=0.5, normalise=normalise)
    x, y, w = batch()
    got = float(np.mean(np.asarray(task.step((x, y, w), training=True).losses["main"])))

    def parts(images):
        probs, feats, target = (np.asarray(t, np.float64) for t in task.joint(images,
                                                                             training=True))
        rec = np.asarray(task.decoder(feats, training=True), np.float64)
        return probs, ((target - rec) ** 2).reshape(len(images), -1).mean(1), target

    probs, rec_l, target = parts(x["labelled"])
    _, rec_u, target_u = parts(x["unlabelled"])
    np.testing.assert_allclose(target, x["labelled"] / 127.5 - 1.0, atol=1e-6)  # preprocess out
    l_c = -np.log(probs[np.arange(4), y])
    scale = np.concatenate([target, target_u]).reshape(10, -1).var(0).mean() if normalise else 1
    want = 0.5 * l_c.mean() + 2.0 * np.concatenate([rec_l, rec_u]).mean() / scale
    assert got == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("method", ["reconstruction", "hybridnet", "ladder"])
def test_weight_zero_is_the_supervised_step_exactly(method):
    """Same batch, loss, gradients, BatchNorm statistics: every weight equal after a step."""
    import keras
    import tensorflow as tf

    from zoo.semi.methods import METHODS

    def one_step(name):
        model = tiny_cnn(1)
        task = METHODS[name].task(model, num_classes=3, unlabelled_weight=0.0)
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(task.step(batch(1), training=True).losses["main"])
        variables = model.trainable_variables
        keras.optimizers.SGD(0.1).apply(tape.gradient(loss, variables), variables)
        return float(loss), model.get_weights()

    loss, weights = one_step(method)
    base_loss, base = one_step("supervised")
    assert loss == base_loss
    for a, b in zip(weights, base, strict=True):
        np.testing.assert_array_equal(a, b)


def test_decoder_and_classifier_round_trip_keras(tmp_path):
    from zoo.saving import load_model
    from zoo.semi.methods import METHODS

    task = METHODS["reconstruction"].task(tiny_cnn(), num_classes=3, unlabelled_weight=1.0)
    x = batch()[0]["labelled"]
    feats = task.joint(x)[1]
    for model, inputs in ((task.decoder, feats), (task.classifier, x)):
        path = tmp_path / f"{model.name}.keras"
        model.save(path)
        np.testing.assert_allclose(np.asarray(load_model(path)(inputs)), np.asarray(model(inputs)),
                                   atol=1e-6)


def test_bad_lambdas_and_encoders_are_refused():
    import keras

    from zoo.semi.methods import METHODS

    spec = METHODS["reconstruction"]
    with pytest.raises(InvalidArgumentError, match="lambda_c=-1"):
        spec.task(tiny_cnn(), num_classes=3, lambda_c=-1.0)
    with pytest.raises(InvalidArgumentError, match="normalise=1"):
        spec.task(tiny_cnn(), num_classes=3, normalise=1)
    with pytest.raises(InvalidArgumentError, match="unlabelled_weight=nan"):
        spec.task(tiny_cnn(), num_classes=3, unlabelled_weight=float("nan"))
    mlp = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                            keras.layers.Dense(3, activation="softmax")])
    with pytest.raises(InvalidArgumentError, match="no spatial feature map"):
        spec.task(mlp, num_classes=3)
    odd = keras.Sequential([keras.Input((12, 12, 1)), keras.layers.Conv2D(4, 5),
                            keras.layers.GlobalAveragePooling2D(),
                            keras.layers.Dense(3, activation="softmax")])
    with pytest.raises(InvalidArgumentError, match="power of two"):
        spec.task(odd, num_classes=3)


@pytest.mark.parametrize("code", ["head", "features"])
def test_decoder_reads_the_code_it_is_asked_for(code):
    """code='head' (default): the decoder reads the vector the class scores are a softmax of
    (the last Dense layer's input: probs == softmax(code @ W + b)), so reconstruction shapes the
    classifier's own features; code='features': the last spatial feature map."""
    from zoo.semi.methods import METHODS

    model = tiny_cnn(2)
    task = METHODS["reconstruction"].task(model, num_classes=3, unlabelled_weight=1.0, code=code)
    x = batch(2)[0]["labelled"]
    probs, source, _ = (np.asarray(t, np.float64) for t in task.joint(x, training=False))
    assert task.decoder(source).shape == (4, 32, 32, 1)
    if code == "features":
        assert source.ndim == 4
        return
    kernel, bias = (np.asarray(w, np.float64) for w in model.layers[-1].get_weights())
    logits = source @ kernel + bias
    want = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(probs, want / want.sum(1, keepdims=True), rtol=1e-4, atol=1e-6)


def test_unknown_code_and_headless_networks_are_refused():
    import keras

    from zoo.semi.methods import METHODS

    with pytest.raises(InvalidArgumentError, match="code='pixels'"):
        METHODS["reconstruction"].task(tiny_cnn(), num_classes=3, code="pixels")
    conv_head = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(3, 1),
                                  keras.layers.GlobalAveragePooling2D(),
                                  keras.layers.Softmax()])
    with pytest.raises(InvalidArgumentError, match="does not end in a Dense layer"):
        METHODS["reconstruction"].task(conv_head, num_classes=3, code="head")
