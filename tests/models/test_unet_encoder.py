"""U-Net on a pretrained encoder: the encoder's weights are the card's, grey input, freeze switch, an
inflated 3D encoder cut after a few levels."""

from __future__ import annotations

import numpy as np
import pytest

import zoo
from zoo.errors import InputShapeError, InvalidArgumentError


def encoder_of(model):
    return next(layer for layer in model.layers if layer.name.endswith("_features"))


def test_pretrained_frozen_encoder_keeps_the_card_weights():
    reference = zoo.load("simple_cnn.phantom", in_chans=1, num_classes=0)  # the shipped grey-scale checkpoint
    model = zoo.load("unet", input_shape=(32, 32), in_chans=1, num_classes=3, encoder="simple_cnn",
                     encoder_weights="phantom", freeze_encoder=True, decoder_filters=(8, 8, 8, 8, 8))
    encoder = encoder_of(model)
    assert not encoder.trainable and model.output.shape == (None, 32, 32, 3)
    for layer in reference.layers:
        if layer.weights:
            for a, b in zip(layer.get_weights(), encoder.get_layer(layer.name).get_weights()):
                np.testing.assert_array_equal(a, b)

    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 1)).astype("float32")
    y = np.eye(3, dtype="float32")[np.random.default_rng(1).integers(0, 3, (2, 32, 32))]
    before = [w.numpy().copy() for w in encoder.weights]
    decoder_before = model.get_layer("head_conv").kernel.numpy().copy()
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    model.fit(x, y, epochs=1, verbose=0)
    for a, w in zip(before, encoder.weights):  # moving statistics too: a frozen BatchNorm runs in inference mode
        np.testing.assert_array_equal(a, w.numpy())
    assert not np.array_equal(decoder_before, model.get_layer("head_conv").kernel.numpy())


# An unfrozen encoder trains (every weight gets a gradient): the unet[encoder=...] case of
# tests/models/test_archs_invariants.py.


def test_unet3d_on_the_inflated_phantom_encoder_cut_after_three_levels():
    """encoder="simple_cnn_3d", encoder_weights="phantom_inflated": every 3x3 kernel of the shipped
    2D checkpoint repeated over depth and divided by 3, BatchNorm as is; a depth-constant volume gives
    the 2D checkpoint's features at every kept level. encoder_depth=3 leaves stages 4-5 out, so a
    16-slice volume (too thin for the full stride 32) fits."""
    two_d = zoo.load("simple_cnn.phantom", in_chans=1, input_shape=(32, 32), features=True)
    model = zoo.load("unet3d", input_shape=(16, 32, 32), in_chans=1, num_classes=2, encoder="simple_cnn_3d",
                     encoder_weights="phantom_inflated", encoder_depth=3, decoder_filters=(8, 8, 8))
    encoder = encoder_of(model)
    assert model.output.shape == (None, 16, 32, 32, 2)
    assert [o.shape[-1] for o in encoder.outputs] == [16, 32, 48]
    assert not any(layer.name.startswith(("stage4", "stage5")) for layer in encoder.layers)
    checked = 0
    for layer in encoder.layers:
        if layer.weights:
            for w3, w2 in zip(layer.get_weights(), two_d.get_layer(layer.name).get_weights(), strict=True):
                want = np.repeat(w2[None], 3, axis=0) / 3 if w2.ndim == 4 else w2
                np.testing.assert_allclose(w3, want, rtol=1e-6, atol=1e-8)
                checked += 1
    assert checked == 3 * 2 * 5  # 3 stages x 2 x (kernel + 4 BatchNorm arrays)
    image = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 1)).astype("float32")
    f2 = two_d(image, training=False)[:3]
    f3 = encoder(np.repeat(image[:, None], 16, axis=1), training=False)
    for a, b in zip(f2, f3, strict=True):
        a, b = a.numpy(), b.numpy()
        np.testing.assert_allclose(b, np.broadcast_to(a[:, None], b.shape), atol=2e-5 * np.abs(a).max())
    card = zoo.get_card("simple_cnn_3d.phantom_inflated")
    assert zoo.weights_origin(model) == {"card": card.name, "sha256": card.sha256, "part": "simple_cnn_3d_features"}


def test_encoder_depth_errors():
    with pytest.raises(InputShapeError, match=">= 32"):  # the full encoder needs 32 slices
        zoo.load("unet3d", input_shape=(16, 32, 32), encoder="simple_cnn_3d", decoder_filters=(4,) * 5)
    for bad in (0, 6, True, 2.0):
        with pytest.raises(InvalidArgumentError, match="encoder_depth"):
            zoo.load("unet3d", input_shape=(32, 32, 32), encoder="simple_cnn_3d", encoder_depth=bad)
    with pytest.raises(InvalidArgumentError, match="without encoder"):
        zoo.load("unet3d", input_shape=(16, 16, 16), depth=2, encoder_depth=2)
