"""Harmonisation baselines against independent references: histogram matching makes the empirical
CDFs equal (and agrees with scikit-image's match_histograms), z-scores have mean 0 / std 1 in the
mask, Otsu's threshold agrees with scikit-image's; bad input is a ZooError."""

from __future__ import annotations

import numpy as np
import pytest

from zoo.domain.harmonise import (
    foreground_mask,
    harmonise,
    match_histograms,
    otsu_threshold,
    standardise,
)
from zoo.errors import DataError, InvalidArgumentError, UnknownNameError


def _cdf(values, at):
    """The empirical CDF of ``values`` at the points ``at`` (a numpy reference)."""
    values = np.sort(np.ravel(values))
    return np.searchsorted(values, at, side="right") / values.size


def test_matched_image_has_the_reference_cdf():
    rng = np.random.default_rng(0)
    image = rng.gamma(2.0, 10.0, (24, 24)).round()  # ties: several pixels per grey value
    reference = rng.normal(100.0, 15.0, (10, 30)).round(1)
    out = match_histograms(image, reference)
    levels = np.unique(out)
    # the reference's CDF, linear between its grey values (the continuous CDF the mapping inverts)
    ref_levels = np.unique(reference)
    inside = levels[levels > ref_levels.min()]
    assert inside.size > 10
    ref_cdf = np.interp(inside, ref_levels, _cdf(reference, ref_levels))
    np.testing.assert_allclose(_cdf(out, inside), ref_cdf, atol=1e-9)
    # order is kept: a monotone map of the grey values
    order = np.argsort(image.ravel(), kind="stable")
    assert np.all(np.diff(out.ravel()[order]) >= 0)


def test_match_histograms_equals_scikit_image():
    exposure = pytest.importorskip("skimage.exposure")
    rng = np.random.default_rng(1)
    image, reference = rng.uniform(0, 255, (20, 17)), rng.beta(2, 5, (13, 11)) * 255
    np.testing.assert_allclose(match_histograms(image, reference),
                               exposure.match_histograms(image, reference), rtol=1e-12)


def test_mask_limits_the_mapping():
    rng = np.random.default_rng(2)
    image = rng.uniform(0, 1, (16, 16))
    mask = np.zeros_like(image, bool)
    mask[4:12, 4:12] = True
    out = match_histograms(image, rng.normal(5, 1, 500), mask=mask)
    np.testing.assert_array_equal(out[~mask], image[~mask])
    assert abs(out[mask].mean() - 5) < 0.5


def test_standardise_gives_mean_0_std_1_inside_the_mask():
    rng = np.random.default_rng(3)
    image = np.full((32, 32), 10.0)
    image[8:24, 6:26] = rng.normal(300, 40, (16, 20))
    mask = image > 100
    z = standardise(image, mask)
    assert z[mask].mean() == pytest.approx(0, abs=1e-12) and z[mask].std() == pytest.approx(1, abs=1e-12)
    # the default mask (Otsu) finds the same body here
    np.testing.assert_array_equal(foreground_mask(image), mask)
    np.testing.assert_allclose(standardise(image), z)


def test_otsu_equals_scikit_image():
    filters = pytest.importorskip("skimage.filters")
    rng = np.random.default_rng(4)
    image = np.concatenate([rng.normal(20, 5, 300), rng.normal(90, 10, 200)])
    assert otsu_threshold(image) == pytest.approx(filters.threshold_otsu(image), rel=1e-12)


def test_batch_harmonise_by_image_and_channel():
    rng = np.random.default_rng(5)
    images = rng.normal(50, 10, (3, 8, 8, 2))
    z = harmonise(images, "zscore", masks=np.ones((3, 8, 8), bool), scale=(128, 40))
    for i in range(3):
        for c in range(2):
            assert z[i, ..., c].mean() == pytest.approx(128, abs=1e-3)
            assert z[i, ..., c].std() == pytest.approx(40, abs=1e-3)
    reference = rng.normal(200, 5, (4, 8, 8, 2))
    h = harmonise(images, "histogram", reference=reference)
    np.testing.assert_allclose(h[1, ..., 0], match_histograms(images[1, ..., 0], reference[..., 0]), rtol=1e-6)
    np.testing.assert_array_equal(harmonise(images, "none"), images.astype(np.float32))


def test_bad_input_is_a_zoo_error():
    image = np.ones((8, 8))
    with pytest.raises(DataError, match="constant"):
        standardise(image, np.ones((8, 8), bool))
    with pytest.raises(DataError, match="selects no pixel"):
        standardise(np.arange(64.0).reshape(8, 8), np.zeros((8, 8), bool))
    with pytest.raises(DataError, match="shape"):
        match_histograms(image, image, mask=np.ones((4, 4), bool))
    with pytest.raises(DataError, match="empty"):
        match_histograms(image, np.array([]))
    with pytest.raises(DataError, match="NaN"):
        match_histograms(np.array([1.0, np.nan]), image)
    with pytest.raises(UnknownNameError, match="Did you mean 'histogram'"):
        harmonise(np.ones((1, 4, 4, 1)), "histogramm")
    with pytest.raises(InvalidArgumentError, match="reference"):
        harmonise(np.ones((1, 4, 4, 1)), "histogram")
