"""make_gap_clusters (zoo.data.synthetic): the classes really are separated by a low-density gap
along the images' highest-variance direction, while two labels per class leave a nearest-neighbour
rule to the nuisance patterns; all checked with numpy alone."""

from __future__ import annotations

import numpy as np
import pytest

from zoo.data.synthetic import make_gap_clusters
from zoo.errors import InvalidArgumentError


def test_classes_are_separated_by_a_gap_along_the_first_principal_component():
    c = make_gap_clusters(1000, seed=0)
    np.testing.assert_array_equal(c.images, make_gap_clusters(1000, seed=0).images)
    assert c.images.shape == (1000, 16, 16, 1) and c.images.dtype == np.float32
    assert 0 <= c.images.min() and c.images.max() <= 255
    x = c.images.reshape(len(c.images), -1).astype(np.float64)
    centred = x - x.mean(0)
    pc1 = np.linalg.svd(centred, full_matrices=False)[2][0]  # no labels used
    means = np.stack([x[c.labels == k].mean(0) for k in (0, 1)])
    direction = (means[1] - means[0]) / np.linalg.norm(means[1] - means[0])
    assert abs(pc1 @ direction) > 0.9  # the gap lies along the highest-variance direction
    proj = centred @ pc1
    proj *= np.sign(proj[c.labels == 1].mean())
    # a threshold at the middle of PC1 (found without labels) gets the classes right ...
    assert np.mean((proj > 0) == (c.labels == 1)) > 0.98
    # ... and few images lie near it: a low-density gap (a window of a quarter of the half
    # distance between the means holds over 5 times fewer images at the middle than at a mean)
    half = 0.5 * np.linalg.norm(means[1] - means[0])
    middle, at_means = np.mean(np.abs(proj) < half / 4), np.mean(abs(np.abs(proj) - half) < half / 4)
    assert middle < at_means / 5
    # the nearest class mean is right for (almost) every fresh image ...
    test = make_gap_clusters(400, seed=9)
    t = test.images.reshape(400, -1).astype(np.float64)
    nearest_mean = ((t[:, None] - means[None]) ** 2).sum(-1).argmin(1)
    assert np.mean(nearest_mean == test.labels) > 0.98
    # ... but the nearest of two labelled images per class is led by the nuisance patterns
    few = np.concatenate([np.flatnonzero(c.labels == k)[:2] for k in (0, 1)])
    nearest = ((t[:, None] - x[few][None]) ** 2).sum(-1).argmin(1)
    assert np.mean(c.labels[few][nearest] == test.labels) < 0.85


def test_more_classes_and_bad_arguments():
    c = make_gap_clusters(60, seed=1, num_classes=3)
    assert set(np.unique(c.labels)) == {0, 1, 2}
    for bad in (dict(n=0), dict(size=8), dict(num_classes=1), dict(num_classes=6), dict(nuisance=60), dict(gap=0.0),
                dict(noise=-1.0)):
        with pytest.raises(InvalidArgumentError, match="make_gap_clusters|gap=|num_classes="):
            make_gap_clusters(**{"n": 10, **bad})
