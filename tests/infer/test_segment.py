"""zoo.infer.segment: whole-volume segmentation from sliding windows, test-time flips against
flips done by hand on the whole-volume forward pass, and largest-component cleaning of planted
components."""

from __future__ import annotations

import itertools

import keras
import numpy as np
import pytest

from zoo.errors import InputShapeError, InvalidArgumentError, UnknownNameError
from zoo.infer import segment, sliding_window
from zoo.infer.segment import flip_sets


def _combos(axes):
    return [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]


def _conv_net(dims: int, seed: int, *, symmetric: bool, activation="softmax"):
    """Two 3-wide 'same' convolutions (receptive-field radius 2), any input size. With
    ``symmetric`` every kernel is averaged over its flips, so the network is flip-equivariant."""
    conv = keras.layers.Conv3D if dims == 3 else keras.layers.Conv2D
    inp = keras.Input((None,) * dims + (1,))
    hidden = conv(4, 3, padding="same", activation="tanh")(inp)
    model = keras.Model(inp, conv(2, 3, padding="same", activation=activation)(hidden))
    rng = np.random.default_rng(seed)
    weights = []
    for w in model.get_weights():
        w = rng.normal(0, 0.7, w.shape).astype("float32")
        if symmetric and w.ndim == dims + 2:
            w = np.mean([np.flip(w, c) for c in _combos(tuple(range(dims)))], axis=0)
        weights.append(w)
    model.set_weights(weights)
    return model


SHAPES = {2: ((20, 22), (8, 10)), 3: ((12, 14, 16), (8, 8, 8))}


def _whole(model, x):
    return np.asarray(model(x[None, ..., None], training=False))[0]


@pytest.mark.parametrize("dims", [2, 3])
def test_flips_of_a_flip_equivariant_net_equal_the_whole_volume_pass(dims):
    shape, roi = SHAPES[dims]
    model = _conv_net(dims, dims, symmetric=True)
    x = np.random.default_rng(dims).uniform(-1, 1, shape).astype("float32")
    whole = _whole(model, x)
    axes = tuple(range(dims))
    np.testing.assert_allclose(np.flip(_whole(model, np.flip(x, axes)), axes), whole, atol=1e-5)
    for tta in (False, True):
        seg = segment(model, x, roi, overlap=0.5, margin=2, tta_flips=tta)
        np.testing.assert_allclose(seg.probabilities, whole, rtol=0, atol=1e-5)
        np.testing.assert_array_equal(seg.labels, whole.argmax(-1))
        assert seg.labels.shape == shape and seg.probabilities.dtype == np.float32


@pytest.mark.parametrize(("dims", "flips"), [(2, True), (3, (0, 2))])
def test_flips_average_exactly_on_a_net_that_is_not_equivariant(dims, flips):
    shape, roi = SHAPES[dims]
    model = _conv_net(dims, 10 + dims, symmetric=False)
    x = np.random.default_rng(dims).uniform(-1, 1, shape).astype("float32")
    axes = tuple(range(dims)) if flips is True else flips
    by_hand = np.mean([np.flip(_whole(model, np.flip(x, c)), c) for c in _combos(axes)], axis=0)
    seg = segment(model, x, roi, overlap=0.5, margin=2, tta_flips=flips)
    np.testing.assert_allclose(seg.probabilities, by_hand, rtol=0, atol=1e-5)
    assert np.abs(seg.probabilities - _whole(model, x)).max() > 1e-2  # the flips did something
    # without the margin, the windows' own borders differ; the average is still of the flipped
    # sliding-window passes
    plain = segment(model, x, roi, overlap=0.5, tta_flips=flips, blend="constant")
    ref = np.mean([np.flip(sliding_window(model, np.flip(x, c)[None, ..., None], roi, 0.5,
                                          "constant")[0], c) for c in _combos(axes)], axis=0)
    np.testing.assert_allclose(plain.probabilities, ref, rtol=0, atol=1e-6)


def test_flip_sets_are_every_combination_of_the_given_axes():
    assert flip_sets(False, 3) == [()]
    assert len(flip_sets(True, 3)) == 8 and len(set(flip_sets(True, 3))) == 8
    assert flip_sets((2, 0), 3) == [(), (2,), (0,), (2, 0)]
    assert flip_sets(1, 2) == [(), (1,)]
    for bad in ((0, 0), (3,), ("z",), (True,)):
        with pytest.raises(InvalidArgumentError, match="tta_flips"):
            flip_sets(bad, 3)


def _one_hot(k):
    """A pointwise 'model' whose input holds the labels: one-hot probabilities of them."""
    return lambda w: np.eye(k, dtype=np.float32)[np.rint(w[..., 0]).astype(int)]


def _planted():
    v = np.zeros((10, 12, 12), np.int64)
    v[1:6, 1:7, 1:7] = 1  # class 1: a block ...
    v[8, 10, 10] = 1  # ... and a stray voxel
    v[6:9, 1:4, 1:4] = 2  # class 2: a block ...
    v[1:3, 10, 1] = 2  # ... and a stray pair
    return v


def test_largest_component_removes_planted_small_components():
    v = _planted()
    run = lambda **kw: segment(_one_hot(3), v[..., None].astype("float32"), (6, 6, 6),  # noqa: E731
                               blend="constant", **kw).labels
    np.testing.assert_array_equal(run(), v)
    clean = v.copy()
    clean[8, 10, 10] = 0
    np.testing.assert_array_equal(run(largest_component=[1]), clean)
    clean[1:3, 10, 1] = 0
    np.testing.assert_array_equal(run(largest_component=True), clean)
    np.testing.assert_array_equal(run(largest_component=True, tta_flips=True), clean)


def test_connectivity_full_by_default_faces_with_1():
    v = np.zeros((8, 8, 8), np.float32)
    v[1:4, 1:4, 1:4] = 1
    v[4:6, 4:6, 4:6] = 1  # touches the first cube at one corner only
    x = v[..., None]
    kept = segment(_one_hot(2), x, 8, largest_component=True).labels
    np.testing.assert_array_equal(kept, v)
    for connectivity in (1, 2):
        faces = segment(_one_hot(2), x, 8, largest_component=True, connectivity=connectivity)
        assert faces.labels.sum() == 27 and faces.labels[1:4, 1:4, 1:4].all()
    with pytest.raises(InvalidArgumentError, match="connectivity=4"):
        segment(_one_hot(2), x, 8, connectivity=4)


def test_thresholds_one_channel_and_multi_label():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (16, 18, 1)).astype("float32")
    seg = segment(lambda w: w, x, (8, 8), threshold=0.3)
    np.testing.assert_array_equal(seg.labels, x[..., 0] >= 0.3)
    v = _planted()
    two = lambda w: np.stack([np.rint(w[..., 0]) == 1, np.rint(w[..., 0]) == 2], -1).astype("float32")  # noqa: E731
    multi = segment(two, v[..., None].astype("float32"), 6, threshold=0.5, largest_component=[0])
    assert multi.labels.shape == (*v.shape, 2)
    np.testing.assert_array_equal(multi.labels[..., 1], v == 2)  # channel 1 untouched
    assert multi.labels[..., 0].sum() == (v == 1).sum() - 1 and not multi.labels[8, 10, 10, 0]


def test_logits_need_an_activation():
    x = np.random.default_rng(1).normal(0, 2, (12, 12, 1)).astype("float32")
    logits = lambda w: np.concatenate([w, -w], -1)  # noqa: E731
    with pytest.raises(InvalidArgumentError, match="activation='softmax'"):
        segment(logits, x, 6)
    seg = segment(logits, x, 6, activation="softmax", tta_flips=True)
    np.testing.assert_allclose(seg.probabilities[..., 0], 1 / (1 + np.exp(-2 * x[..., 0])), atol=1e-6)
    one = segment(lambda w: w, x, 6, activation="sigmoid")
    np.testing.assert_allclose(one.probabilities[..., 0], 1 / (1 + np.exp(-x[..., 0])), atol=1e-6)
    np.testing.assert_array_equal(one.labels, x[..., 0] >= 0)
    with pytest.raises(UnknownNameError, match="Did you mean 'softmax'"):
        segment(logits, x, 6, activation="softmx")


def test_bad_input_names_the_cause():
    model = _conv_net(3, 0, symmetric=True)
    with pytest.raises(InputShapeError, match="without a batch axis"):
        segment(model, np.zeros((1, 8, 8, 8, 1)), 8)
    with pytest.raises(InputShapeError, match="larger than the image"):
        segment(model, np.zeros((6, 8, 8)), 8)
    with pytest.raises(InputShapeError, match="channel axis"):
        segment(lambda w: w, np.zeros((8, 8)), 4)
    with pytest.raises(InvalidArgumentError, match=r"foreground classes among \[1, 2\]"):
        segment(_one_hot(3), np.zeros((8, 8, 1), "float32"), 4, largest_component=[3])
    with pytest.raises(InvalidArgumentError, match=r"foreground classes among \[1\]"):
        segment(_one_hot(2), np.zeros((8, 8, 1), "float32"), 4, largest_component=0)
