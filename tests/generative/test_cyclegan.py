"""CycleGAN's cycle and identity terms with linear generators (a * x and x / a are inverses), and
the image pool's behaviour."""

from __future__ import annotations

import numpy as np
import pytest

from zoo.errors import InvalidArgumentError


def _scale(factor, shape=(8, 8, 1)):
    import keras

    x = keras.Input(shape)
    return keras.Model(x, keras.layers.Rescaling(factor)(x))


@pytest.fixture(scope="module")
def discs():
    import zoo

    return [zoo.load("patchgan", input_shape=(8, 8, 1), include_top=True, num_classes=1,
                     n_layers=1, base_filters=2) for _ in range(2)]


def test_cycle_loss_is_zero_for_inverse_generators_and_the_formula_otherwise(discs):
    from zoo.generative.cyclegan import CycleGANTask

    rng = np.random.default_rng(0)
    a, b = (rng.normal(size=(3, 8, 8, 1)).astype(np.float32) for _ in range(2))
    inverse = CycleGANTask(_scale(3.0), _scale(1 / 3.0), *discs, pool_size=0)
    fake_a, fake_b, cyc = inverse.cycle(a, b)
    np.testing.assert_allclose(np.asarray(fake_b), 3 * a, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(cyc), 0.0, atol=1e-6)
    np.testing.assert_allclose(  # identity: |3b - b| + |a/3 - a| per example
        np.asarray(inverse.identity(a, b)),
        (np.abs(2 * b).mean(axis=(1, 2, 3)) + np.abs(2 / 3 * a).mean(axis=(1, 2, 3))),
        rtol=1e-5)
    off = CycleGANTask(_scale(3.0), _scale(0.5), *discs, pool_size=0)  # g_ba(g_ab(x)) = 1.5 x
    _, _, cyc = off.cycle(a, b)
    want = 0.5 * np.abs(a).mean(axis=(1, 2, 3)) + 0.5 * np.abs(b).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(np.asarray(cyc), want, rtol=1e-5)


def _images(ids):
    return np.asarray(ids, np.float32).reshape(-1, 1, 1, 1) * np.ones((1, 2, 2, 1), np.float32)


def _ids(batch):
    return [int(v) for v in np.asarray(batch)[:, 0, 0, 0]]


def test_image_pool_fills_then_swaps_half_the_time():
    from zoo.generative.cyclegan import ImagePool, pool_array

    pool = ImagePool(4, (2, 2, 1), seed=0)
    assert _ids(pool(_images([1, 2, 3]))) == [1, 2, 3]  # filling: returned as they are
    assert sorted(_ids(pool_array(pool))) == [1, 2, 3]
    assert _ids(pool(_images([4]))) == [4]
    swaps = 0
    for new in range(5, 65):  # full: each image is returned, or swapped for a stored one
        before = set(_ids(pool_array(pool)))
        (got,) = _ids(pool(_images([new])))
        after = _ids(pool_array(pool))
        assert len(after) == 4 and int(pool.count) == 4
        if got == new:
            assert set(after) == before
        else:
            swaps += 1
            assert got in before and new in after and set(after) == before - {got} | {new}
    assert 15 <= swaps <= 45  # about half of 60 (seeded)


def test_image_pool_of_size_0_is_the_identity_and_sizes_are_checked():
    from zoo.generative.cyclegan import ImagePool

    batch = _images([7, 8])
    np.testing.assert_array_equal(np.asarray(ImagePool(0, (2, 2, 1))(batch)), batch)
    with pytest.raises(InvalidArgumentError, match="pool_size"):
        ImagePool(-1, (2, 2, 1))
    with pytest.raises(InvalidArgumentError, match="fixed image sizes"):
        ImagePool(3, (None, None, 1))
