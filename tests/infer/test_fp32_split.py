"""zoo.infer.engines.fp32_split: which layers reduced precision keeps in fp32, and that the fp32
sub-models it cuts reproduce the whole model."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import zoo
from zoo.data.synthetic import make_phantoms
from zoo.infer import engines as engines_mod
from zoo.infer.engines import fp32_split, split_parts


@pytest.fixture(scope="module")
def phantom():
    model = zoo.load("simple_cnn.phantom")
    return model, make_phantoms(16, size=64, seed=2026, contrast=(0.12, 0.4)).images


def test_the_stem_and_head_of_the_shipped_checkpoint(phantom):
    model, _ = phantom
    names = [layer.name for layer in model.layers][1:]  # without the InputLayer
    split = fp32_split(model)
    # preprocessing and everything at full resolution, through the first pooling layer
    assert split.stem == tuple(names[: names.index("stage1_pool") + 1])
    assert split.stem[0] == "preprocess" and split.stem_end == "stage1_pool"
    assert split.head == ("head_pool", "head_fc") and split.head_start == "head_pool"
    assert split.describe() == (
        "kept in fp32: stem preprocess..stage1_pool (8 layers); head head_pool, head_fc"
    )


def test_the_parts_chained_are_the_whole_model(phantom):
    model, x = phantom
    parts = split_parts(model, fp32_split(model))
    assert [reduced for _, reduced in parts] == [False, True, False]
    y = x
    for sub, _ in parts:
        y = sub(y, training=False)
    np.testing.assert_allclose(y, model(x, training=False), atol=1e-6)


def test_tensorflow_bf16_computes_exactly_those_layers_in_float32(phantom):
    model, _ = phantom
    keep = fp32_split(model).layers
    clone = engines_mod._bf16_keeping_fp32(model)
    for layer in clone.layers[1:]:
        want = "float32" if layer.name in keep else "bfloat16"
        assert layer.compute_dtype == want, (layer.name, layer.compute_dtype)
    np.testing.assert_array_equal(
        clone.get_layer("stage3_conv1").kernel.numpy(),
        model.get_layer("stage3_conv1").kernel.numpy(),
    )


def _residual(first_stride_in_branch: bool):
    """A tiny net whose first strided conv sits in a branch that a skip path goes around, or on
    the trunk; and a dense (spatial) output when ``first_stride_in_branch`` is None."""
    i = keras.Input((16, 16, 1))
    a = keras.layers.Conv2D(4, 3, padding="same", name="c0")(i)
    if first_stride_in_branch:
        b = keras.layers.Conv2D(4, 3, strides=2, padding="same", name="down")(a)
        a = keras.layers.Add(name="add")([a, keras.layers.UpSampling2D(name="up")(b)])
    else:
        a = keras.layers.MaxPooling2D(name="down")(a)
        a = keras.layers.Add(name="add")([a, keras.layers.Conv2D(4, 1, name="c1")(a)])
    g = keras.layers.GlobalAveragePooling2D(name="gap")(a)
    return keras.Model(i, keras.layers.Dense(2, activation="softmax", name="fc")(g))


def test_no_stem_cut_where_a_skip_path_goes_around_the_first_downsampling():
    split = fp32_split(_residual(first_stride_in_branch=True))
    assert split.stem == () and split.stem_end is None
    assert split.head == ("gap", "fc")
    assert "stem" not in split.describe()


def test_a_trunk_downsampling_is_a_stem_and_a_dense_output_has_no_head():
    model = _residual(first_stride_in_branch=False)
    assert fp32_split(model).stem == ("c0", "down")
    i = keras.Input((16, 16, 1))
    dense = keras.Model(
        i,
        keras.layers.Conv2D(2, 1, name="seg")(
            keras.layers.MaxPooling2D(name="pool")(keras.layers.Conv2D(4, 3, name="c")(i))
        ),
    )
    split = fp32_split(dense)
    assert split.stem == ("c", "pool") and split.head == ()
    x = np.random.default_rng(0).uniform(0, 1, (3, 16, 16, 1)).astype("float32")
    (stem, r0), (body, r1) = split_parts(dense, split)
    assert (r0, r1) == (False, True)
    np.testing.assert_allclose(body(stem(x)), dense(x), atol=1e-6)
