"""Intensity harmonisation baselines for a new scanner: histogram matching, per-image z-scores.

Numpy only. What adversarial adaptation is measured against (benchmarks/bench_domain.py):

- ``match_histograms(image, reference)``: the classic quantile mapping (each grey value goes to
  the reference value at the same cumulative frequency), so the output's empirical CDF equals
  the reference's at every level the image has; the same algorithm as scikit-image's
  ``match_histograms`` (used only as a test reference). ``mask`` limits both the statistics and
  the mapping to a region (the body), leaving the rest as it was.
- ``standardise(image, mask)``: the MR habit of a z-score within a foreground mask (mean 0,
  standard deviation 1 there); the default mask is the image above its Otsu threshold.
- ``harmonise(images, method, reference=...)``: either, image by image, for a batch
  (N, *spatial, C), channel by channel.
"""

from __future__ import annotations

import numpy as np

from zoo.errors import DataError, InvalidArgumentError
from zoo.registry import Registry

METHODS = Registry("harmonisation method", ("none", "histogram", "zscore"), argument="method")


def _finite(array: np.ndarray, what: str) -> np.ndarray:
    array = np.asarray(array, np.float64)
    if array.size == 0:
        raise DataError(f"the {what} is empty; give at least one pixel.")
    if not np.all(np.isfinite(array)):
        raise DataError(f"the {what} holds NaN or infinity; fix those pixels first.")
    return array


def _region(image: np.ndarray, mask, what: str) -> np.ndarray:
    """``mask`` as a boolean array of ``image``'s shape (everything when None)."""
    if mask is None:
        return np.ones(image.shape, bool)
    mask = np.asarray(mask, bool)
    if mask.shape != image.shape:
        raise DataError(f"the {what} mask has shape {mask.shape} but the image {image.shape}; give "
                        "one mask value per pixel.")
    if not mask.any():
        raise DataError(f"the {what} mask selects no pixel; give a mask of the body (foreground).")
    return mask


def match_histograms(image, reference, mask=None, reference_mask=None) -> np.ndarray:
    """``image``'s grey values mapped so their distribution matches ``reference``'s.

    Args:
        image: one single-channel image or volume (any shape).
        reference: pixels of the reference (any shape; e.g. pooled images of the source scanner).
        mask: the pixels of ``image`` to map and count (None: all); the others are kept.
        reference_mask: the pixels of ``reference`` to count (None: all).

    Returns:
        A float array of ``image``'s shape.
    """
    image, reference = _finite(image, "image"), _finite(reference, "reference")
    region = _region(image, mask, "image")
    ref = reference[_region(reference, reference_mask, "reference")]
    values, inverse, counts = np.unique(image[region], return_inverse=True, return_counts=True)
    ref_values, ref_counts = np.unique(ref, return_counts=True)
    quantiles = np.cumsum(counts) / region.sum()
    ref_quantiles = np.cumsum(ref_counts) / ref.size
    mapped = np.interp(quantiles, ref_quantiles, ref_values)
    out = image.copy()
    out[region] = mapped[inverse.ravel()]
    return out


def otsu_threshold(image, bins: int = 256) -> float:
    """Otsu's threshold: the grey level that maximises the between-class variance."""
    image = _finite(image, "image")
    lo, hi = float(image.min()), float(image.max())
    if lo == hi:
        return lo
    hist, edges = np.histogram(image, bins=bins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)[:-1].astype(np.float64)
    w1 = image.size - w0
    m0 = np.cumsum(hist * centres)[:-1] / np.maximum(w0, 1)
    m1 = (np.sum(hist * centres) - np.cumsum(hist * centres)[:-1]) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    return float(centres[np.argmax(between)])  # pixels above it are foreground


def foreground_mask(image) -> np.ndarray:
    """The pixels above the image's Otsu threshold (the body on a dark background)."""
    image = _finite(image, "image")
    return image > otsu_threshold(image)


def standardise(image, mask=None) -> np.ndarray:
    """A z-score within ``mask``: (image - mean) / std over the masked pixels.

    Args:
        image: one single-channel image or volume.
        mask: the foreground (None: ``foreground_mask(image)``, Otsu's).

    Returns:
        A float array of ``image``'s shape with mean 0 and standard deviation 1 inside ``mask``.
    """
    image = _finite(image, "image")
    region = _region(image, foreground_mask(image) if mask is None else mask, "foreground")
    values = image[region]
    std = values.std()
    if not std > 0:
        raise DataError(
            f"the image is constant ({values[0]:g}) inside its foreground mask, so it has no "
            "z-score; give a mask that covers the body's varying tissue.")
    return (image - values.mean()) / std


def harmonise(images, method: str, *, reference=None, masks=None,
              scale: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """Harmonise a batch image by image and channel by channel.

    Args:
        images: (N, *spatial, C).
        method: "none", "histogram" (to ``reference``) or "zscore".
        reference: for "histogram": reference pixels (N', *spatial, C) or any array per channel.
        masks: optional (N, *spatial) foreground masks (histogram: the region mapped; zscore:
            the region of the statistics).
        scale: (mean, std) the z-scores are mapped to (e.g. (128, 40) for [0, 255] models).

    Returns:
        A float32 array of ``images``' shape.
    """
    METHODS.check(method)
    images = np.asarray(images)
    if images.ndim < 3:
        raise DataError(f"images of shape {images.shape}; give a batch (N, *spatial, C).")
    if method == "histogram" and reference is None:
        raise InvalidArgumentError("method='histogram' needs reference= (source-scanner images).")
    if masks is not None and np.shape(masks) != images.shape[:-1]:
        raise DataError(f"masks of shape {np.shape(masks)} for images {images.shape}; give one "
                        "(N, *spatial) mask per image.")
    if method == "none":
        return images.astype(np.float32)
    out = np.empty(images.shape, np.float32)
    for i in range(len(images)):
        mask = None if masks is None else masks[i]
        for c in range(images.shape[-1]):
            if method == "histogram":
                ref = np.asarray(reference)[..., c] if np.ndim(reference) > 1 else reference
                out[i, ..., c] = match_histograms(images[i, ..., c], ref, mask)
            else:
                out[i, ..., c] = standardise(images[i, ..., c], mask) * scale[1] + scale[0]
    return out
