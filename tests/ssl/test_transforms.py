"""Data side of the pretext tasks: numpy properties checked against hand computations."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zoo.data.volumes import make_volumes
from zoo.errors import DataError, InvalidArgumentError
from zoo.ssl import transforms as T


def _images(n=3, size=8, chans=1, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, chans)).astype(np.float32)


def test_rotations_balanced_and_equal_np_rot90():
    images = _images(5)
    x, y = T.rotations(images)
    assert x.shape == (20, 8, 8, 1)
    assert np.bincount(y).tolist() == [5, 5, 5, 5]
    for i in range(20):
        k, j = y[i], i % 5
        np.testing.assert_array_equal(x[i], np.rot90(images[j], k))
    # a 90-degree rotation is counter-clockwise: the top row becomes the left column, read upwards
    np.testing.assert_array_equal(x[5][:, 0, 0], images[0][0, ::-1, 0])
    with pytest.raises(DataError, match="square"):
        T.rotations(np.zeros((2, 8, 6, 1)))


def test_inpaint_mask_center_and_random():
    rng = np.random.default_rng(0)
    m = T.inpaint_mask((2, 8, 8), rng, 0.5, "center")
    assert m.sum() == 2 * 16 and m[0, 2:6, 2:6].all()
    r = T.inpaint_mask((50, 8, 8), rng, 0.25, "random")
    assert (r.sum(axis=(1, 2)) == 4).all() and len({tuple(np.argwhere(x)[0]) for x in r}) > 1
    images = _images(2)
    masked = T.mask_images(images, m)
    np.testing.assert_allclose(masked[0, 3, 3, 0], images[0].mean(), rtol=1e-6)
    np.testing.assert_array_equal(masked[0, 0], images[0, 0])


def test_window():
    x = np.array([-10.0, 0.0, 50.0, 100.0, 300.0])
    np.testing.assert_allclose(T.window(x, 0, 100), [0, 0, 0.5, 1, 1])


def test_relative_position_tiles_are_the_labelled_neighbours():
    rng = np.random.default_rng(1)
    image = np.arange(20 * 20, dtype=np.float32).reshape(1, 20, 20, 1)
    centre, other, labels = T.relative_position(image.repeat(16, 0), patch=6, gap=1, rng=rng)
    grid = T.patch_grid(image[0], 6, 1, rng)
    np.testing.assert_array_equal(grid[4], image[0, 7:13, 7:13])  # the centre tile, no jitter
    for c, o, label in zip(centre, other, labels):
        np.testing.assert_array_equal(c, grid[4])
        np.testing.assert_array_equal(o, grid[T.NEIGHBOURS[label]])
    assert set(labels) <= set(range(8))


def test_jigsaw_permutations_distinct_and_far_apart_and_tiles_follow_them():
    perms = T.jigsaw_permutations(24)
    assert perms.shape == (24, 9) and len({tuple(p) for p in perms}) == 24
    assert all(sorted(p) == list(range(9)) for p in perms)
    dist = (perms[:, None] != perms[None]).sum(-1) + 9 * np.eye(24, dtype=int)
    assert dist.min() >= 5  # greedy max-Hamming: random pairs of 9-permutations are often closer
    image = np.arange(20 * 20, dtype=np.float32).reshape(1, 20, 20, 1)
    rng = np.random.default_rng(0)
    tiles, labels = T.jigsaw(image, perms, 6, 1, rng)
    grid = T.patch_grid(image[0], 6, 1, rng)
    for i in range(9):
        np.testing.assert_array_equal(tiles[0, i], grid[perms[labels[0]][i]])
    with pytest.raises(DataError):
        T.jigsaw_permutations(1)


def test_slice_order_labels_say_which_slice_is_higher():
    # a volume whose slice z is filled with the value z tells the order by its values
    vol = np.broadcast_to(np.arange(10, dtype=np.float32)[None, :, None, None, None], (3, 10, 4, 4, 1))
    a, b, y = T.slice_order_pairs(vol, np.random.default_rng(0), min_gap=2, count=200)
    za, zb = a[:, 0, 0, 0], b[:, 0, 0, 0]
    np.testing.assert_array_equal(y, (za > zb).astype(int))
    assert (np.abs(za - zb) >= 2).all() and 60 < y.sum() < 140
    with pytest.raises(DataError, match="deeper"):
        T.slice_order_pairs(vol[:, :2], np.random.default_rng(0))


def test_subject_pairs_balanced_and_correct():
    v = make_volumes(6, depth=4, size=16, subjects=np.array([0, 0, 1, 1, 2, 2]))
    # same subject, same anatomy: the two scans of a subject differ only by noise
    assert np.abs(v.volumes[0] - v.volumes[1]).mean() < np.abs(v.volumes[0] - v.volumes[2]).mean()
    tagged = np.broadcast_to(np.arange(6, dtype=np.float32)[:, None, None, None, None], (6, 4, 4, 4, 1))
    a, b, same = T.subject_pairs(tagged, v.subjects, np.random.default_rng(0), count=100)
    assert same.sum() == 50
    ida, idb = a[:, 0, 0, 0].astype(int), b[:, 0, 0, 0].astype(int)
    np.testing.assert_array_equal(same, (v.subjects[ida] == v.subjects[idb]).astype(int))
    assert (ida[same == 1] != idb[same == 1]).all()  # another scan of the subject when there is one
    with pytest.raises(DataError, match="two different subjects"):
        T.subject_pairs(tagged, np.zeros(6), np.random.default_rng(0))


def test_simclr_views_stay_in_range_and_differ():
    images = _images(4, 16)
    rng = np.random.default_rng(0)
    v1, v2 = T.simclr_views(images, rng), T.simclr_views(images, rng)
    assert v1.shape == images.shape and v1.min() >= 0 and v1.max() <= 255
    assert not np.allclose(v1, v2)
    same = T.simclr_views(images, rng, crop=(1.0, 1.0), flip=0.0, jitter=0.0, noise=0.0)
    np.testing.assert_allclose(same, images, atol=1e-4)  # every distortion off: the image itself


@settings(max_examples=25)  # derandomised, no deadline: the profile in tests/conftest.py
@given(seed=st.integers(0, 2**31), dims=st.sampled_from([2, 3]))
def test_genesis_keeps_range(seed, dims):
    rng = np.random.default_rng(seed)
    shape = (2, 8, 8, 1) if dims == 2 else (2, 6, 8, 8, 1)
    batch = rng.random(shape).astype(np.float32)
    x, y = T.genesis(batch, rng, flip=0.5, local_shuffle=1.0, nonlinear=1.0, paint=1.0, inpaint=0.5)
    assert x.shape == y.shape == shape and x.dtype == np.float32
    assert x.min() >= 0.0 and x.max() <= 1.0
    assert sorted(y.ravel().tolist()) == sorted(batch.ravel().tolist())  # the target is a flip of the input


def test_genesis_is_identity_at_probability_zero():
    rng = np.random.default_rng(0)
    batch = rng.random((3, 8, 8, 1)).astype(np.float32)
    x, y = T.genesis(batch, rng, flip=0, local_shuffle=0, nonlinear=0, paint=0)
    np.testing.assert_array_equal(x, batch)
    np.testing.assert_array_equal(y, batch)
    for fn in (T.nonlinear, T.local_pixel_shuffle, T.painting):
        np.testing.assert_array_equal(fn(batch[0], rng, 0.0), batch[0])


def test_each_genesis_transform_does_what_it_says():
    rng = np.random.default_rng(3)
    x = rng.random((16, 16, 1)).astype(np.float32)
    shuffled = T.local_pixel_shuffle(x, rng, 1.0)
    assert not np.array_equal(shuffled, x) and np.allclose(np.sort(shuffled.ravel()), np.sort(x.ravel()))
    ramp = np.linspace(0, 1, 101, dtype=np.float32)[:, None]
    curves = [T.nonlinear(ramp, np.random.default_rng(s), 1.0)[:, 0] for s in range(20)]
    assert all(abs(c[0] - ramp[0, 0]) < 1e-6 or abs(c[0] - 1) < 1e-6 for c in curves)  # ends map to ends
    assert any((np.diff(c) >= -1e-6).all() for c in curves) and any((np.diff(c) <= 1e-6).all() for c in curves)
    fx, fy = T.flips(x, x * 2, np.random.default_rng(0), prob=1.0)
    np.testing.assert_array_equal(fx, x[::-1, ::-1])
    np.testing.assert_array_equal(fy, 2 * x[::-1, ::-1])
    with pytest.raises(DataError, match="unknown Models Genesis"):
        T.genesis(x[None], rng, rotate=0.5)


def test_make_volumes_shape_range_and_anatomy():
    v = make_volumes(2, depth=16, size=32, seed=0)
    assert v.volumes.shape == (2, 16, 32, 32, 1) and v.volumes.dtype == np.float32
    assert v.volumes.min() >= 0 and v.volumes.max() <= 255
    vol = v.volumes[0, ..., 0]
    # dark lungs in the upper slices: the upper body is darker on average than the lower body
    assert vol[11:14].mean() < vol[2:5].mean()
    with pytest.raises(InvalidArgumentError):
        make_volumes(1, depth=2)
