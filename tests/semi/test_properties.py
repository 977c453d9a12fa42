"""Unit properties of the consistency and pseudo-label methods, each against numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest

from zoo.semi import consistency as C
from zoo.semi import pseudo_labels as P


def _tiny(shape=(8, 8, 1), classes=3, bn=True, seed=0):
    import keras

    keras.utils.set_random_seed(seed)
    layers = [keras.Input(shape), keras.layers.Conv2D(4, 3, padding="same")]
    if bn:
        layers.append(keras.layers.BatchNormalization(momentum=0.5))
    layers += [keras.layers.ReLU(), keras.layers.GlobalAveragePooling2D(),
               keras.layers.Dense(classes, activation="softmax")]
    return keras.Sequential(layers)


def test_consistency_loss_zero_and_gradient_sign():
    import tensorflow as tf

    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(4), 5).astype(np.float32)
    t = rng.dirichlet(np.ones(4), 5).astype(np.float32)
    assert float(C.consistency_loss(tf.constant(p), tf.constant(p))) == 0.0
    pv, tv = tf.Variable(p), tf.Variable(t)
    with tf.GradientTape() as tape:
        loss = C.consistency_loss(pv, tv)
    gp, gt = tape.gradient(loss, [pv, tv])
    np.testing.assert_allclose(float(loss), np.mean((p - t) ** 2), rtol=1e-6)
    np.testing.assert_allclose(gp.numpy(), 2 * (p - t) / p.size, rtol=1e-5)  # towards target
    assert np.all(np.sign(gp.numpy()) == np.sign(p - t)) and gt is None  # no gradient to target


def test_sigmoid_ramp_formula():
    for step in (0, 10, 50, 100, 150):
        want = 1.0 if step >= 100 else math.exp(-5 * (1 - step / 100) ** 2)
        assert float(C.sigmoid_ramp(step, 100)) == pytest.approx(want, rel=1e-6)
    assert float(C.sigmoid_ramp(3, 0)) == 1.0


def test_temporal_ensemble_bias_corrected_per_index():
    import tensorflow as tf

    from zoo.semi import augment
    from zoo.semi.data import SemiStream

    rng = np.random.default_rng(1)
    u = rng.uniform(0, 255, (6, 8, 8, 1)).astype(np.float32)
    model = _tiny(bn=False)
    task = C.TemporalEnsembling(model, alpha=0.6, num_classes=3)
    task.prepare(SemiStream((u[:2], np.array([0, 1])), u, batch_size=2), epochs=1)
    index = tf.constant([4, 1, 3], tf.int64)
    inputs = {"unlabelled": tf.constant(u[[4, 1, 3]]), "index": index}
    z = np.zeros((6, 3), np.float32)
    for t in (1, 2, 3):
        task.iterations.assign(t)
        p = model(augment.weak(inputs["unlabelled"], task.step_seed(1))).numpy()
        loss, _ = task.unlabelled_loss(inputs, training=True)
        want = 0.0 if t == 1 else np.mean((p - z[[4, 1, 3]] / (1 - 0.6 ** (t - 1))) ** 2)
        assert float(loss) == pytest.approx(want, rel=1e-5, abs=1e-9)
        z[[4, 1, 3]] = 0.6 * z[[4, 1, 3]] + 0.4 * p
        np.testing.assert_allclose(task.z.numpy(), z, rtol=1e-6, atol=1e-7)
        assert task.count.numpy().tolist() == [0, t, 0, t, t, 0]
    # bias correction: a constant prediction is its own corrected ensemble, whatever t
    const = np.full((2, 3), 0.25, np.float32)
    for t in (1, 2, 7):
        zsum = const * (1 - 0.6 ** t)  # the recurrence's closed form from Z = 0
        target, seen = C.ensemble_target(tf.constant(zsum), tf.constant([t, t]), 0.6)
        np.testing.assert_allclose(target.numpy(), const, rtol=1e-6)
        assert seen.numpy().tolist() == [1.0, 1.0]


def test_mean_teacher_is_ema_of_every_variable_after_a_step():
    import keras

    from zoo.semi.data import SemiStream
    from zoo.train.engine import Engine

    rng = np.random.default_rng(2)
    x = rng.uniform(0, 255, (4, 8, 8, 1)).astype(np.float32)
    u = rng.uniform(0, 255, (4, 8, 8, 1)).astype(np.float32)
    student = _tiny()
    task = C.MeanTeacher(student, decay=0.9, num_classes=3, ramp_up=0)
    # a teacher different from the student, so that the rule is visible in every variable
    task.teacher.set_weights([w + 0.5 for w in student.get_weights()])
    before = [v.numpy().copy() for v in task.teacher.variables]
    stream = SemiStream((x, np.array([0, 1, 2, 0])), u, batch_size=4)
    Engine(task, keras.optimizers.SGD(0.1)).fit(stream, epochs=1)  # one step
    names = [v.path for v in student.variables]
    assert any("moving_mean" in n for n in names)
    moved = [n for n, v0, v in zip(names, _tiny().get_weights(), student.get_weights(),
                                   strict=True) if not np.allclose(v0, v)]
    assert any("moving" in n for n in moved)  # the BN statistics did move in the step
    for name, t0, t1, s1 in zip(names, before, task.teacher.variables, student.variables,
                                strict=True):
        np.testing.assert_allclose(t1.numpy(), 0.9 * t0 + 0.1 * s1.numpy(), rtol=1e-5,
                                   atol=1e-6, err_msg=name)


def test_mean_teacher_targets_use_batch_statistics_and_keep_the_teachers():
    """The teacher's targets normalise by the batch's own moments (numpy below), whatever its
    moving statistics; those stay as they were (the EMA rule owns them). A teacher with lagging
    statistics answered one class in inference mode and the student collapsed onto it."""
    import tensorflow as tf

    from zoo.semi import augment

    rng = np.random.default_rng(5)
    u = rng.uniform(0, 255, (6, 8, 8, 1)).astype(np.float32)
    task = C.MeanTeacher(_tiny(), decay=0.9, num_classes=3, ramp_up=0)
    teacher = task.teacher
    bn = teacher.layers[1]
    bn.moving_mean.assign(np.full(4, 40.0, np.float32))  # statistics far behind the weights
    bn.moving_variance.assign(np.full(4, 1e-2, np.float32))
    stale = [v.numpy().copy() for v in teacher.non_trainable_variables]
    task.iterations.assign(3)
    xt = augment.weak(tf.constant(u), task.step_seed(2))
    conv = teacher.layers[0](xt).numpy()
    mean, var = conv.mean((0, 1, 2)), conv.var((0, 1, 2))
    gamma, beta = bn.gamma.numpy(), bn.beta.numpy()
    h = np.maximum(gamma * (conv - mean) / np.sqrt(var + bn.epsilon) + beta, 0).mean((1, 2))
    kernel, bias = (w.numpy() for w in teacher.layers[-1].weights)
    logits = h @ kernel + bias
    target = np.exp(logits - logits.max(1, keepdims=True))
    target /= target.sum(1, keepdims=True)
    p = task.classifier(augment.weak(tf.constant(u), task.step_seed(1)), training=True).numpy()
    loss, _ = task.unlabelled_loss({"unlabelled": tf.constant(u)}, training=True)
    assert float(loss) == pytest.approx(np.mean((p - target) ** 2), rel=1e-4)
    inference = teacher(xt, training=False).numpy()  # what the stale statistics would give
    assert np.mean((p - inference) ** 2) != pytest.approx(float(loss), rel=1e-2)
    for before, after in zip(stale, teacher.non_trainable_variables, strict=True):
        np.testing.assert_array_equal(after.numpy(), before)


def test_default_averages_are_the_papers_horizons_scaled_to_the_run():
    from zoo.semi.data import SemiStream

    # the papers' own runs give back their constants; the floor and the explicit values win
    assert C.scaled_horizon(100, 150_000, 150_000, floor=1) == pytest.approx(0.99)
    assert C.scaled_horizon(2.5, 300, 300, floor=1) == pytest.approx(0.6)
    assert C.scaled_horizon(100, 150_000, 120, floor=5) == pytest.approx(1 - 1 / 5)
    assert C.scaled_horizon(2.5, 300, 24, floor=1) == 0.0
    u = np.zeros((20, 8, 8, 1), np.float32)
    stream = SemiStream((u[:2], np.array([0, 1])), u, batch_size=2, unlabelled_batch_size=4)
    mt = C.MeanTeacher(_tiny(bn=False), num_classes=3)
    assert mt.decay == 0.99  # before the run is known: the paper's value
    mt.prepare(stream, epochs=24)  # 5 steps per epoch, 120 steps: one epoch = 5 steps
    assert mt.decay == pytest.approx(0.8) and mt.ema[0][2] == mt.decay
    fixed = C.MeanTeacher(_tiny(bn=False), decay=0.95, num_classes=3)
    fixed.prepare(stream, epochs=24)
    assert fixed.ema[0][2] == 0.95
    te = C.TemporalEnsembling(_tiny(bn=False), num_classes=3)
    te.prepare(stream, epochs=600)  # 5 epochs of a 600-epoch run
    assert te.alpha == pytest.approx(0.8)


def test_fixmatch_masks_exactly_below_tau():
    import tensorflow as tf

    weak = np.array([[0.95, 0.05], [0.94, 0.06], [0.02, 0.98], [0.5, 0.5]], np.float32)
    strong = np.array([[0.7, 0.3], [0.6, 0.4], [0.3, 0.7], [0.1, 0.9]], np.float32)
    mask = C.confidence_mask(tf.constant(weak), 0.95).numpy()
    np.testing.assert_array_equal(mask, (weak.max(1) >= 0.95).astype(np.float32))
    assert mask.tolist() == [1.0, 0.0, 1.0, 0.0]
    sv = tf.Variable(strong)
    with tf.GradientTape() as tape:
        loss, _ = C.fixmatch_loss(tf.constant(weak), sv, 0.95)
    want = np.mean(-np.log(strong[np.arange(4), weak.argmax(1)]) * mask)
    assert float(loss) == pytest.approx(want, rel=1e-5)
    grad = tape.gradient(loss, sv).numpy()
    assert np.all(grad[mask == 0] == 0) and np.all(np.abs(grad[mask == 1]).sum(1) > 0)


def test_curriculum_schedule_and_admission_exact():
    assert P.curriculum_fractions(0.2) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert P.curriculum_fractions(0.3) == [0.0, 0.3, 0.6, 0.9, 1.0]
    assert [P.stage_of(e, 2, 6) for e in range(14)] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 5, 5]
    rng = np.random.default_rng(3)
    conf = rng.permutation(50) / 50 + 0.01  # distinct confidences
    pred = rng.integers(0, 3, 50)
    for fraction in (0.2, 0.4, 0.6, 0.8, 1.0):
        k = round(fraction * 50)
        threshold = np.sort(conf)[-k]  # the independent rule: the top-k percentile
        np.testing.assert_array_equal(P.admit(conf, pred, fraction, 3), conf >= threshold)
        balanced = P.admit(conf, pred, fraction, 3, balance=True)
        quota = round(k / 3)
        for c in range(3):
            mine = np.flatnonzero(pred == c)
            top = mine[np.argsort(-conf[mine])][:quota]
            assert set(np.flatnonzero(balanced & (pred == c))) == set(top)
    assert not P.admit(conf, pred, 0.0, 3).any()


def test_curriculum_stages_in_training():
    from zoo.semi.api import fit

    rng = np.random.default_rng(4)
    x = rng.uniform(0, 255, (6, 8, 8, 1)).astype(np.float32)
    u = rng.uniform(0, 255, (10, 8, 8, 1)).astype(np.float32)
    result = fit("pseudo_label", _tiny(), (x, np.arange(6) % 3), u, epochs=3, batch_size=3,
                 unlabelled_batch_size=5, step=0.5, stage_epochs=1, reinit=False, balance=False)
    assert [(h["epoch"], h["fraction"], h["admitted"]) for h in result.task.history] == [
        (1, 0.5, 5), (2, 1.0, 10)]
    assert result.task.admitted.numpy().sum() == 10
    assert result.history[1]["admitted"] == pytest.approx(0.5)


def test_fixmatch_average_spans_the_papers_fraction_of_the_run():
    """The EMA horizon is the paper's 1,000 of 2^20 steps as a fraction of this run (no epoch
    floor): 0 (the last weights) for a short run, 0.999 for the paper's length, 1 - 1/h between."""
    from zoo.semi.methods import METHODS

    task = METHODS["fixmatch"].task(_tiny(), num_classes=3)

    class Stream:
        def __init__(self, steps):
            self.steps = steps

        def __len__(self):
            return self.steps

    for steps, epochs, want in ((38, 4, 0.0), (2**18, 4, 0.999), (2**20, 8, 1 - 1 / 8000)):
        task.prepare(Stream(steps), epochs)
        assert task.ema_decay == pytest.approx(want, abs=1e-12)
        assert task.ema[0][2] == task.ema_decay
