"""The scanner-shift phantoms change what they claim, measured independently: intensity steps
scale by ``contrast``, the blur is scipy's gaussian_filter, the noise has the scanner's standard
deviation; labels and masks are the phantoms' in both domains."""

from __future__ import annotations

import numpy as np
import pytest

from zoo.data.scanner_shift import Scanner, gaussian_blur, make_scanner_shift, render
from zoo.data.synthetic import make_phantoms
from zoo.errors import InvalidArgumentError

N, SIZE = 24, 32


def test_labels_and_masks_are_kept_and_source_is_the_phantom():
    shift = make_scanner_shift(N, SIZE, seed=3)
    base = make_phantoms(N, SIZE, 3, noise=0.0)
    for domain in (shift.source, shift.target):
        np.testing.assert_array_equal(domain.labels, base.labels)
        np.testing.assert_array_equal(domain.masks, base.masks)
    np.testing.assert_allclose(shift.clean * 255, base.images, atol=1e-4)
    residual = shift.source.images / 255.0 - shift.clean  # source: clean + 0.05 noise
    unclipped = (shift.clean > 0.25) & (shift.clean < 0.75)  # the body, far from 0 and 1
    assert residual[unclipped].std() == pytest.approx(0.05, rel=0.03)
    assert shift.target.images.shape == shift.source.images.shape


def test_contrast_ratio_of_every_intensity_step():
    scanner = Scanner(contrast=0.5, brightness=0.1, gamma=1.0, noise=0.0, blur=0.0)
    shift = make_scanner_shift(N, SIZE, seed=4, target=scanner, source=Scanner(noise=0.0))
    pos = shift.source.labels == 1
    for k in np.flatnonzero(pos)[:5]:
        mask = shift.source.masks[k]
        ring = (gaussian_blur(mask[None].astype(float), 2.0)[0] > 0.05) & ~mask
        for images in (shift.source.images, shift.target.images):
            assert images[k, ..., 0][mask].size
        steps = [im[k, ..., 0][mask].mean() - im[k, ..., 0][ring].mean()
                 for im in (shift.target.images, shift.source.images)]
        assert steps[0] / steps[1] == pytest.approx(0.5, rel=1e-4)
    # the global map: target = level + c (clean - level) + brightness
    expected = (0.45 + 0.5 * (shift.clean - 0.45) + 0.1) * 255
    np.testing.assert_allclose(shift.target.images, expected, atol=1e-3)


def test_blur_is_scipys_gaussian_and_noise_has_the_stated_std():
    ndimage = pytest.importorskip("scipy.ndimage")
    clean = make_scanner_shift(8, SIZE, seed=5).clean
    scanner = Scanner(contrast=0.7, gamma=1.2, noise=0.0, blur=1.3)
    mapped = 0.45 + 0.7 * (clean.astype(np.float64) ** 1.2 - 0.45)
    reference = ndimage.gaussian_filter(mapped, sigma=(0, 1.3, 1.3, 0))  # mode reflect, truncate 4
    np.testing.assert_allclose(render(clean, scanner, 0) / 255.0, np.clip(reference, 0, 1), atol=1e-6)
    noisy = Scanner(contrast=0.7, gamma=1.2, noise=0.08, blur=1.3)
    residual = render(clean, noisy, 0) / 255.0 - reference
    assert residual.std() == pytest.approx(0.08, rel=0.03) and abs(residual.mean()) < 0.005
    # blur lowers the high frequencies: neighbouring pixels of the noise-free target agree more
    grad = lambda im: np.abs(np.diff(im, axis=2)).mean()  # noqa: E731
    assert grad(reference) < 0.9 * grad(mapped)


def test_seeded_and_bad_scanners_refused():
    a, b = make_scanner_shift(6, SIZE, seed=7), make_scanner_shift(6, SIZE, seed=7)
    np.testing.assert_array_equal(a.target.images, b.target.images)
    assert not np.array_equal(a.target.images, make_scanner_shift(6, SIZE, seed=8).target.images)
    with pytest.raises(InvalidArgumentError, match="contrast"):
        Scanner(contrast=0.0)
    with pytest.raises(InvalidArgumentError, match="noise"):
        Scanner(noise=-1.0)
    with pytest.raises(InvalidArgumentError, match="scanner"):
        make_scanner_shift(4, SIZE, noise=0.1)
