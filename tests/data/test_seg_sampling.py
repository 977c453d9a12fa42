"""Samplers against numpy references: windows equal slices of the volume (np.pad for padded and
replicated edges), foreground oversampling hits the rate it promises, centre labels are the
labels of the centre voxels, bad cases are refused with the case named."""

from __future__ import annotations

import numpy as np
import pytest

from zoo.data.seg_sampling import (
    SAMPLERS,
    CentreSampler,
    PatchSampler,
    make_case,
    make_sampler,
)
from zoo.errors import DataError, InvalidArgumentError, UnknownNameError

SHAPE = (16, 32, 32)
LESION = (slice(5, 8), slice(20, 23), slice(3, 6))  # 3x3x3 voxels near a border


def lesion_case(channels=1, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.normal(0, 1, (*SHAPE, channels)).astype(np.float32)
    mask = np.zeros(SHAPE, np.int32)
    mask[LESION] = 1
    image[LESION] += 5
    return make_case(image, mask, "lesion")


def share_of_uniform_patches_with_lesion(size):
    """Exact: the fraction of all patch positions inside the volume whose window meets the lesion."""
    share = 1.0
    for n, s, sl in zip(SHAPE, size, LESION):
        starts = np.arange(n - s + 1)
        share *= np.mean((starts < sl.stop) & (starts + s > sl.start))
    return share


@pytest.mark.parametrize("fg_fraction", [0.0, 0.5])
def test_foreground_oversampling_rate(fg_fraction):
    case, size, n = lesion_case(), (8, 8, 8), 600
    sampler = PatchSampler(size, fg_fraction=fg_fraction)
    rng = np.random.default_rng(1)
    draws = [sampler.draw(case, rng) for _ in range(n)]
    hit = np.mean([(s.mask > 0).any() for s in draws])
    p0 = share_of_uniform_patches_with_lesion(size)
    expected = fg_fraction + (1 - fg_fraction) * p0
    margin = 4 * np.sqrt(expected * (1 - expected) / n)
    print(f"fg_fraction={fg_fraction}: {hit:.3f} of patches hold lesion (expected {expected:.3f}, "
          f"uniform share {p0:.3f})")
    assert abs(hit - expected) <= margin
    if fg_fraction:
        assert hit >= fg_fraction
    for s in draws:
        assert s.image.shape == (*size, 1) and s.mask.shape == size
        assert all(0 <= a <= n_ - k for a, n_, k in zip(s.start, SHAPE, size))  # inside the volume
        window = tuple(slice(a, a + k) for a, k in zip(s.start, size))
        np.testing.assert_array_equal(s.image, case.image[window])
        if s.foreground:
            assert case.mask[s.centre] == 1  # drawn around a labelled voxel ...
            assert all(a <= c < a + k for a, c, k in zip(s.start, s.centre, size))  # ... inside


def test_per_class_mode_gives_small_classes_their_share():
    mask = np.zeros(SHAPE, np.int32)
    mask[:, :16] = 1  # a big class
    mask[LESION] = 2  # a small one
    case = make_case(np.zeros(SHAPE), mask)
    rng = np.random.default_rng(0)
    for mode, lo, hi in (("any", 0.0, 0.02), ("per_class", 0.4, 0.6)):
        sampler = PatchSampler((4, 4, 4), fg_fraction=1.0, fg_mode=mode)
        centres = [case.mask[sampler.draw(case, rng).centre] for _ in range(400)]
        assert 0 not in centres
        assert lo <= np.mean(np.array(centres) == 2) <= hi, mode


@pytest.mark.parametrize("size", [(5, 7), (3, 5, 5)], ids=["2d", "3d"])
def test_centre_patches_and_labels_equal_padded_reference(size):
    case = lesion_case(channels=2)
    rng = np.random.default_rng(2)
    sampler = CentreSampler(size, fg_fraction=0.5)
    full = size if len(size) == 3 else (1, *size)
    pad = [(k // 2, k - 1 - k // 2) for k in full]
    fill = case.image.reshape(-1, 2).min(axis=0)
    padded = np.stack([np.pad(case.image[..., c], pad, constant_values=fill[c]) for c in range(2)], -1)
    padded_mask = np.pad(case.mask, pad)
    for _ in range(100):
        s = sampler.draw(case, rng)
        window = tuple(slice(c, c + k) for c, k in zip(s.centre, full))  # padded coordinates
        ref, ref_mask = padded[window], padded_mask[window]
        if len(size) == 2:
            ref, ref_mask = ref[0], ref_mask[0]
        np.testing.assert_array_equal(s.image, ref)
        np.testing.assert_array_equal(s.mask, ref_mask)
        assert sampler.target(s.mask) == case.mask[s.centre]


def test_balanced_centre_labels():
    mask = np.zeros(SHAPE, np.int32)
    mask[LESION] = 1
    mask[10:12, 10:12, 10:12] = 2
    case = make_case(np.zeros(SHAPE), mask)
    sampler = make_sampler("centre", patch_size=(5, 5), balance=True)
    rng = np.random.default_rng(3)
    labels = [int(sampler.target(sampler.draw(case, rng).mask)) for _ in range(600)]
    counts = np.bincount(labels, minlength=3) / 600
    assert np.all(np.abs(counts - 1 / 3) < 0.07), counts  # uniform over 0, 1, 2 (0.2% of voxels)


def test_multilabel_centre_label_is_the_channel_vector():
    mask = np.zeros((*SHAPE, 2), np.uint8)
    mask[LESION + (0,)] = 1
    mask[LESION[0], LESION[1], slice(4, 8), 1] = 1  # overlapping labels
    case = make_case(np.zeros(SHAPE), mask)
    assert case.multilabel and case.classes() == [0, 1]
    sampler = CentreSampler((3, 3, 3), fg_fraction=1.0, fg_mode="per_class")
    rng = np.random.default_rng(4)
    for _ in range(30):
        s = sampler.draw(case, rng)
        np.testing.assert_array_equal(sampler.target(s.mask), mask[s.centre])
        assert mask[s.centre].any()


def test_slice_and_stack_samplers_against_numpy():
    case = lesion_case(channels=2)
    rng = np.random.default_rng(5)
    s = make_sampler("slice").draw(case, rng)
    z = s.start[0]
    np.testing.assert_array_equal(s.image, case.image[z])
    np.testing.assert_array_equal(s.mask, case.mask[z])
    stack = make_sampler("2.5d", stack=5, patch_size=(8, 8), fg_fraction=1.0)
    edge = np.pad(case.image, [(2, 2), (0, 0), (0, 0), (0, 0)], mode="edge")  # replicated ends
    seen = set()
    for _ in range(40):
        s = stack.draw(case, rng)
        z, y, x = s.start
        seen.add(z)
        ref = edge[z:z + 5, y:y + 8, x:x + 8]  # edge index z + 2 is slice z
        np.testing.assert_array_equal(s.image, np.moveaxis(ref, 0, 2).reshape(8, 8, 10))
        np.testing.assert_array_equal(s.image[..., 4:6], case.image[z, y:y + 8, x:x + 8])
        np.testing.assert_array_equal(s.mask, case.mask[z, y:y + 8, x:x + 8])
        assert s.mask.any()  # fg_fraction=1: every window holds lesion
    assert seen <= {5, 6, 7}
    edge_case = make_case(np.arange(4.0)[:, None, None] * np.ones((4, 3, 3)), np.zeros((4, 3, 3)))
    first = make_sampler("2.5d", stack=3).draw(edge_case, np.random.default_rng(0))
    z = first.start[0]
    assert first.image[0, 0].tolist() == [max(z - 1, 0), z, min(z + 1, 3)]


def test_seeded_draws_repeat():
    case = lesion_case()
    for name, options in (("patch", {"patch_size": (4, 8, 8), "fg_fraction": 0.5}),
                          ("centre", {"patch_size": (5, 5), "balance": True}),
                          ("2.5d", {}), ("slice", {"fg_fraction": 0.3})):
        sampler = make_sampler(name, **options)
        a = [sampler.draw(case, np.random.default_rng(9)) for _ in range(3)]
        b = [sampler.draw(case, np.random.default_rng(9)) for _ in range(3)]
        for x, y in zip(a, b):
            assert x.centre == y.centre
            np.testing.assert_array_equal(x.image, y.image)


def test_bad_cases_and_options():
    case = lesion_case()
    with pytest.raises(DataError, match=r"lesion: the volume is \(16, 32, 32\).*\(20, 8, 8\).*pad"):
        PatchSampler((20, 8, 8)).draw(case, np.random.default_rng(0))
    with pytest.raises(DataError, match=r"smaller patch_size"):
        make_sampler("slice", patch_size=(40, 8)).check(case)
    CentreSampler((41, 41)).draw(case, np.random.default_rng(0))  # centre patches pad instead
    with pytest.raises(DataError, match=r"case 7: the mask has shape \(16, 32, 31\).*\(16, 32, 32, 1\)"):
        make_case(np.zeros(SHAPE), np.zeros((16, 32, 31)), "case 7")
    with pytest.raises(DataError, match="non-integer"):
        make_case(np.zeros(SHAPE), np.full(SHAPE, 0.5))
    with pytest.raises(DataError, match=r"outside the declared classes \(0..1\)"):
        make_case(np.zeros(SHAPE), np.full(SHAPE, 2), num_classes=2)
    with pytest.raises(DataError, match="multilabel=True"):
        make_case(np.zeros(SHAPE), np.zeros((*SHAPE, 3)), multilabel=False)
    with pytest.raises(DataError, match="0/1 per channel"):
        make_case(np.zeros(SHAPE), np.full((*SHAPE, 2), 3))
    with pytest.raises(DataError, match=r"\(1, H, W\)"):
        make_case(np.zeros((32, 32)), np.zeros((32, 32)))
    assert make_case(np.zeros((*SHAPE, 1)), np.ones((*SHAPE, 1), np.float32)).mask.shape == SHAPE
    with pytest.raises(UnknownNameError, match="Did you mean 'centre'"):
        make_sampler("center")
    assert set(SAMPLERS) == {"slice", "2.5d", "patch", "centre"}
    with pytest.raises(InvalidArgumentError, match="no option 'stack'"):
        make_sampler("patch", stack=3)
    with pytest.raises(InvalidArgumentError, match="fg_fraction"):
        make_sampler("patch", fg_fraction=1.5)
    with pytest.raises(InvalidArgumentError, match="fg_mode"):
        make_sampler("patch", fg_mode="each")
    with pytest.raises(InvalidArgumentError, match="odd"):
        make_sampler("2.5d", stack=4)
    with pytest.raises(InvalidArgumentError, match="patch_size"):
        make_sampler("patch", patch_size=(8, 8))
    with pytest.raises(InvalidArgumentError, match="sampler object"):
        make_sampler(PatchSampler(), patch_size=(4, 4, 4))


def test_case_without_foreground_falls_back_to_uniform():
    case = make_case(np.zeros(SHAPE), np.zeros(SHAPE))
    s = PatchSampler((4, 4, 4), fg_fraction=1.0).draw(case, np.random.default_rng(0))
    assert not s.foreground and s.mask.shape == (4, 4, 4)
    s = CentreSampler((3, 3), balance=True).draw(case, np.random.default_rng(0))
    assert CentreSampler((3, 3)).target(s.mask) == 0
