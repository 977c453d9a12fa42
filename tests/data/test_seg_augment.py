"""Augmentation moves image and mask together: exactly for flips, 90-degree rotations and integer
shifts (checked against np.flip / np.rot90 / np.roll), and to within interpolation for affine and
elastic warps (Dice of the thresholded image against the warped mask)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.ndimage import gaussian_filter

from zoo.data.seg_augment import (
    TRANSFORMS,
    Affine,
    Elastic,
    Flip,
    Intensity,
    Rot90,
    SegAugment,
    Shift,
    make_transform,
    shift_array,
    tf_augment,
)
from zoo.errors import DataError, InvalidArgumentError, UnknownNameError


def f(mask):
    """The image as a function of the mask, so alignment is checked voxel by voxel."""
    return (mask * 10 + 3).astype(np.float32)


@st.composite
def pairs(draw):
    """(image (…, C), integer mask (…)) or (image, multi-label mask (…, K)), 2D or 3D, image = f."""
    nd = draw(st.sampled_from([2, 3]))
    shape = tuple(draw(st.lists(st.integers(1, 6), min_size=nd, max_size=nd)))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    multilabel = draw(st.booleans())
    if multilabel:
        mask = rng.integers(0, 2, (*shape, 2)).astype(np.uint8)
        mask.reshape(-1, 2)[0] = 0  # every channel holds a 0: its minimum is the shift's fill
        image = np.concatenate([f(mask[..., :1]), f(mask[..., 1:]) + 1], axis=-1)
    else:
        mask = rng.integers(0, 4, shape).astype(np.int32)
        mask.flat[0] = 0
        image = np.stack([f(mask), f(mask) * 2], axis=-1)
    return image, mask, seed


def image_of(mask):
    if mask.dtype == np.uint8:  # multi-label: one channel per label channel
        return np.concatenate([f(mask[..., :1]), f(mask[..., 1:]) + 1], axis=-1)
    return np.stack([f(mask), f(mask) * 2], axis=-1)


@settings(max_examples=40)
@given(pairs())
def test_flip_rot90_shift_keep_image_and_mask_aligned_exactly(pair):
    image, mask, seed = pair
    policy = SegAugment([Flip(p=1.0), Rot90(p=1.0, planes="any"), Shift(p=1.0, max_shift=0.5)],
                        seed=seed)
    out_image, out_mask = policy(image, mask, seed=1)
    assert out_image.shape == image.shape and out_mask.shape == mask.shape
    assert out_mask.dtype == mask.dtype
    np.testing.assert_array_equal(out_image, image_of(out_mask))


@settings(max_examples=40)
@given(pairs())
def test_flip_and_rot90_equal_numpy_references(pair):
    image, mask, seed = pair
    nd = image.ndim - 1
    rng = np.random.default_rng(seed)
    out_image, out_mask = Flip(p=1.0).apply(image, mask, rng)
    subsets = [s for r in range(nd + 1) for s in itertools.combinations(range(nd), r)]
    hits = [s for s in subsets if np.array_equal(out_mask, np.flip(mask, s))
            and np.array_equal(out_image, np.flip(image, s))]
    assert hits, "the flip is no np.flip of the mask and image along the same axes"

    out_image, out_mask = Rot90(p=1.0, planes="any").apply(image, mask, rng)
    planes = [(0, 1)] if nd == 2 else [(0, 1), (0, 2), (1, 2)]
    allowed = [(k, p) for p in planes for k in ((1, 2, 3) if image.shape[p[0]] == image.shape[p[1]] else (2,))]
    hits = [(k, p) for k, p in allowed if np.array_equal(out_mask, np.rot90(mask, k, p))
            and np.array_equal(out_image, np.rot90(image, k, p))]
    assert hits, "the rotation is no np.rot90 of the mask and image in the same plane"


@settings(max_examples=40)
@given(pairs(), st.data())
def test_shift_equals_np_roll_where_nothing_wrapped(pair, data):
    image, mask, _ = pair
    nd = image.ndim - 1
    shifts = [data.draw(st.integers(-n - 1, n + 1)) for n in image.shape[:nd]]
    out = shift_array(image, shifts, fill=-1.0)
    out_mask = shift_array(mask, shifts, fill=0)
    rolled, rolled_mask = np.roll(image, shifts, tuple(range(nd))), np.roll(mask, shifts, tuple(range(nd)))
    valid = np.ones(image.shape[:nd], bool)
    for axis, (s, n) in enumerate(zip(shifts, image.shape)):
        index = np.arange(n).reshape([-1 if a == axis else 1 for a in range(nd)])
        valid &= (index >= s) & (index < n + s) if s >= 0 else (index < n + s)
    np.testing.assert_array_equal(out[valid], rolled[valid])
    np.testing.assert_array_equal(out_mask[valid], rolled_mask[valid])
    assert (out[~valid] == -1.0).all() and (out_mask[~valid] == 0).all()


# ---------------------------------------------------------------------------------------------
# affine and elastic: Dice(threshold(warped image), warped mask)


def dice(a, b):
    a, b = a.astype(bool), b.astype(bool)
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def blobs(shape, seed, sigma=4.0):
    """Smooth random intensities in [0, 1] and their threshold at 0.5 as the label map."""
    g = gaussian_filter(np.random.default_rng(seed).standard_normal(shape), sigma)
    g = (g - g.min()) / (g.max() - g.min())
    t = np.quantile(g, 0.6)
    return g[..., None].astype(np.float32), (g > t).astype(np.int32), t


@pytest.mark.parametrize("shape", [(48, 48), (16, 32, 32)], ids=["2d", "3d"])
@pytest.mark.parametrize("transform", [
    Affine(p=1.0, rotate=25.0, scale=(0.8, 1.2), shear=0.1, planes="any"),
    Elastic(p=1.0, magnitude=2.0, sigma=4.0, planes="any"),
    Affine(p=1.0),
    Elastic(p=1.0),
], ids=["affine-strong", "elastic-any", "affine-default", "elastic-default"])
def test_affine_and_elastic_keep_alignment(shape, transform):
    """Nearest-neighbour masks differ from a thresholded linear image only at boundary voxels:
    the blobs (smoothed at 4 voxels) are a few voxels across, as small lesions are."""
    image, mask, t = blobs(shape, seed=len(shape))
    scores, moved = [], []
    for seed in range(5):
        out_image, out_mask = SegAugment([transform], seed=seed)(image, mask, seed=0)
        assert out_image.shape == image.shape and out_mask.dtype == mask.dtype
        assert set(np.unique(out_mask)) <= {0, 1}  # nearest neighbour: no label invented
        scores.append(dice(out_image[..., 0] > t, out_mask))
        moved.append(dice(out_mask, mask))
    print(f"{transform.name} {len(shape)}D: Dice(threshold(image), mask) min {min(scores):.4f}; "
          f"Dice(mask, unwarped mask) max {max(moved):.4f}")
    assert min(scores) >= 0.95
    assert max(moved) < 0.97  # the warp did move the labels


def test_multilabel_mask_channels_move_alike():
    image, mask, t = blobs((24, 24), seed=5)
    stack = np.stack([mask, 1 - mask], axis=-1).astype(np.uint8)
    for transform in (Affine(p=1.0, rotate=20.0), Elastic(p=1.0, magnitude=2.0)):
        out_image, out = SegAugment([transform], seed=3)(image, stack, seed=0)
        single = SegAugment([transform], seed=3)(image, mask, seed=0)[1]
        np.testing.assert_array_equal(out[..., 0], single)
        assert dice(out_image[..., 0] > t, out[..., 0]) >= 0.95


def test_affine_matrix_and_identity():
    m = Affine(rotate=0.0, scale=(2.0, 2.0), shear=0.0).matrix(3, np.random.default_rng(0))
    np.testing.assert_allclose(m, np.diag([1.0, 2.0, 2.0]))  # in-plane: the depth axis untouched
    r = Affine(rotate=30.0, scale=(1.0, 1.0), shear=0.0).matrix(2, np.random.default_rng(1))
    np.testing.assert_allclose(r @ r.T, np.eye(2), atol=1e-12)
    image, mask, _ = blobs((16, 16), seed=0)
    ident = Affine(p=1.0, rotate=0.0, scale=(1.0, 1.0), shear=0.0)
    out_image, out_mask = ident.apply(image, mask, np.random.default_rng(0))
    np.testing.assert_allclose(out_image, image, atol=1e-6)
    np.testing.assert_array_equal(out_mask, mask)


def test_elastic_field_rms_and_inplane():
    field = Elastic(magnitude=1.5, sigma=3.0).field((6, 20, 20), np.random.default_rng(0))
    assert (field[0] == 0).all()  # in-plane: no displacement across slices
    np.testing.assert_allclose(np.sqrt((field[1:] ** 2).mean(axis=(1, 2, 3))), [1.5, 1.5], rtol=1e-6)


def test_intensity_changes_the_image_only():
    image, mask, _ = blobs((16, 16), seed=1)
    out_image, out_mask = Intensity(p=1.0).apply(image, mask, np.random.default_rng(0))
    assert out_mask is mask and not np.allclose(out_image, image)
    gamma = Intensity(p=1.0, scale=None, shift=None, noise=None, gamma=(2.0, 2.0))
    out, _ = gamma.apply(image, mask, np.random.default_rng(0))
    lo, hi = image.min(), image.max()
    np.testing.assert_allclose(out, lo + (hi - lo) * ((image - lo) / (hi - lo)) ** 2, atol=1e-6)


def test_intensity_keeps_the_image_range_unless_told_not_to():
    """A [0, 255] image stays inside [its min, its max] (a model's input range check passes);
    without preserve_range a brightening scale leaves it."""
    image = np.linspace(0.0, 255.0, 256, dtype=np.float32).reshape(16, 16, 1)
    mask = np.zeros((16, 16), np.int32)
    brighter = {"scale": (1.2, 1.2), "shift": None, "gamma": None, "noise": 0.1}
    out, _ = Intensity(p=1.0, **brighter).apply(image, mask, np.random.default_rng(0))
    assert out.min() >= 0.0 and out.max() <= 255.0 and not np.allclose(out, image)
    free, _ = Intensity(p=1.0, preserve_range=False, **brighter).apply(
        image, mask, np.random.default_rng(0))
    assert free.max() > 300.0


def test_seeded_policy_is_deterministic():
    image, mask, _ = blobs((8, 16, 16), seed=2)
    policy = SegAugment(seed=4)  # the default transforms
    a = policy(image, mask, seed=7)
    b = SegAugment(seed=4)(image, mask, seed=7)
    c = SegAugment(seed=5)(image, mask, seed=7)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    r1 = policy.apply(image, mask, np.random.default_rng(3))
    r2 = policy.apply(image, mask, np.random.default_rng(3))
    np.testing.assert_array_equal(r1[0], r2[0])


def test_names_options_and_bad_input():
    policy = SegAugment(["flip", ("affine", {"rotate": 5.0}), ("elastic", 0.2), Intensity(p=0.1)])
    assert [t.name for t in policy.transforms] == ["flip", "affine", "elastic", "intensity"]
    assert policy.transforms[1].rotate == 5.0 and policy.transforms[2].p == 0.2
    mapped = SegAugment({"flip": 0.5, "affine": {"rotate": 5.0}}).transforms
    assert [(t.name, t.p) for t in mapped] == [("flip", 0.5), ("affine", 0.5)]
    assert set(TRANSFORMS) == {"flip", "rot90", "shift", "affine", "elastic", "intensity"}
    with pytest.raises(UnknownNameError, match="did you mean 'elastic'|Did you mean 'elastic'"):
        make_transform("elastc")
    with pytest.raises(InvalidArgumentError, match="no option 'alpha'"):
        make_transform(("elastic", {"alpha": 34}))
    with pytest.raises(InvalidArgumentError, match="probability"):
        Flip(p=1.5)
    with pytest.raises(InvalidArgumentError, match="planes"):
        Rot90(planes="sagittal")
    with pytest.raises(InvalidArgumentError, match="scale"):
        Affine(scale=(1.2, 0.8))
    with pytest.raises(DataError, match="spatial shape"):
        SegAugment(["flip"])(np.zeros((8, 8, 1)), np.zeros((8, 7)))
    with pytest.raises(DataError, match="channel axis"):
        SegAugment(["flip"])(np.zeros((8,)), np.zeros((8,)))


def test_tf_augment_restores_static_shapes_and_matches_numpy():
    import tensorflow as tf

    image, mask, _ = blobs((6, 12, 12), seed=3)
    policy = SegAugment(["flip", "rot90", "affine"], seed=2)
    ds = tf.data.Dataset.from_tensors((image, mask, np.int64(9))).map(tf_augment(policy))
    spec = ds.element_spec
    assert spec[0].shape == image.shape and spec[1].shape == mask.shape and spec[1].dtype == tf.int32
    out_image, out_mask = next(iter(ds))
    ref_image, ref_mask = policy(image, mask, seed=9)
    np.testing.assert_array_equal(out_image.numpy(), ref_image)
    np.testing.assert_array_equal(out_mask.numpy(), ref_mask)
