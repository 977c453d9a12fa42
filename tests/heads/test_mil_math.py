"""The pooling layers against their formulas (numpy, float64) and their limits."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from zoo.errors import InputShapeError, InvalidArgumentError, ZooError
from zoo.heads.mil import (
    AttentionMIL,
    ClassWisePooling,
    GlobalAverageMIL,
    GlobalMaxMIL,
    LSEPooling,
    TwoSidedLSE,
    WildcatPooling,
    make_pooling,
)

RNG = np.random.default_rng(0)
BAG = RNG.normal(size=(3, 20, 4)).astype("float32")  # (B, N, C)
MAP = RNG.normal(size=(2, 5, 6, 3)).astype("float32")  # (B, H, W, C)


def run(layer, x):
    return keras.ops.convert_to_numpy(layer(x))


def lse64(s, r):
    s = s.astype(np.float64)
    return np.log(np.mean(np.exp(r * s), axis=1)) / r


def test_max_and_average_pool_instances_of_maps_and_bags():
    np.testing.assert_allclose(run(GlobalMaxMIL(), BAG), BAG.max(1), rtol=1e-6)
    np.testing.assert_allclose(run(GlobalAverageMIL(), BAG), BAG.mean(1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(run(GlobalMaxMIL(), MAP), MAP.max((1, 2)), rtol=1e-6)
    np.testing.assert_allclose(run(GlobalAverageMIL(), MAP), MAP.mean((1, 2)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("r", [0.5, 2.0, 10.0])
def test_lse_matches_its_formula(r):
    np.testing.assert_allclose(run(LSEPooling(r), BAG), lse64(BAG, r), rtol=1e-5, atol=1e-5)
    flat = MAP.reshape(2, -1, 3)
    np.testing.assert_allclose(run(LSEPooling(r), MAP), lse64(flat, r), rtol=1e-5, atol=1e-5)


def test_lse_tends_to_mean_as_r_to_zero_and_to_max_as_r_grows():
    mean, top = BAG.mean(1), BAG.max(1)
    errors_small = [np.abs(run(LSEPooling(r), BAG) - mean).max() for r in (1.0, 1e-2, 1e-5)]
    errors_large = [np.abs(run(LSEPooling(r), BAG) - top).max() for r in (1.0, 1e2, 1e5)]
    assert errors_small[0] > errors_small[1] > errors_small[2] and errors_small[2] < 1e-4
    assert errors_large[0] > errors_large[1] > errors_large[2] and errors_large[2] < 1e-4
    # between the two for every r (LSE is monotone in r)
    mid = run(LSEPooling(3.0), BAG)
    assert np.all(mid >= mean - 1e-6) and np.all(mid <= top + 1e-6)


def test_learnable_lse_trains_r_and_keeps_it_positive():
    layer = LSEPooling(2.0, learnable=True)
    x = keras.ops.convert_to_tensor(BAG)
    np.testing.assert_allclose(run(layer, x), lse64(BAG, 2.0), rtol=1e-5, atol=1e-5)
    import tensorflow as tf

    with tf.GradientTape() as tape:
        out = tf.reduce_sum(layer(x))
    (grad,) = tape.gradient(out, [layer.log_r])
    assert np.isfinite(grad.numpy()) and grad.numpy() > 0  # d LSE / d r > 0 for non-constant bags
    layer.log_r.assign(-50.0)  # r = exp(-50): still > 0, output -> the mean
    np.testing.assert_allclose(run(layer, x), BAG.mean(1), atol=1e-4)


@pytest.mark.parametrize("bad", [0, -1.0, float("inf"), "5", True])
def test_lse_sharpness_must_be_positive(bad):
    with pytest.raises(InvalidArgumentError, match="r="):
        LSEPooling(bad)
    with pytest.raises(InvalidArgumentError, match="beta_neg="):
        TwoSidedLSE(1.0, bad)


def test_wildcat_k1_alpha1_is_max_plus_min_and_halve_is_the_reference_convention():
    np.testing.assert_allclose(run(WildcatPooling(1, 1, 1.0), BAG), BAG.max(1) + BAG.min(1), rtol=1e-6)
    np.testing.assert_allclose(run(WildcatPooling(1, 1, 1.0, halve=True), BAG), (BAG.max(1) + BAG.min(1)) / 2, rtol=1e-6)
    np.testing.assert_allclose(run(WildcatPooling(1, 0), BAG), BAG.max(1), rtol=1e-6)


def test_wildcat_general_k_alpha_and_fractions_against_numpy():
    ranked = np.sort(BAG, axis=1)  # (B, N, C) ascending
    expected = ranked[:, -3:].mean(1) + 0.4 * ranked[:, :2].mean(1)
    np.testing.assert_allclose(run(WildcatPooling(3, 2, 0.4), BAG), expected, rtol=1e-5, atol=1e-6)
    # fractions: 0.15 * 20 = 3 top, 0.1 * 20 = 2 bottom
    np.testing.assert_allclose(run(WildcatPooling(0.15, 0.1, 0.4), BAG), expected, rtol=1e-5, atol=1e-6)
    # a tiny fraction still keeps one instance
    np.testing.assert_allclose(run(WildcatPooling(0.001, 0), BAG), BAG.max(1), rtol=1e-6)


def test_wildcat_maps_per_class_average_class_wise_first():
    x = RNG.normal(size=(2, 4, 4, 6)).astype("float32")  # 3 classes x 2 maps
    per_class = x.reshape(2, 16, 3, 2).mean(-1)
    ranked = np.sort(per_class, axis=1)
    expected = ranked[:, -2:].mean(1) + 0.5 * ranked[:, :1].mean(1)
    out = run(WildcatPooling(2, 1, 0.5, maps_per_class=2), x)
    assert out.shape == (2, 3)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(run(ClassWisePooling(2), x), x.reshape(2, 4, 4, 3, 2).mean(-1), rtol=1e-6)
    with pytest.raises(InputShapeError, match="maps_per_class=4 does not divide the 6"):
        WildcatPooling(1, 1, maps_per_class=4)(keras.Input((4, 4, 6)))


def test_wildcat_works_with_unknown_spatial_size():
    inp = keras.Input((None, None, 2))
    model = keras.Model(inp, WildcatPooling(0.25, 0.25, 1.0)(inp))
    x = RNG.normal(size=(2, 4, 2, 2)).astype("float32")  # N = 8, k = 2
    ranked = np.sort(x.reshape(2, 8, 2), axis=1)
    expected = ranked[:, -2:].mean(1) + ranked[:, :2].mean(1)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x)), expected, rtol=1e-5, atol=1e-6)


def test_k_larger_than_the_number_of_instances_is_an_error():
    with pytest.raises(InvalidArgumentError, match="k_max=31 is larger than the 30 instances"):
        WildcatPooling(31, 1)(keras.Input((5, 6, 2)))
    with pytest.raises(InvalidArgumentError, match="k_min=21 is larger than the 20 instances"):
        WildcatPooling(1, 21)(keras.Input((20, 2)))
    for bad in (0, -2, 1.5, 0.0, "3"):
        with pytest.raises(InvalidArgumentError, match="k_max="):
            WildcatPooling(bad, 1)
    with pytest.raises(InvalidArgumentError, match="alpha="):
        WildcatPooling(1, 1, alpha=-0.5)


def test_two_sided_lse_matches_formula_and_its_limits():
    expected = lse64(BAG, 2.0) - lse64(-BAG, 3.0)
    np.testing.assert_allclose(run(TwoSidedLSE(2.0, 3.0), BAG), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(run(TwoSidedLSE(1e5, 1e5), BAG), BAG.max(1) + BAG.min(1), atol=1e-4)
    np.testing.assert_allclose(run(TwoSidedLSE(1e-5, 1e-5), BAG), 2 * BAG.mean(1), atol=1e-4)


def _attention64(h, V, w, U=None):
    hidden = np.tanh(h @ V)
    if U is not None:
        hidden = hidden / (1 + np.exp(-(h @ U))) * 1.0
    e = (hidden @ w)[..., 0]
    a = np.exp(e - e.max(1, keepdims=True))
    a /= a.sum(1, keepdims=True)
    return (a[..., None] * h).sum(1), a


@pytest.mark.parametrize("gated", [False, True])
def test_attention_is_the_weighted_sum_of_ilse_2018(gated):
    layer = AttentionMIL(8, gated=gated, return_attention=True)
    z, a = (keras.ops.convert_to_numpy(t) for t in layer(BAG))
    weights = {v.name: v.numpy().astype(np.float64) for v in layer.weights}
    z_ref, a_ref = _attention64(BAG.astype(np.float64), weights["V"], weights["w"], weights.get("U"))
    np.testing.assert_allclose(a, a_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a.sum(1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(z, z_ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("gated", [False, True])
def test_attention_is_invariant_to_instance_order(gated):
    layer = AttentionMIL(8, gated=gated)
    perm = RNG.permutation(BAG.shape[1])
    np.testing.assert_allclose(run(layer, BAG[:, perm]), run(layer, BAG), rtol=1e-5, atol=1e-6)
    # and a spatial map is the bag of its positions; attention comes back in the map's layout
    layer = AttentionMIL(8, gated=gated, return_attention=True)
    z_map, a_map = (keras.ops.convert_to_numpy(t) for t in layer(MAP))
    z_bag, a_bag = (keras.ops.convert_to_numpy(t) for t in layer(MAP.reshape(2, 30, 3)))
    assert a_map.shape == (2, 5, 6)
    np.testing.assert_allclose(z_map, z_bag, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a_map.reshape(2, 30), a_bag, rtol=1e-5, atol=1e-7)


def test_max_pooling_sends_the_gradient_to_the_top_instance_only():
    import tensorflow as tf

    x = tf.constant(BAG)
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = tf.reduce_sum(GlobalMaxMIL()(x))
    grad = tape.gradient(out, x).numpy()
    expected = (BAG == BAG.max(1, keepdims=True)).astype("float32")
    np.testing.assert_array_equal(grad, expected)


@pytest.mark.parametrize("name", ["max", "avg", "lse", "weldon", "wildcat", "two_sided_lse", "attention"])
def test_a_rank_2_input_is_a_clear_error(name):
    with pytest.raises(InputShapeError, match=r"rank 2\); it pools a bag \(B, N, C\) or a spatial map"):
        make_pooling(name)(keras.Input((7,)))


def test_make_pooling_names_and_options():
    with pytest.raises(InvalidArgumentError, match="Did you mean 'wildcat'"):
        make_pooling("wildcard")
    with pytest.raises(InvalidArgumentError, match="bad option"):
        make_pooling("max", r=3)
    layer = make_pooling("weldon", k_max=2)
    assert isinstance(layer, WildcatPooling) and layer.k_min == 1 and layer.alpha == 1.0 and layer.name == "mil_pool"
    assert issubclass(InvalidArgumentError, ZooError)
