"""GAN losses against numpy formulas, the R1 penalty against a hand gradient, and pix2pix's
losses against its formula on a hand-built batch."""

from __future__ import annotations

import numpy as np
import pytest

from zoo.errors import UnknownModelError
from zoo.generative.losses import gan_loss, l1, r1_penalty


def softplus(v):
    return np.log1p(np.exp(-np.abs(v))) + np.maximum(v, 0)


RNG = np.random.default_rng(0)
REAL, FAKE = RNG.normal(size=(4, 3, 3, 1)), RNG.normal(size=(4, 3, 3, 1))  # PatchGAN-like maps


@pytest.mark.parametrize("name, d_formula, g_formula", [
    ("non_saturating", lambda r, f: softplus(-r) + softplus(f), lambda f: softplus(-f)),
    ("hinge", lambda r, f: np.maximum(1 - r, 0) + np.maximum(1 + f, 0), lambda f: -f),
    ("lsgan", lambda r, f: (r - 1) ** 2 + f**2, lambda f: (f - 1) ** 2),
])
def test_gan_losses_per_example_equal_their_formulas(name, d_formula, g_formula):
    loss = gan_loss(name)
    d = np.asarray(loss.discriminator(REAL.astype(np.float32), FAKE.astype(np.float32)))
    g = np.asarray(loss.generator(FAKE.astype(np.float32)))
    np.testing.assert_allclose(d, d_formula(REAL, FAKE).mean(axis=(1, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(g, g_formula(FAKE).mean(axis=(1, 2, 3)), rtol=1e-5, atol=1e-6)


def test_unknown_loss_suggests_the_name():
    with pytest.raises(UnknownModelError, match="hinge"):
        gan_loss("hinje")


def test_l1_is_the_mean_absolute_difference_per_example():
    a, b = RNG.normal(size=(3, 4, 4, 2)), RNG.normal(size=(3, 4, 4, 2))
    np.testing.assert_allclose(np.asarray(l1(a, b)), np.abs(a - b).mean(axis=(1, 2, 3)),
                               rtol=1e-5)


def test_r1_penalty_equals_the_hand_gradient():
    import keras

    w = RNG.normal(size=(12, 1)).astype(np.float32)
    disc = keras.Sequential([keras.Input((2, 2, 3)), keras.layers.Flatten(),
                             keras.layers.Dense(1, activation="tanh")])
    disc.layers[-1].set_weights([w, np.array([0.3], np.float32)])
    x = RNG.normal(size=(5, 2, 2, 3)).astype(np.float32)
    t = np.tanh(x.reshape(5, -1) @ w + 0.3)  # D(x) = tanh(w.x + b): grad = (1 - D^2) w
    grad = (1 - t**2) * w[:, 0][None, :]
    want = 0.5 * 10.0 * (grad**2).sum(axis=1)
    np.testing.assert_allclose(np.asarray(r1_penalty(disc, x, 10.0)), want, rtol=1e-4)


def test_pix2pix_losses_equal_the_formula_on_a_hand_built_batch():
    import zoo
    from zoo.generative.pix2pix import Pix2PixTask

    gen = zoo.load("unet", input_shape=(16, 16, 1), num_classes=1, classifier_activation="tanh",
                   depth=1, base_filters=2, norm="none")
    disc = zoo.load("patchgan", input_shape=(16, 16, 2), include_top=True, num_classes=1,
                    n_layers=1, base_filters=2, norm="none")
    task = Pix2PixTask(gen, disc, l1_weight=7.0)
    src = np.linspace(-1, 1, 3 * 256, dtype=np.float32).reshape(3, 16, 16, 1)
    tgt = np.cos(3 * src).astype(np.float32)
    g_loss, d_loss, rec = (np.asarray(v) for v in task.losses(src, tgt, training=False))
    fake = gen.predict(src, verbose=0)
    real_logits = disc.predict(np.concatenate([src, tgt], -1), verbose=0)
    fake_logits = disc.predict(np.concatenate([src, fake], -1), verbose=0)
    axes = (1, 2, 3)
    want_rec = np.abs(tgt - fake).mean(axis=axes)
    want_d = (softplus(-real_logits) + softplus(fake_logits)).mean(axis=axes)
    want_g = softplus(-fake_logits).mean(axis=axes) + 7.0 * want_rec
    np.testing.assert_allclose(rec, want_rec, rtol=1e-5)
    np.testing.assert_allclose(d_loss, want_d, rtol=1e-5)
    np.testing.assert_allclose(g_loss, want_g, rtol=1e-5)
    out = task.step((src, tgt, np.array([1.0, 0.0, 2.0], np.float32)), training=False)
    np.testing.assert_allclose(np.asarray(out.losses["gen"]), want_g * [1, 0, 2], rtol=1e-5)
