"""Image similarity in physical units, numpy and scipy only: MAE / MSE (e.g. in HU), PSNR, and
the Frechet distance between two feature sets (Heusel et al. 2017's formula; with a zoo
backbone's features it is not the "FID", which is defined on InceptionV3's ImageNet features).
"""

from __future__ import annotations

import warnings

import numpy as np

from zoo.errors import InvalidArgumentError


def _pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise InvalidArgumentError(f"images of shapes {a.shape} and {b.shape}: compare arrays of "
                                   "one shape (the prediction and its reference).")
    return a, b


def mae(a, b) -> float:
    """Mean absolute difference, in the images' units (HU for CT)."""
    a, b = _pair(a, b)
    return float(np.mean(np.abs(a - b)))


def mse(a, b) -> float:
    """Mean squared difference, in the images' units squared."""
    a, b = _pair(a, b)
    return float(np.mean((a - b) ** 2))


def psnr(a, b, data_range: float) -> float:
    """10 log10(data_range^2 / MSE) in dB; ``data_range``: the span the images may take."""
    if not data_range > 0:
        raise InvalidArgumentError(f"data_range={data_range!r}: give the (positive) span of the "
                                   "image values, e.g. 255 for 8-bit or 2000 for CT in HU.")
    error = mse(a, b)
    return float("inf") if error == 0 else float(10 * np.log10(data_range**2 / error))


def frechet_distance(features_a, features_b) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) of two (N, D) feature arrays."""
    from scipy import linalg

    a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise InvalidArgumentError(
            f"features {a.shape} and {b.shape}: give two (N, D) arrays of one width D, N >= 2 "
            "each (a few hundred for a stable estimate).")
    mu = a.mean(0) - b.mean(0)
    sa = np.atleast_2d(np.cov(a, rowvar=False))
    sb = np.atleast_2d(np.cov(b, rowvar=False))
    with warnings.catch_warnings():  # few samples for many features: a singular product
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        root = linalg.sqrtm(sa @ sb)
    if not np.isfinite(root).all():  # a singular product: shift both (as the FID code does)
        eye = np.eye(len(sa)) * 1e-6
        root = linalg.sqrtm((sa + eye) @ (sb + eye))
    return float(mu @ mu + np.trace(sa) + np.trace(sb) - 2 * np.trace(root.real))
