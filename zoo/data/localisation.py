"""A seeded weak-label localisation task and the scores that grade a heat map against it.

Training sees images and image labels only; the lesion masks come back in a separate field
and are for evaluation: does the map's peak fall on a lesion (pointing game, Zhang et al.
2016), and do lesion pixels score higher than the rest (pixel-level ROC AUC)? Numpy only.
"""

from __future__ import annotations

import numpy as np

from zoo.data.synthetic import Phantoms, make_phantoms
from zoo.errors import DataError


def make_localisation_task(
    n: int,
    size: int = 64,
    seed: int = 0,
    *,
    positive_fraction: float = 0.5,
    lesions: tuple[int, int] = (1, 3),
    lesion_area: tuple[float, float] = (0.01, 0.05),
    contrast: float | tuple[float, float] = (0.2, 0.45),
    noise: float = 0.05,
) -> Phantoms:
    """``n`` phantoms; a positive one holds ``lesions`` (min, max) lesions of ``lesion_area``
    (fractions of the image, default 1-5% each) at random places inside the body.

    Returns ``Phantoms(images (n, size, size, 1) in [0, 255], labels (n,), masks (n, size, size))``:
    give a model ``images`` and ``labels`` only; ``masks`` are the hidden ground truth.
    """
    return make_phantoms(
        n,
        size=size,
        seed=seed,
        positive_fraction=positive_fraction,
        lesions_per_image=lesions,
        lesion_area=lesion_area,
        contrast=contrast,
        noise=noise,
    )


def roc_auc(scores, labels) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties)."""
    scores = np.asarray(scores, np.float64).ravel()
    labels = np.asarray(labels).ravel().astype(bool)
    if scores.shape != labels.shape:
        raise DataError(
            f"roc_auc: {scores.size} scores but {labels.size} labels; give one label per score."
        )
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        raise DataError(
            f"roc_auc: needs both classes, got {n_pos} positives and {n_neg} negatives."
        )
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    average_rank = ends - (counts - 1) / 2.0  # 1-based mean rank of each tied group
    ranks = average_rank[inverse]
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _check_maps(maps, masks):
    maps, masks = np.asarray(maps), np.asarray(masks).astype(bool)
    if maps.shape != masks.shape or maps.ndim != 3:
        raise DataError(
            f"maps {maps.shape} and masks {masks.shape}: give (N, H, W) maps already upsampled to "
            "the masks' size (zoo.explain.cam.upsample), one per image."
        )
    with_lesion = masks.reshape(len(masks), -1).any(axis=1)
    if not with_lesion.any():
        raise DataError(
            "no image has a lesion mask; localisation is scored on positive images only."
        )
    return maps[with_lesion], masks[with_lesion]


def pointing_game(maps, masks, tolerance: int = 0) -> float:
    """Fraction of lesion images whose map maximum lies within ``tolerance`` pixels of a lesion."""
    maps, masks = _check_maps(maps, masks)
    hits = 0
    for heat, mask in zip(maps, masks):
        y, x = np.unravel_index(np.argmax(heat), heat.shape)
        ys, xs = np.nonzero(mask)
        hits += bool(np.min((ys - y) ** 2 + (xs - x) ** 2) <= tolerance**2)
    return hits / len(maps)


def pixel_auc(maps, masks) -> float:
    """ROC AUC of map values as lesion-pixel scores, pooled over the images that have lesions."""
    maps, masks = _check_maps(maps, masks)
    return roc_auc(maps, masks)
