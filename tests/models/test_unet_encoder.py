"""U-Net on a pretrained encoder: the encoder's weights are the card's, grey input, freeze switch."""

from __future__ import annotations

import numpy as np

import zoo


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
