"""DANN on the engine: the loss equals the hand formula on a batch, the reversal flips exactly the
feature extractor's share of the domain gradient, one engine step trains classification and
segmentation, bad input is a ZooError before any step, the adapted model round-trips .keras."""

from __future__ import annotations

import numpy as np
import pytest

from zoo.errors import DataError, InvalidArgumentError, UnknownNameError

SIZE = 32
LAYERS = ["stage2_relu2", "stage3_relu2"]


def _classifier():
    import keras

    import zoo
    from zoo.domain.discriminator import attach_discriminator

    keras.utils.set_random_seed(0)
    model = zoo.load("simple_cnn", input_shape=(SIZE, SIZE, 1), num_classes=3)
    return model, attach_discriminator(model, LAYERS, width=8)


def _images(seed, n, shape=(SIZE, SIZE, 1)):
    return np.random.default_rng(seed).uniform(0, 255, (n, *shape)).astype(np.float32)


def _batch(n=4):
    import tensorflow as tf

    xs, xt = _images(1, n), _images(2, n)
    ys = np.array([0, 2, 1, 2][:n], np.int32)
    w = np.array([1.0, 0.5, 2.0, 1.0][:n], np.float32)
    return xs, xt, ys, w, ({"source": tf.constant(xs), "target": tf.constant(xt)}, tf.constant(ys), tf.constant(w))


def _bce_logits(z, label):
    """Binary cross-entropy of a logit, numerically stable closed form."""
    return np.maximum(z, 0) - z * label + np.log1p(np.exp(-np.abs(z)))


def test_loss_equals_the_hand_formula():
    from zoo.domain.adversarial import DomainAdversarial

    _, adapted = _classifier()
    xs, xt, ys, w, batch = _batch()
    task = DomainAdversarial(adapted, "classification", domain_weight=0.7)
    out = task.step(batch, training=False)
    probs, logits = (np.asarray(t, np.float64) for t in adapted(np.concatenate([xs, xt]), training=False))
    ce = -np.log(probs[np.arange(4), ys])
    dom = 0.5 * (_bce_logits(logits[:4, 0], 0) + _bce_logits(logits[4:, 0], 1))
    np.testing.assert_allclose(np.asarray(out.losses["main"]), w * ce + 0.7 * dom, rtol=1e-4, atol=1e-6)
    total, count = out.metrics["domain_accuracy"]
    right = (logits[:4, 0] < 0).sum() + (logits[4:, 0] > 0).sum()
    assert float(total) == right and float(count) == 8
    # the engine's reduction (mean over the batch) is the formula's L
    assert float(np.mean(np.asarray(out.losses["main"]))) == pytest.approx(
        np.mean(w * ce) + 0.7 * np.mean(dom), rel=1e-4)


def test_reversal_flips_only_the_feature_extractors_domain_gradient():
    import tensorflow as tf

    from zoo.domain.adversarial import DomainAdversarial
    from zoo.domain.discriminator import reversal_layers

    model, adapted = _classifier()
    *_, batch = _batch()
    task = DomainAdversarial(adapted, "classification")
    grl = reversal_layers(adapted)[0]
    shared = model.get_layer("stage1_conv1").kernel
    disc = adapted.get_layer("domain_conv1").kernel

    def grads(lam):
        grl.set_lambda(lam)
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(task.step(batch, training=False).losses["main"])
        return [g.numpy() for g in tape.gradient(loss, [shared, disc])]

    (s0, d0), (s1, d1), (s3, d3) = grads(0.0), grads(1.0), grads(3.0)
    # the discriminator always gets the true domain gradient, whatever lambda
    np.testing.assert_allclose(d1, d0, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(d3, d0, rtol=1e-5, atol=1e-8)
    # shared features: task gradient - lambda * domain gradient (linear in lambda, reversed)
    assert np.abs(s1 - s0).max() > 1e-6
    np.testing.assert_allclose(s3 - s0, 3.0 * (s1 - s0), rtol=1e-3, atol=1e-6)


def test_one_engine_step_classification_matches_sgd_on_the_formula():
    import keras
    import tensorflow as tf

    from zoo.domain.adversarial import DomainAdversarial, DomainBatches, ReversalSchedule
    from zoo.train.engine import Engine

    _, adapted = _classifier()
    xs, xt, ys, *_ = _batch()
    data = DomainBatches(xs, ys, xt, batch_size=4, seed=0)
    batch = next(iter(data.dataset(0)))
    task = DomainAdversarial(adapted, "classification")
    start = [v.numpy().copy() for v in adapted.variables]
    with tf.GradientTape() as tape:  # lambda starts at 0: the schedule's first value
        loss = tf.reduce_mean(task.step(batch, training=True).losses["main"])
    grads = tape.gradient(loss, adapted.trainable_variables)
    expected = {id(v): v.numpy() - 0.01 * g.numpy() for v, g in zip(adapted.trainable_variables, grads)}
    for v, value in zip(adapted.variables, start):
        v.assign(value)
    engine = Engine(task, keras.optimizers.SGD(0.01), hooks=[ReversalSchedule(4)])
    row = engine.fit(data, epochs=1)[0]
    assert {"loss", "accuracy", "task_loss", "domain_loss", "domain_accuracy"} <= set(row)
    assert row["loss"] == pytest.approx(float(loss), rel=1e-5)
    for v in adapted.trainable_variables:
        np.testing.assert_allclose(v.numpy(), expected[id(v)], rtol=1e-4, atol=1e-6)
    assert adapted.get_layer("domain_reversal").lambda_ == pytest.approx(2 / (1 + np.exp(-10 / 4)) - 1, rel=1e-6)


def test_one_engine_step_segmentation_3_classes_on_a_unet(tmp_path):
    import keras

    import zoo
    from zoo.domain.adversarial import fit_adversarial
    from zoo.domain.discriminator import task_model
    from zoo.saving import load_model

    keras.utils.set_random_seed(0)
    unet = zoo.load("unet", input_shape=(SIZE, SIZE, 1), num_classes=3, depth=2, base_filters=4)
    xs, xt = _images(3, 4), _images(4, 3)  # fewer target images: cycled to the batch
    masks = (xs[..., 0] > 85).astype(np.int32) + (xs[..., 0] > 170)
    before = [w.copy() for w in unet.get_weights()]
    adapted, history = fit_adversarial(unet, ["enc3_2_relu", "dec1_2_relu"], xs, masks, xt,
                                       task="segmentation", epochs=1, batch_size=4, width=4)
    assert {"dice", "domain_loss", "domain_accuracy"} <= set(history[0])
    assert any(not np.array_equal(a, b) for a, b in zip(before, unet.get_weights()))
    # the adapted model (task + discriminator) round-trips in safe mode, lambda included
    path = tmp_path / "adapted.keras"
    adapted.save(path)
    back = load_model(path)
    x = _images(5, 2)
    for mine, theirs in zip(adapted(x, training=False), back(x, training=False)):
        np.testing.assert_allclose(np.asarray(theirs), np.asarray(mine), rtol=1e-5, atol=1e-6)
    assert back.get_layer("domain_reversal").lambda_ == pytest.approx(
        adapted.get_layer("domain_reversal").lambda_)
    seg = task_model(back)
    assert tuple(seg.outputs[0].shape[1:]) == (SIZE, SIZE, 3)


def test_bad_input_is_refused_before_training():
    from zoo.domain.adversarial import (
        DomainAdversarial,
        DomainBatches,
        fit_adversarial,
        split_by_domain,
    )

    model, adapted = _classifier()
    before = [w.copy() for w in model.get_weights()]
    xs, ys = _images(1, 4), np.array([0, 1, 2, 0])
    with pytest.raises(DataError, match="exactly two domains"):  # only one domain's data
        split_by_domain(xs, ys, ["scanner_a"] * 4, "scanner_a")
    xa, ya, xb = split_by_domain(xs, ys, ["a", "b", "a", "b"], "a")
    assert len(xa) == len(ya) == len(xb) == 2
    with pytest.raises(DataError, match="target domain holds no images"):
        fit_adversarial(model, LAYERS, xs, ys, xs[:0])
    with pytest.raises(DataError, match=r"shape \(32, 32, 1\).*\(16, 16, 1\)"):
        DomainBatches(xs, ys, _images(2, 4, (16, 16, 1)), 2)
    with pytest.raises(UnknownNameError, match="Did you mean 'stage3_relu2'"):
        fit_adversarial(model, ["stage3_relu"], xs, ys, xs)
    with pytest.raises(UnknownNameError, match="Did you mean 'segmentation'"):
        fit_adversarial(model, LAYERS, xs, ys, xs, task="segmentaton")
    with pytest.raises(DataError, match="model has 3 outputs"):  # labels the classifier cannot take
        fit_adversarial(model, LAYERS, xs, np.array([0, 1, 5, 0]), xs)
    with pytest.raises(InvalidArgumentError, match="adapted model"):
        DomainAdversarial(model)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    # a tf.data stream of plain (x, y) batches is refused on the first batch by the task
    with pytest.raises(DataError, match="source"):
        DomainAdversarial(adapted).check(xs, ys)
