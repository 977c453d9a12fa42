"""Distances between sets of images through their features (numpy + scipy, no TensorFlow).

``frechet_distance`` is the Frechet distance between Gaussians fitted to two feature sets
(Dowson & Landau 1982), the statistic behind FID; the zoo computes it on a named zoo backbone's
features and never calls it FID, which needs InceptionV3's ImageNet weights.
"""

from __future__ import annotations

import numpy as np

from zoo.errors import DataError


def _features(a, name: str) -> np.ndarray:
    a = np.asarray(a, np.float64)
    if a.ndim != 2 or len(a) < 2 or not np.isfinite(a).all():
        raise DataError(f"{name}: features of shape {a.shape}; give a finite (n >= 2, d) array, "
                        "one row of features per image.")
    return a


def frechet_distance(features_a, features_b) -> float:
    """``|mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))`` of two feature sets.

    Args:
        features_a: (n_a, d) features of one image set.
        features_b: (n_b, d) features of the other, same d.

    Returns:
        The distance (>= 0; 0 for identical statistics).

    Raises:
        DataError: not 2D, fewer than 2 rows, NaN/inf, or different feature widths.
    """
    from scipy import linalg

    a, b = _features(features_a, "features_a"), _features(features_b, "features_b")
    if a.shape[1] != b.shape[1]:
        raise DataError(f"features_a has {a.shape[1]} features per image, features_b "
                        f"{b.shape[1]}; compute both with the same backbone.")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    root = linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(root).all():  # singular product: regularise both, as the FID code does
        eps = np.eye(len(cov_a)) * 1e-6
        root = linalg.sqrtm((cov_a + eps) @ (cov_b + eps))
    root = np.real(root)
    value = float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a + cov_b - 2.0 * root))
    return max(value, 0.0)
