"""FixMatch's strong augmentation (zoo.semi.augment): each RandAugment operation against its numpy
formula, the geometric maps against their matrices, cutout's size, the grey range kept, repeatable
draws."""

from __future__ import annotations

import numpy as np
import pytest

from zoo.errors import InvalidArgumentError
from zoo.semi import augment as A


def _images(n=5, size=16, seed=0):
    import tensorflow as tf

    x = np.random.default_rng(seed).uniform(20, 220, (n, size, size, 1)).astype(np.float32)
    return x, tf.constant(x)


def test_intensity_operations_follow_their_formulas():
    import tensorflow as tf

    x, tx = _images()
    u = np.linspace(0.1, 0.9, len(x)).astype(np.float32)
    got = [np.asarray(c) for c in A.intensity_candidates(tx, tf.constant(u), tf.constant([1, 2]))]
    lo, hi = x.min((1, 2, 3), keepdims=True), x.max((1, 2, 3), keepdims=True)
    mean = x.mean((1, 2, 3), keepdims=True)

    def mag(op):
        a, b = A.STRONG[op]
        return (a + (b - a) * u)[:, None, None, None]

    unit = (x - lo) / (hi - lo)
    levels = 2.0 ** np.round(mag("posterize")) - 1
    want = {"identity": x, "gamma": lo + (hi - lo) * unit ** mag("gamma"),
            "brightness": lo + (x - lo) * mag("brightness"),
            "contrast": mean + (x - mean) * mag("contrast"),
            "posterize": lo + (hi - lo) * np.round(unit * levels) / levels}
    for op, value in want.items():
        np.testing.assert_allclose(got[A._INTENSITY.index(op)], np.clip(value, lo, hi),
                                   rtol=1e-4, atol=1e-3, err_msg=op)
    for c in got:  # every operation stays inside each image's own grey range
        assert np.all(c >= lo - 1e-4) and np.all(c <= hi + 1e-4)


@pytest.mark.parametrize("op", ["rotate", "shear_x", "shear_y", "translate_x", "identity"])
def test_geometric_maps_are_the_drawn_operation_only(op):
    import tensorflow as tf

    u = np.array([0.8], np.float32)
    index = tf.constant([list(A.STRONG).index(op)])
    t = np.asarray(A.geometric_transforms(index, tf.constant(u), 16.0, 16.0))[0]
    a, b = A.STRONG[op]
    m = a + (b - a) * u[0]
    matrix = {"rotate": [[np.cos(np.radians(m)), -np.sin(np.radians(m))],
                         [np.sin(np.radians(m)), np.cos(np.radians(m))]],
              "shear_x": [[1, m], [0, 1]], "shear_y": [[1, 0], [m, 1]]}.get(op, np.eye(2))
    np.testing.assert_allclose(t[[0, 1, 3, 4]], np.ravel(matrix), atol=1e-6)
    centre = np.array([7.5, 7.5])
    shift = (centre - np.asarray(matrix) @ centre) + ([m * 16, 0] if op == "translate_x" else 0)
    np.testing.assert_allclose(t[[2, 5]], shift, atol=1e-4)


def test_cutout_square_at_most_half_the_side_set_to_the_mean():
    import tensorflow as tf

    x, tx = _images(n=64, seed=1)
    out = np.asarray(A.cutout(tx, tf.constant([3, 4], tf.int64)))
    changed = (out != x).reshape(64, -1).sum(1)
    assert changed.max() <= 8 * 8 and changed.min() >= 0
    assert len(set(changed.tolist())) > 5  # the side is drawn per image
    for k in range(64):
        np.testing.assert_allclose(out[k][out[k] != x[k]], x[k].mean(), rtol=1e-5)


def test_strong_keeps_the_range_and_repeats_with_its_seed():
    import tensorflow as tf

    x, tx = _images(n=32, seed=2)
    seed = tf.constant([5, 6], tf.int64)
    a, b = np.asarray(A.strong(tx, seed)), np.asarray(A.strong(tx, seed))
    np.testing.assert_array_equal(a, b)
    lo, hi = x.min((1, 2, 3), keepdims=True), x.max((1, 2, 3), keepdims=True)
    assert np.all(a >= lo - 1e-3) and np.all(a <= hi + 1e-3)
    other = np.asarray(A.strong(tx, tf.constant([5, 7], tf.int64)))
    assert not np.array_equal(a, other)


def _matches(out, image, shift: int = 2, inner=slice(3, 13)):
    """Whether the inside of ``out`` is ``image`` moved by some integer shift of at most
    ``shift`` pixels (numpy indexing, away from the borders the fill mode decides)."""
    rows = np.arange(16)[inner]
    for dy in range(-shift, shift + 1):
        for dx in range(-shift, shift + 1):
            if np.allclose(out[inner, inner], image[np.ix_(rows - dy, rows - dx)], atol=1e-3):
                return True
    return False


@pytest.mark.parametrize("draw", [0, 1])
def test_weak_view_mirrors_only_with_flip(draw):
    """flip=False (FixMatch's default): every weak view is a shifted copy of the image itself,
    never of its mirror; flip=True: about half are mirrored shifted copies."""
    import tensorflow as tf

    x, tx = _images(n=64, seed=4)
    seed = tf.constant([8 + draw, 9], tf.int64)
    plain = np.asarray(A.weak(tx, seed, flip=False))[..., 0]
    mirrored = np.asarray(A.weak(tx, seed, flip=True))[..., 0]
    images = x[..., 0]
    assert all(_matches(plain[k], images[k]) for k in range(64))
    assert not any(_matches(plain[k], images[k, :, ::-1]) for k in range(64))
    flipped = [_matches(mirrored[k], images[k, :, ::-1]) for k in range(64)]
    kept = [_matches(mirrored[k], images[k]) for k in range(64)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True))
    assert 16 <= sum(flipped) <= 48


def test_strong_view_takes_the_flip_choice():
    """The strong view starts from the weak one with the same flip choice: its weak stage never
    mirrors without flip, and the choice changes the strong view."""
    import tensorflow as tf

    x, tx = _images(n=32, seed=5)
    seed = tf.constant([3, 1], tf.int64)
    s_weak = A._seeds(seed, 3)[0]
    stage = np.asarray(A.weak(tx, s_weak, flip=False))[..., 0]
    assert not any(_matches(stage[k], x[k, :, ::-1, 0]) for k in range(32))
    a = np.asarray(A.strong(tx, seed, flip=False))
    b = np.asarray(A.strong(tx, seed, flip=True))
    assert not np.array_equal(a, b)  # the flip choice reaches the strong view


def test_fixmatch_flip_must_be_a_bool():
    import keras

    from zoo.semi.methods import METHODS

    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(2, activation="softmax")])
    with pytest.raises(InvalidArgumentError, match="flip='yes': give True"):
        METHODS["fixmatch"].task(model, num_classes=2, flip="yes")
    assert METHODS["fixmatch"].task(model, num_classes=2).flip is False
