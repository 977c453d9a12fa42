"""FixMatch's distribution alignment (align=True, ReMixMatch): the aligned probabilities against
numpy, the labelled prior and the running mean of the weak predictions in a step, and the pseudo-
labels (mask and arg-max) taken from the aligned probabilities."""

from __future__ import annotations

import numpy as np
import pytest

from zoo.errors import InvalidArgumentError


def _net():
    import keras

    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Rescaling(1 / 127.5, -1.0),
                             keras.layers.Flatten(), keras.layers.Dense(2, activation="softmax")])


def test_alignment_against_numpy_and_identity_when_predictions_follow_the_prior():
    import tensorflow as tf

    from zoo.semi.consistency import align_distribution

    p = np.random.default_rng(0).dirichlet(np.ones(3), 5).astype(np.float32)
    prior, running = np.array([0.5, 0.3, 0.2], np.float32), np.array([0.2, 0.2, 0.6], np.float32)
    want = p * prior / running
    want /= want.sum(1, keepdims=True)
    got = align_distribution(tf.constant(p), tf.constant(prior), tf.constant(running)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5)
    same = align_distribution(tf.constant(p), tf.constant(prior), tf.constant(prior)).numpy()
    np.testing.assert_allclose(same, p, rtol=1e-5)


def test_a_step_updates_the_running_mean_and_labels_from_the_aligned_view():
    import tensorflow as tf

    from zoo.semi import augment
    from zoo.semi.data import SemiStream
    from zoo.semi.methods import METHODS

    rng = np.random.default_rng(1)
    x, u = (rng.uniform(0, 255, (k, 8, 8, 1)).astype(np.float32) for k in (4, 6))
    task = METHODS["fixmatch"].task(_net(), num_classes=2, tau=0.0, align=True)
    task.prepare(SemiStream((x, np.array([0, 0, 0, 1])), u, batch_size=4,
                            unlabelled_batch_size=6), epochs=1)  # one step per epoch
    np.testing.assert_allclose(task.prior.numpy(), [0.75, 0.25])
    assert task.align_decay == 0.0  # min(128, one epoch = 1 step)
    xu = tf.constant(u)
    weak = task.classifier(augment.weak(xu, task.step_seed(1), False)).numpy()
    strong = task.classifier(augment.strong(xu, task.step_seed(2), False)).numpy()
    loss, _ = task.unlabelled_loss({"unlabelled": xu}, training=True)
    np.testing.assert_allclose(task.running.numpy(), weak.mean(0), rtol=1e-5)
    aligned = weak * np.array([0.75, 0.25]) / weak.mean(0)
    labels = aligned.argmax(1)
    assert (labels != weak.argmax(1)).any()  # the alignment changes a pseudo-label here
    want = -np.log(strong[np.arange(6), labels]).mean()  # tau 0: every image masked in
    assert float(loss) == pytest.approx(want, rel=1e-4)


def test_align_must_be_a_bool():
    from zoo.semi.methods import METHODS

    with pytest.raises(InvalidArgumentError, match="align="):
        METHODS["fixmatch"].task(_net(), num_classes=2, align=1)
    assert METHODS["fixmatch"].task(_net(), num_classes=2).align is False
