"""zoo.data.synthetic_dicom: the lesion CT generator and writing a given volume as a series."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

import zoo
from zoo.data.synthetic_dicom import lesion_ct, write_ct_series
from zoo.errors import InvalidArgumentError


def test_lesion_ct_is_seeded_and_its_lesions_have_the_stated_contrast():
    hu, labels = lesion_ct((16, 48, 40), (2.0, 1.0, 1.0), seed=(4, 2), lesions=(2, 3), contrast_hu=(60.0, 60.0),
                           noise_hu=5.0)
    again = lesion_ct((16, 48, 40), (2.0, 1.0, 1.0), seed=(4, 2), lesions=(2, 3), contrast_hu=(60.0, 60.0),
                      noise_hu=5.0)
    np.testing.assert_array_equal(hu, again[0])
    np.testing.assert_array_equal(labels, again[1])
    assert hu.dtype == np.int16 and labels.dtype == np.uint8 and set(np.unique(labels)) == {0, 1}
    assert hu.shape == labels.shape == (16, 48, 40) and -1024 <= hu.min() and hu.max() <= 3071
    assert not np.array_equal(labels, lesion_ct((16, 48, 40), seed=(4, 3))[1])
    # each lesion sits in soft tissue, 60 HU above the tissue just outside it (organ edges and noise
    # blur the comparison by a few HU)
    components, n = ndimage.label(labels)
    assert 1 <= n <= 3
    assert hu[labels == 1].min() > 0
    for k in range(1, n + 1):
        lesion = components == k
        ring = ndimage.binary_dilation(lesion, iterations=2) & ~ndimage.binary_dilation(labels == 1) & (hu > -200)
        assert abs(np.median(hu[lesion]) - np.median(hu[ring]) - 60.0) < 20.0


def test_lesion_ct_radius_is_in_mm():
    """A single lesion of semi-axes fixed at 6 mm around a voxel centre: +-6 voxels in-plane, +-3 slices
    at 2 mm (boundary voxels included)."""
    _, labels = lesion_ct((24, 48, 48), (2.0, 1.0, 1.0), seed=1, lesions=(1, 1), radius_mm=(6.0, 6.0))
    z, y, x = np.nonzero(labels)
    assert (z.max() - z.min() + 1, y.max() - y.min() + 1, x.max() - x.min() + 1) == (7, 13, 13)


def test_a_given_volume_is_written_exactly(tmp_path):
    hu, _ = lesion_ct((8, 24, 40), (2.0, 1.0, 1.0), seed=0)
    series = write_ct_series(tmp_path / "s", volume=hu, pixel_spacing=(1.0, 1.0), slice_spacing=2.0)
    assert len(series.paths) == 8
    volume = zoo.load_series(tmp_path / "s")
    np.testing.assert_array_equal(volume.array, hu)  # rows 24, columns 40: not transposed
    np.testing.assert_allclose(volume.spacing, (2.0, 1.0, 1.0))


@pytest.mark.parametrize("bad", [np.full((4, 8, 8), 10.5), np.full((4, 8, 8), -2000), np.zeros((8, 8))])
def test_a_volume_storage_cannot_hold_is_refused(tmp_path, bad):
    with pytest.raises(InvalidArgumentError, match="volume"):
        write_ct_series(tmp_path / "s", volume=bad)
    assert not (tmp_path / "s").exists()


def test_lesion_ct_refuses_a_bad_shape():
    with pytest.raises(InvalidArgumentError, match="shape"):
        lesion_ct((4, 64, 64))
