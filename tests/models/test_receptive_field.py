"""zoo.models.receptive_field against a brute-force gradient measurement.

The brute force: the input positions whose gradient is non-zero for one output position,
mixed over its channels and united over several random inputs (max pooling and ReLU route the
gradient of one input to a subset of the field; the union over inputs recovers it all).
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import zoo
from zoo.errors import UnsupportedLayerError
from zoo.models import receptive_field
from zoo.models._receptive_field import input_window


@pytest.fixture(autouse=True)
def seeded():
    """Deterministic initial weights: a unit left dead by an unlucky draw would hide part of a field."""
    import keras

    keras.utils.set_random_seed(0)


def measured_window(model, position, layer, trials=6):
    import keras

    sub = keras.Model(model.inputs, model.get_layer(layer).output)
    shape = tuple(model.inputs[0].shape[1:])
    support = np.zeros(shape[:-1], bool)
    for seed in range(trials):
        x = tf.Variable(np.random.default_rng(seed).normal(size=(1, *shape)).astype("float32") * 50)
        with tf.GradientTape() as tape:
            y = sub(x, training=False)
            pixel = y[(0, *position)]  # a random mix of channels: the sum of softmax outputs is constant
            s = tf.reduce_sum(pixel * np.random.default_rng(99).normal(size=pixel.shape).astype("float32"))
        support |= np.any(tape.gradient(s, x).numpy()[0] != 0, axis=-1)
    return [(int(i.min()), int(i.max())) for i in np.nonzero(support)]


def check(model, positions):
    rf = receptive_field(model)
    sizes = tuple(model.inputs[0].shape[1:-1])
    for position in positions:
        analytic = input_window(model, position, layer=rf.layer)
        clipped = [(max(lo, 0), min(hi, n - 1)) for (lo, hi), n in zip(analytic, sizes)]
        assert measured_window(model, position, rf.layer) == clipped, (position, analytic)
    return rf


def test_dilated_default_is_131_and_measured():
    model = zoo.load("dilated_cnn", input_shape=(160, 160), in_chans=1, filters=2, head_filters=2)
    rf = check(model, [(80, 80), (81, 40)])
    assert rf.size == (131, 131) and rf.stride == (1, 1)
    assert measured_window(model, (80, 80), rf.layer) == [(15, 145), (15, 145)]  # fully inside: 131 wide


def test_dilated_valid_shrinks_by_the_field():
    model = zoo.load("dilated_cnn", input_shape=(140, 140), padding="valid", filters=2, head_filters=2)
    assert model.output.shape[1] == 140 - 130
    assert receptive_field(model).size == (131, 131)


def test_alexnet_is_195_stride_32():
    model = zoo.load("alexnet", input_shape=(259, 259), num_classes=0, pooling=None)
    rf = check(model, [(3, 3), (4, 2)])
    assert (rf.size, rf.stride, rf.layer) == ((195, 195), (32, 32), "pool5")


@pytest.mark.parametrize("upsampling", ["transpose", "bilinear"])
def test_unet_same_padding_both_phases(upsampling):
    model = zoo.load("unet", input_shape=(64, 64), in_chans=1, depth=2, base_filters=2, upsampling=upsampling)
    rf = check(model, [(32, 32), (33, 31)])
    assert rf.stride == (1, 1) and rf.size == ((44, 44) if upsampling == "transpose" else (52, 52))


def test_unet_with_a_nested_encoder():
    model = zoo.load("unet", input_shape=(64, 64), encoder="simple_cnn", decoder_filters=(4, 4, 4, 4, 4))
    check(model, [(32, 32), (5, 60)])


def test_simple_cnn_and_patch_cnn():
    rf = check(zoo.load("simple_cnn", input_shape=(192, 192), num_classes=0, pooling=None), [(3, 3)])
    assert rf.stride == (32, 32)
    patch = zoo.load("patch_cnn29", dense=(4,))
    rf = check(patch, [(1, 2)])
    assert (rf.size, rf.stride) == ((16, 16), (4, 4))  # 5 + 1*1 + 4*2 + 1*2 after two 5x5 convs and pools


@pytest.mark.slow
def test_unet_paper_valid_configuration():
    model = zoo.load("unet", input_shape=(572, 572), in_chans=1, padding="valid", norm="none", base_filters=1)
    rf = check(model, [(194, 194), (195, 193)])
    assert rf.stride == (1, 1)


@pytest.mark.slow
def test_googlenet_ceil_pooling():
    model = zoo.load("googlenet", input_shape=(416, 416), num_classes=0, pooling=None)
    rf = check(model, [(6, 6)])
    assert rf.stride == (32, 32)


def test_three_dimensional():
    model = zoo.load("unet3d", input_shape=(16, 16, 16), in_chans=1, depth=1, base_filters=2)
    rf = check(model, [(8, 8, 8)])
    assert rf.size == (18, 18, 18)  # 2 convs: 5; pool: 6; 2 convs at stride 2: 14; up-conv reads 1; 2 convs: 18
    trilinear = zoo.load("unet3d", input_shape=(16, 16, 16), in_chans=1, depth=1, base_filters=2, upsampling="bilinear")
    assert check(trilinear, [(8, 8, 8), (9, 8, 7)]).size == (20, 20, 20)  # trilinear reads 2 inputs: +2


def test_unknown_layer_is_a_clear_error():
    import keras

    x = keras.Input((32, 32, 1))
    y = keras.layers.Conv2D(2, 3, name="c")(x)
    y = keras.layers.RandomRotation(0.1, name="rotate")(y)
    with pytest.raises(UnsupportedLayerError, match="rotate"):
        receptive_field(keras.Model(x, y))


def test_triplanar_pathways_read_a_plane_of_the_cube():
    """Each pathway's field is a window in its central plane: size 1 and stride 0 across it."""
    model = zoo.load("triplanar_cnn", num_classes=2, dense=(4,))
    assert receptive_field(model).layer == "axial_2_pool"  # the default: the first pathway
    for layer, axis, size, stride, positions in [("axial_2_pool", 0, 16, 4, [(1, 2)]),
                                                 ("coronal_1_pool", 1, 6, 2, [(5, 7)]),
                                                 ("sagittal_2_pool", 2, 16, 4, [(2, 1)])]:
        rf = receptive_field(model, layer=layer)
        assert rf.size == tuple(1 if a == axis else size for a in range(3))
        assert rf.stride == tuple(0 if a == axis else stride for a in range(3))
        for position in positions:
            analytic = input_window(model, position, layer=layer)
            clipped = [(max(lo, 0), min(hi, 28)) for lo, hi in analytic]
            assert measured_window(model, position, layer, trials=3) == clipped, (layer, position, analytic)


# Every registered model has a receptive field: checked on the model each case of
# tests/models/test_archs_invariants.py builds anyway (one build per model for all invariants).
