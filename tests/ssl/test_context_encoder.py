"""The context encoder's two-optimizer step on the engine: the generator moves by its optimizer on
the joint loss, the discriminator by its own on the real/fake loss, and nothing else moves."""

from __future__ import annotations

import numpy as np
import pytest

from zoo.ssl.tasks import get_task

G_LR, D_LR = 0.05, 0.02  # different rates: an update by the wrong optimizer would show


def _trainer():
    import keras

    import zoo

    keras.utils.set_random_seed(0)
    encoder = zoo.load("simple_cnn", in_chans=1, input_shape=(32, 32), num_classes=0, pooling=None)
    task = get_task("inpainting", adversarial=True)
    return task, task.trainer(task.build(encoder))


def test_each_network_moves_by_its_own_optimizer_and_nothing_else():
    import keras
    import tensorflow as tf

    from zoo.data.synthetic import make_phantoms
    from zoo.ssl.tasks import Data
    from zoo.ssl.trainers import ContextEncoderGAN
    from zoo.train.engine import Engine

    task, trainer = _trainer()
    assert isinstance(trainer, ContextEncoderGAN) and trainer.optimizers == ("generator", "discriminator")
    assert trainer.adv_weight == 0.001 and trainer.reconstruction.weight == 0.999
    x, y = task.epoch(Data(make_phantoms(4, size=32, seed=1).images), np.random.default_rng(0))
    batch = (tf.constant(x), tf.constant(y), tf.ones([4]))
    g, d = trainer.generator, trainer.discriminator
    start = [v.numpy().copy() for v in g.variables + d.variables]

    # the expected update: each loss's gradient, by the two learning rates, from the same forward pass
    with tf.GradientTape(persistent=True) as tape:
        losses = {k: tf.reduce_mean(v) for k, v in trainer.step(batch, training=True).losses.items()}
    grads = {n: tape.gradient(losses[n], trainer.trainable(n)) for n in trainer.optimizers}
    after_forward = [v.numpy().copy() for v in g.variables + d.variables]  # BatchNorm statistics moved
    for v, value in zip(g.variables + d.variables, start, strict=True):
        v.assign(value)
    lr = {"generator": G_LR, "discriminator": D_LR}
    expected = {id(v): v.numpy() - lr[n] * gr.numpy()
                for n in trainer.optimizers for v, gr in zip(trainer.trainable(n), grads[n], strict=True)}

    optimizers = {"generator": keras.optimizers.SGD(G_LR), "discriminator": keras.optimizers.SGD(D_LR)}
    engine = Engine(trainer, optimizers)
    row = engine.fit(tf.data.Dataset.from_tensors((x, y)), epochs=1)[0]
    assert {"generator_loss", "discriminator_loss", "reconstruction"} <= set(row)
    assert row["generator_loss"] == pytest.approx(float(losses["generator"]), rel=1e-5)
    assert row["discriminator_loss"] == pytest.approx(float(losses["discriminator"]), rel=1e-5)
    assert [int(o.iterations.numpy()) for o in optimizers.values()] == [1, 1]

    moved = {"generator": 0, "discriminator": 0}
    for v, v0, v_fwd in zip(g.variables + d.variables, start, after_forward, strict=True):
        if id(v) in expected:  # a trainable variable: exactly its own optimizer's step
            np.testing.assert_allclose(v.numpy(), expected[id(v)], rtol=1e-4, atol=1e-6, err_msg=v.path)
            moved["generator" if any(v is w for w in g.variables) else "discriminator"] += \
                not np.allclose(v.numpy(), v0)
        else:  # nothing else moves but what the forward pass itself updates (BatchNorm statistics)
            np.testing.assert_allclose(v.numpy(), v_fwd, rtol=1e-5, atol=1e-6, err_msg=v.path)
    assert moved["generator"] > 0 and moved["discriminator"] > 0  # both networks trained
    assert {id(v) for v in g.trainable_variables}.isdisjoint(id(v) for v in d.trainable_variables)
