"""The ladder network (zoo.semi.ladder): without noise the corrupted path is the clean one and a decoder
that reconstructs it has zero denoising cost (with augment=True: the distance to the weak views); the cost against a numpy formula; the clean path is the
classifier; networks without the needed layers are refused; the decoder round-trips .keras."""

from __future__ import annotations

import numpy as np
import pytest
from test_reconstruction import batch, tiny_cnn

from zoo.errors import InvalidArgumentError


def _ladder(model=None, **options):
    from zoo.semi.methods import METHODS

    return METHODS["ladder"].task(model or tiny_cnn(), num_classes=3, **options)


def _images():
    x = batch(5)[0]
    return np.concatenate([x["labelled"], x["unlabelled"]])


def test_without_noise_corrupted_equals_clean_and_the_cost_vanishes():
    task = _ladder(noise_std=0.0)
    x = _images()
    clean = task.walk(x, training=True, corrupted=False)
    noisy = task.walk(x, training=True, corrupted=True)
    assert len(clean.zs) == len(task.plan.units) + 1 == 12  # the image + 10 convs + the head
    for a, b in zip(clean.zs, noisy.zs, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
    np.testing.assert_allclose(np.asarray(noisy.output), np.asarray(clean.output), atol=1e-6)
    # a decoder that reconstructs each level exactly leaves no denoising cost
    _exact_decoder(task, clean)
    cost, _, _ = task.costs(x, training=True)
    assert float(cost) == pytest.approx(0.0, abs=1e-4)


def _exact_decoder(task, clean):
    """Set the decoder to give ẑ = sigma z̃ + mu at every level (the combinators' a5 and a10;
    a1 = a4 = a6 = a9 = 0), so its normalised output is the corrupted path's z̃ itself."""
    for level, (mu, sigma) in enumerate(zip(clean.mus, clean.sigmas, strict=True)):
        g = task.decoder.get_layer(f"ladder_g{level}")
        channels = g.a[0].shape[0]
        mu = np.broadcast_to(np.asarray(mu, np.float64), (channels,))
        sigma = np.broadcast_to(np.asarray(sigma, np.float64), (channels,))
        a5 = np.where(sigma == 1.0, 0.0, mu / np.where(sigma == 1.0, 2.0, 1.0 - sigma))
        for i in (0, 3, 5, 8):
            g.a[i].assign(np.zeros(channels))
        g.a[4].assign(a5)
        g.a[9].assign(sigma)


def test_augmented_corrupted_path_reads_weak_views_of_the_unlabelled_images():
    """augment=True, no noise: the labelled rows enter the corrupted path as they are, the others
    as zoo.semi.augment.weak views; with the exact decoder the cost is then the weighted squared
    distance between each level's z on the views and on the images (not 0: the costs link views)."""
    import tensorflow as tf

    from zoo.semi.augment import weak

    weights = [2.0] + [0.5] * 11
    task = _ladder(noise_std=0.0, augment=True, layer_weights=weights)
    x, n = _images(), 5
    views = np.concatenate([x[:n], np.asarray(weak(tf.constant(x[n:]), task.step_seed(20)))])
    assert not np.allclose(views[n:], x[n:])
    noisy = task.walk(task.corrupted_input(x, n), training=True, corrupted=True)
    np.testing.assert_allclose(np.asarray(noisy.zs[0]), views / 127.5 - 1.0, atol=1e-6)
    clean, on_views = (task.walk(a, training=True, corrupted=False) for a in (x, views))
    _exact_decoder(task, clean)
    cost, _, _ = task.costs(x, training=True, labelled=n)
    want = sum(w * np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
               for w, a, b in zip(weights, on_views.zs, clean.zs, strict=True))
    assert float(cost) == pytest.approx(want, rel=1e-3) and want > 0
    with pytest.raises(InvalidArgumentError, match="augment='yes'"):
        _ladder(augment="yes")


def test_clean_path_is_the_classifier_and_the_cost_is_the_formula():
    task = _ladder(noise_std=0.3, layer_weights=[2.0] + [0.5] * 11)
    x = _images()
    cost, clean, z_hats = task.costs(x, training=True)
    np.testing.assert_allclose(np.asarray(clean.output),
                               np.asarray(task.classifier(x, training=True)), atol=1e-6)
    z0 = x / 127.5 - 1.0  # level 0: the preprocessed image
    np.testing.assert_allclose(np.asarray(clean.zs[0]), z0, atol=1e-6)
    want = 0.0
    for level, (z_hat, z, mu, sigma) in enumerate(zip(z_hats, clean.zs, clean.mus, clean.sigmas,
                                                      strict=True)):
        z_hat, z = np.asarray(z_hat, np.float64), np.asarray(z, np.float64)
        if level:  # the target: the clean pre-activation standardised over the batch
            pre = z * np.asarray(sigma) + np.asarray(mu)
            axes = tuple(range(pre.ndim - 1))
            std = np.sqrt(pre.var(axes) + 1e-3)
            np.testing.assert_allclose(z, (pre - pre.mean(axes)) / std, atol=1e-4)
        bn = (z_hat - np.asarray(mu)) / np.asarray(sigma)
        want += (2.0 if level == 0 else 0.5) * np.mean((bn - z) ** 2)
    assert float(cost) == pytest.approx(want, rel=1e-4)
    assert float(cost) > 0


def test_ladder_trains_on_a_dense_stack():
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    mlp = keras.Sequential([keras.Input((32, 32, 1)), keras.layers.Flatten(),
                            keras.layers.Dense(16, use_bias=False), keras.layers.BatchNormalization(),
                            keras.layers.ReLU(), keras.layers.Dense(3, activation="softmax")])
    task = _ladder(mlp)
    assert [type(u.affine).__name__ for u in task.plan.units] == ["Dense", "Dense"]
    variables = task.trainable("main")
    with tf.GradientTape() as tape:
        out = task.step(batch(6), training=True)
        loss = tf.reduce_mean(out.losses["main"])
    grads = tape.gradient(loss, variables)
    combinator = [g for g, v in zip(grads, variables, strict=True) if "ladder_g" in v.path]
    assert combinator and all(g is not None for g in grads)
    assert float(out.metrics["denoising_cost"][0]) > 0


def test_networks_without_the_layers_are_refused():
    import keras

    inp = keras.Input((16, 16, 1))
    a = keras.layers.Conv2D(4, 3, padding="same")(inp)
    b = keras.layers.Conv2D(4, 3, padding="same")(a)
    out = keras.layers.Dense(3, activation="softmax")(
        keras.layers.GlobalAveragePooling2D()(keras.layers.Add(name="skip_add")([a, b])))
    with pytest.raises(InvalidArgumentError, match="residual.*skip_add"):
        _ladder(keras.Model(inp, out))
    norm = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4),
                             keras.layers.LayerNormalization(name="ln"),
                             keras.layers.Dense(3, activation="softmax")])
    with pytest.raises(InvalidArgumentError, match="neither Dense/Conv.*'ln'"):
        _ladder(norm)
    with pytest.raises(InvalidArgumentError, match="layer_weights"):
        _ladder(layer_weights=[1.0, 2.0])


def test_decoder_round_trips_keras(tmp_path):
    from zoo.saving import load_model

    task = _ladder()
    x = _images()
    noisy = task.walk(x, training=True, corrupted=True)
    inputs = [noisy.output, *noisy.zs[::-1]]
    path = tmp_path / "ladder_decoder.keras"
    task.decoder.save(path)
    back = load_model(path)
    for a, b in zip(back(inputs), task.decoder(inputs), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
