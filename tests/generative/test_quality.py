"""Image quality: SSIM against scikit-image on its own sample images, PSNR / MAE / MSE against
their formulas, the Frechet distance against an independent eigen-decomposition, and the
synthetic modalities' known mapping."""

from __future__ import annotations

import numpy as np
import pytest

from zoo.errors import InputShapeError, InvalidArgumentError
from zoo.metrics.image import frechet_distance, mae, mse, psnr


def _skimage_cases():
    from scipy import ndimage
    from skimage import data

    rng = np.random.default_rng(0)
    for name in ("camera", "coins", "moon"):
        image = getattr(data, name)().astype(np.float64)[:160, :160]
        noisy = np.clip(image + rng.normal(0, 25, image.shape), 0, 255)
        blurred = ndimage.gaussian_filter(image, 2.0)
        yield name, image, noisy
        yield name + "_blur", image, blurred


def test_ssim_matches_scikit_image():
    from skimage.metrics import structural_similarity

    from zoo.generative.quality import ssim

    for name, a, b in _skimage_cases():
        want = structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
                                     use_sample_covariance=False, data_range=255.0)
        got = float(ssim(a, b, data_range=255.0)[0])
        assert abs(got - want) < 1e-3, (name, got, want)
    a = _skimage_cases().__next__()[1]
    assert float(ssim(a, a, 255.0)[0]) == pytest.approx(1.0, abs=1e-6)


def test_ssim_refuses_bad_input():
    from zoo.generative.quality import ssim

    with pytest.raises(InputShapeError, match="11 x 11"):
        ssim(np.zeros((8, 8)), np.zeros((8, 8)), 1.0)
    with pytest.raises(InputShapeError, match="one shape"):
        ssim(np.zeros((16, 16)), np.zeros((16, 17)), 1.0)
    with pytest.raises(InvalidArgumentError, match="data_range"):
        ssim(np.zeros((16, 16)), np.zeros((16, 16)), 0)


def test_psnr_mae_mse_in_physical_units():
    rng = np.random.default_rng(1)
    a = rng.uniform(-1000, 1000, (4, 8, 8))
    b = a + rng.normal(0, 30, a.shape)
    assert mae(a, b) == pytest.approx(np.abs(a - b).mean())
    assert mse(a, b) == pytest.approx(((a - b) ** 2).mean())
    assert psnr(a, b, 2000.0) == pytest.approx(10 * np.log10(2000.0**2 / ((a - b) ** 2).mean()))
    assert psnr(a, a, 2000.0) == float("inf")
    with pytest.raises(InvalidArgumentError, match="shapes"):
        mae(a, b[:2])


def _frechet_by_eigh(a, b):
    """tr(Sa + Sb - 2 (Sa^1/2 Sb Sa^1/2)^1/2) + |mu_a - mu_b|^2, by symmetric square roots."""
    def sqrt_psd(m):
        values, vectors = np.linalg.eigh(m)
        return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T

    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root_a = sqrt_psd(sa)
    middle = sqrt_psd(root_a @ sb @ root_a)
    mu = a.mean(0) - b.mean(0)
    return mu @ mu + np.trace(sa) + np.trace(sb) - 2 * np.trace(middle)


def test_frechet_distance_against_an_independent_formula():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(400, 5)) @ rng.normal(size=(5, 5))
    b = rng.normal(1.0, 2.0, size=(300, 5))
    assert frechet_distance(a, b) == pytest.approx(_frechet_by_eigh(a, b), rel=1e-6)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    x, y = rng.normal(0, 1, (500, 1)), rng.normal(3, 2, (500, 1))  # 1-D: (mu diff)^2 + (s diff)^2
    want = (x.mean() - y.mean()) ** 2 + (x.std(ddof=1) - y.std(ddof=1)) ** 2
    assert frechet_distance(x, y) == pytest.approx(want, rel=1e-6)
    with pytest.raises(InvalidArgumentError, match="one width"):
        frechet_distance(a, b[:, :3])


def test_frechet_on_the_default_zoo_backbone():
    from zoo.data.synthetic import make_phantoms
    from zoo.generative.quality import DEFAULT_BACKBONE, features, frechet

    assert DEFAULT_BACKBONE == "simple_cnn.ssl_simclr"
    real = make_phantoms(40, size=32, seed=0).images
    feats = features(real)
    assert feats.shape[0] == 40 and feats.ndim == 2
    noise = np.random.default_rng(0).uniform(0, 255, real.shape).astype(np.float32)
    other = make_phantoms(40, size=32, seed=1).images
    assert frechet(real, other) < frechet(real, noise)


def test_modalities_follow_the_known_mapping():
    from zoo.data.modalities import make_modalities, mr_to_ct
    from zoo.data.synthetic import make_phantoms

    t = np.linspace(0, 1, 101)
    hu = mr_to_ct(t)
    assert np.all(np.diff(hu) > 0) and hu[0] == pytest.approx(-1000.0)
    assert hu[-1] == pytest.approx(-1000 + 1040 * (1 - np.exp(-(1 / 0.18) ** 2)) + 360, abs=1e-3)
    m = make_modalities(6, size=16, seed=3, ct_noise=20.0, mr_noise=0.03)
    clean = make_phantoms(6, size=16, seed=3, noise=0.0).images / 255.0
    np.testing.assert_allclose(m.truth, mr_to_ct(clean), atol=1e-3)
    assert m.paired and np.std(m.ct - m.truth) == pytest.approx(20.0, rel=0.1)
    assert m.mr.min() >= 0 and np.abs(m.mr - clean).mean() < 0.05  # Rician: magnitude, near t
    u = make_modalities(6, size=16, seed=3, paired=False)
    np.testing.assert_array_equal(u.truth, m.truth)  # truth belongs to the MR images
    assert np.abs(u.ct - u.truth).mean() > 100  # other phantoms: far beyond the CT noise
