"""BYOL's momentum network on the engine: an exact copy at start, then changed only by the EMA rule
target_new = m * target + (1 - m) * online (online after its step), BatchNorm statistics included."""

from __future__ import annotations

import numpy as np
import pytest

from zoo.ssl.tasks import get_task


@pytest.fixture
def trainer():
    """A fresh BYOL trainer per test: the step test trains it, the copy test needs it untrained."""
    import keras

    import zoo

    keras.utils.set_random_seed(0)
    encoder = zoo.load("simple_cnn", in_chans=1, input_shape=(32, 32), num_classes=0, pooling=None)
    task = get_task("byol", momentum=0.9, projection=8)
    return task.trainer(task.build(encoder))


def test_target_is_an_exact_copy_after_init(trainer):
    online, target = trainer.online, trainer.target
    assert len(target.variables) == len(online.variables) > 0
    assert any("moving_mean" in v.path for v in target.variables)  # BatchNorm statistics are included
    for t, o in zip(target.variables, online.variables, strict=True):
        assert t is not o and tuple(t.shape) == tuple(o.shape)
        np.testing.assert_array_equal(np.asarray(t), np.asarray(o))
    # clone_model alone would not have copied them: a fresh clone differs
    import keras

    fresh = keras.models.clone_model(online)
    kernels = [(np.asarray(a), np.asarray(b)) for a, b in zip(fresh.variables, online.variables) if "kernel" in a.path]
    assert any(not np.array_equal(a, b) for a, b in kernels)


def test_target_changes_only_by_the_ema_rule_after_an_engine_step(trainer):
    import tensorflow as tf

    from zoo.train.engine import Engine

    assert trainer.ema == ((trainer.target, trainer.online, 0.9),)  # asked of the engine, not done by hand
    rng = np.random.default_rng(0)
    v1 = rng.uniform(0, 255, (4, 32, 32, 1)).astype(np.float32)
    v2 = rng.uniform(0, 255, (4, 32, 32, 1)).astype(np.float32)
    # the target moved away from the online network first, so that the rule's two terms differ
    for t in trainer.target.variables:
        t.assign(np.asarray(t) + rng.normal(0, 0.1, t.shape).astype(np.float32))
    before = [np.asarray(v).copy() for v in trainer.target.variables]
    online_before = [np.asarray(v).copy() for v in trainer.online.variables]
    engine = Engine(trainer, trainer.new_optimizers(1e-2))
    optimized = {id(v) for v in trainer.trainable("main")}
    assert not optimized & {id(v) for v in trainer.target.variables}  # no gradient reaches the target
    row = engine.fit(tf.data.Dataset.from_tensors(((v1, v2), np.zeros((4, 1), np.float32))), epochs=1)[0]
    assert np.isfinite(row["loss"]) and 0 <= row["loss"] <= 8  # two terms of 2 - 2 cos each
    after_online = [np.asarray(v) for v in trainer.online.variables]
    moved = 0
    for t, b, o, ob, var in zip(trainer.target.variables, before, after_online, online_before,
                                trainer.online.variables, strict=True):
        np.testing.assert_allclose(np.asarray(t), 0.9 * b + 0.1 * o, rtol=1e-5, atol=1e-6, err_msg=var.path)
        moved += not np.allclose(o, ob)
    stats = [i for i, v in enumerate(trainer.online.variables) if "moving" in v.path]
    assert stats and all(not np.allclose(after_online[i], online_before[i]) for i in stats)  # BN stats moved too
    assert moved > len(stats)  # and the trained weights
