"""HybridNet (zoo.semi.hybridnet): the stability loss (zero for identical predictions, the numpy sum of
squares otherwise), branch cooperation (the image reconstructed by the sum of both branches), the loss
by hand without noise (stability between two weak augmentations), and bad options."""

from __future__ import annotations

import numpy as np
import pytest
from test_reconstruction import batch, tiny_cnn

from zoo.errors import InvalidArgumentError


def test_stability_loss_zero_for_identical_predictions_and_sum_of_squares_otherwise():
    from zoo.semi.hybridnet import stability_loss

    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(4), 5).astype(np.float32)
    q = rng.dirichlet(np.ones(4), 5).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(stability_loss(p, p)), np.zeros(5))
    np.testing.assert_allclose(np.asarray(stability_loss(p, q)), ((p - q) ** 2).sum(1), rtol=1e-6)


def test_loss_without_noise_is_ce_plus_summed_branch_reconstruction_and_view_stability():
    """noise=0: the two copies are the image's two weak augmentations (zoo.semi.augment), S the
    sum of squares of their predictions' difference, and R the error of
    D_c(E_c(v1)) + D_u(E_u(v1)) against the first view as the network sees it."""
    from zoo.semi import augment
    from zoo.semi.methods import METHODS

    task = METHODS["hybridnet"].task(tiny_cnn(), num_classes=3, unlabelled_weight=0.5,
                                     lambda_c=2.0, lambda_rec=3.0, lambda_stab=7.0, noise=0.0)
    assert task.encoder_u.get_weights()[0].shape == task.joint.get_weights()[0].shape
    assert not np.array_equal(task.encoder_u.get_weights()[0], task.joint.get_weights()[0])
    x, y, w = batch(3)
    out = task.step((x, y, w), training=True)
    got = float(np.mean(np.asarray(out.losses["main"])))
    import tensorflow as tf

    both = tf.constant(np.concatenate([x["labelled"], x["unlabelled"]]), tf.float32)
    v1 = np.asarray(augment.weak(both, task.step_seed(3)))  # the step's seeds (its counter)
    v2 = np.asarray(augment.weak(both, task.step_seed(4)))
    assert not np.array_equal(v1, v2)
    p1, h_c = task.joint(v1, training=True)
    p2 = np.asarray(task.classifier(v2, training=True), np.float64)
    stab = ((np.asarray(p1, np.float64) - p2) ** 2).sum(1)
    assert float(out.metrics["stability"][0]) == pytest.approx(stab.sum(), rel=1e-4)
    x_hat = (np.asarray(task.decoder_c(h_c, training=True), np.float64)
             + np.asarray(task.decoder_u(task.encoder_u(v1, training=True), training=True)))
    rec = ((v1 / 127.5 - 1.0 - x_hat) ** 2).reshape(len(v1), -1).mean(1)
    probs = np.asarray(task.joint(x["labelled"], training=True)[0], np.float64)
    ce = -np.log(probs[np.arange(len(y)), y])
    want = 2.0 * ce.mean() + 0.5 * (3.0 * rec.mean() + 7.0 * stab.mean())
    assert got == pytest.approx(want, rel=1e-4)


def test_noise_makes_the_two_copies_differ():
    from zoo.semi.methods import METHODS

    task = METHODS["hybridnet"].task(tiny_cnn(), num_classes=3, noise=0.5)
    out = task.step(batch(4), training=True)
    assert float(out.metrics["stability"][0]) > 0


@pytest.mark.parametrize("option", [{"lambda_stab": -1.0}, {"lambda_rec": float("inf")},
                                    {"noise": "0.1"}])
def test_bad_options_are_refused(option):
    from zoo.semi.methods import METHODS

    with pytest.raises(InvalidArgumentError, match=next(iter(option))):
        METHODS["hybridnet"].task(tiny_cnn(), num_classes=3, **option)
