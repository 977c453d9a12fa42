"""FixMatch's strong augmentation (zoo.semi.augment): each RandAugment operation against its numpy
formula, the geometric maps against their matrices, cutout's size, the grey range kept, repeatable
draws."""

from __future__ import annotations

import numpy as np
import pytest

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
