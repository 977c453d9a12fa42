"""HybridNet (zoo.semi.hybridnet): the stability loss (zero for identical predictions, the numpy sum of
squares otherwise), branch cooperation (the image reconstructed by the sum of both branches), the loss
by hand without noise, and bad options."""

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


def test_loss_without_noise_is_ce_plus_summed_branch_reconstruction():
    """noise=0: both noisy copies are the image, so S = 0 exactly and R is the error of
    D_c(E_c(x)) + D_u(E_u(x)) against the preprocessed image."""
    from zoo.semi.methods import METHODS

    task = METHODS["hybridnet"].task(tiny_cnn(), num_classes=3, unlabelled_weight=0.5,
                                     lambda_c=2.0, lambda_rec=3.0, lambda_stab=7.0, noise=0.0)
    assert task.encoder_u.get_weights()[0].shape == task.joint.get_weights()[0].shape
    assert not np.array_equal(task.encoder_u.get_weights()[0], task.joint.get_weights()[0])
    x, y, w = batch(3)
    out = task.step((x, y, w), training=True)
    got = float(np.mean(np.asarray(out.losses["main"])))
    assert float(out.metrics["stability"][0]) == 0.0
    both = np.concatenate([x["labelled"], x["unlabelled"]])
    _, h_c = task.joint(both, training=True)
    x_hat = (np.asarray(task.decoder_c(h_c, training=True), np.float64)
             + np.asarray(task.decoder_u(task.encoder_u(both, training=True), training=True)))
    rec = ((both / 127.5 - 1.0 - x_hat) ** 2).reshape(len(both), -1).mean(1)
    probs = np.asarray(task.joint(x["labelled"], training=True)[0], np.float64)
    ce = -np.log(probs[np.arange(len(y)), y])
    want = 2.0 * ce.mean() + 0.5 * 3.0 * rec.mean()
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
