"""The domain discriminator attaches at named depths of a classifier (simple_cnn), a U-Net and a 3D
network (simple_cnn3d): the multi-connected input is each feature map average-pooled to the
coarsest grid (checked against numpy) and concatenated, behind one gradient reversal."""

from __future__ import annotations

import numpy as np
import pytest

from zoo.errors import InvalidArgumentError, UnknownNameError


def _numpy_avg_pool(x, factors):
    """(N, *spatial, C) mean-pooled by integer ``factors`` per spatial axis (a reshape-mean)."""
    n, *spatial, c = x.shape
    shape = [n]
    for s, f in zip(spatial, factors):
        shape += [s // f, f]
    axes = tuple(2 + 2 * i for i in range(len(spatial)))
    return x.reshape(*shape, c).mean(axis=axes)


CASES = {
    "simple_cnn": (dict(input_shape=(32, 32, 1), num_classes=2), ["stage2_relu2", "stage3_relu2"],
                   (8, 8), 32 + 48, (2,)),
    "unet": (dict(input_shape=(32, 32, 1), num_classes=2, depth=2, base_filters=4),
             ["enc3_2_relu", "dec1_2_relu"], (8, 8), 16 + 4, (32, 32, 2)),
    "simple_cnn3d": (dict(input_shape=(16, 16, 16, 1), num_classes=2), ["stage1_relu2", "stage3_relu2"],
                     (4, 4, 4), 8 + 32, (2,)),
}


@pytest.mark.parametrize("arch", sorted(CASES))
def test_attaches_at_several_depths_with_the_right_shapes(arch):
    import keras

    import zoo
    from zoo.domain.discriminator import attach_discriminator, reversal_layers, task_model

    options, layers, grid, channels, task_shape = CASES[arch]
    keras.utils.set_random_seed(0)
    model = zoo.load(arch, **options)
    adapted = attach_discriminator(model, layers, width=8)
    task_out, logit = adapted.outputs
    assert tuple(task_out.shape[1:]) == task_shape and tuple(logit.shape[1:]) == (1,)
    concat = adapted.get_layer("domain_concat")
    assert tuple(concat.output.shape[1:]) == (*grid, channels)
    assert len(reversal_layers(adapted)) == 1
    # the discriminator sees exactly the named maps, mean-pooled to the coarsest grid
    probe = keras.Model(adapted.input, [model.get_layer(n).output for n in layers] + [concat.output])
    x = np.random.default_rng(0).uniform(0, 255, (2, *options["input_shape"])).astype("float32")
    *maps, joined = (np.asarray(t) for t in probe(x, training=False))
    pooled = [_numpy_avg_pool(m, [s // g for s, g in zip(m.shape[1:-1], grid)]) for m in maps]
    np.testing.assert_allclose(joined, np.concatenate(pooled, -1), rtol=1e-5, atol=1e-5)
    # the task network is the original one (shared layers, same outputs)
    np.testing.assert_allclose(task_model(adapted)(x, training=False), model(x, training=False), rtol=1e-6)
    assert {id(w) for w in model.weights} <= {id(w) for w in adapted.weights}


def test_one_depth_needs_no_concatenation():
    import zoo
    from zoo.domain.discriminator import attach_discriminator

    model = zoo.load("simple_cnn", input_shape=(32, 32, 1), num_classes=2)
    adapted = attach_discriminator(model, "stage4_relu2", width=4, depth=1)
    assert "domain_concat" not in [layer.name for layer in adapted.layers]
    assert tuple(adapted.get_layer("domain_reversal").output.shape[1:]) == (4, 4, 64)


def test_bad_layers_are_refused_with_suggestions():
    import zoo
    from zoo.domain.discriminator import attach_discriminator, feature_layer_names

    model = zoo.load("simple_cnn", input_shape=(32, 32, 1), num_classes=2)
    assert "stage2_relu2" in feature_layer_names(model) and "head_fc" not in feature_layer_names(model)
    with pytest.raises(UnknownNameError, match="Did you mean 'stage2_relu2'"):
        attach_discriminator(model, ["stage2_relu_2"])
    with pytest.raises(UnknownNameError, match="head_fc"):  # not a feature map
        attach_discriminator(model, ["head_fc"])
    with pytest.raises(InvalidArgumentError, match="layers"):
        attach_discriminator(model, [])
    with pytest.raises(InvalidArgumentError, match="width"):
        attach_discriminator(model, "stage2_relu2", width=0)
