"""The weak-label localisation task and its scores (ROC AUC, pointing game, pixel AUC)."""

from __future__ import annotations

import numpy as np
import pytest

from zoo.data.localisation import make_localisation_task, pixel_auc, pointing_game, roc_auc
from zoo.errors import DataError, InvalidArgumentError


def test_task_is_seeded_and_lesions_are_small_and_only_in_positives():
    task = make_localisation_task(60, size=64, seed=3)
    again = make_localisation_task(60, size=64, seed=3)
    np.testing.assert_array_equal(task.images, again.images)
    assert not np.array_equal(task.images, make_localisation_task(60, size=64, seed=4).images)
    assert task.images.shape == (60, 64, 64, 1) and task.images.dtype == np.float32
    assert 0 <= task.images.min() and task.images.max() <= 255
    area = task.masks.reshape(60, -1).mean(1)
    assert set(np.unique(task.labels)) == {0, 1}
    assert np.all(area[task.labels == 0] == 0)
    positive = area[task.labels == 1]
    # 1-3 lesions of 1-5% each (disks on a pixel grid, may overlap): between ~0.8% and 15% of the image
    assert positive.min() > 0.008 and positive.max() < 0.15
    # lesions are brighter than the tissue around them on average
    img = task.images[..., 0]
    assert img[task.masks].mean() > img[task.labels == 1][~task.masks[task.labels == 1]].mean() + 20
    with pytest.raises(InvalidArgumentError, match="lesions_per_image"):
        make_localisation_task(4, lesions=(0, 2))


def test_roc_auc_against_hand_counts():
    assert roc_auc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert roc_auc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0
    assert roc_auc([0.5, 0.5, 0.5], [0, 1, 1]) == 0.5
    # pairs (pos, neg): (0.4 vs 0.1, 0.35, 0.8) -> 2 wins; (0.9 vs ...) -> 3 wins; 5 / 6
    assert roc_auc([0.1, 0.4, 0.35, 0.8, 0.9], [0, 1, 0, 0, 1]) == pytest.approx(5 / 6)
    # a tie between a positive and a negative counts one half
    assert roc_auc([0.3, 0.3, 0.9], [0, 1, 1]) == pytest.approx(0.75)
    with pytest.raises(DataError, match="needs both classes"):
        roc_auc([0.1, 0.2], [1, 1])


def test_pointing_game_and_pixel_auc():
    masks = np.zeros((3, 8, 8), bool)
    masks[0, 2:4, 2:4] = True
    masks[1, 5:7, 5:7] = True  # image 2 has no lesion: not scored
    maps = np.zeros((3, 8, 8))
    maps[0, 3, 3] = 1.0  # on the lesion
    maps[1, 0, 0] = 1.0  # far from it
    maps[2, 4, 4] = 1.0
    assert pointing_game(maps, masks) == 0.5
    maps[1, 0, 0], maps[1, 4, 4] = 0.0, 1.0  # one pixel diagonal from (5, 5): distance sqrt(2)
    assert pointing_game(maps, masks, tolerance=0) == 0.5
    assert pointing_game(maps, masks, tolerance=2) == 1.0
    assert pixel_auc(masks.astype(float), masks) == 1.0
    assert pixel_auc(-masks.astype(float), masks) == 0.0
    with pytest.raises(DataError, match="upsampled to the masks' size"):
        pointing_game(maps[:, :4, :4], masks)
    with pytest.raises(DataError, match="no image has a lesion"):
        pixel_auc(maps, np.zeros_like(masks))
