"""The MIL demo step proves its claim: from image labels only, the head separates the bags and
points at the lesions far above chance, and its figure shows the image beside the map."""

from __future__ import annotations

import pytest

from tests.explain.figure_checks import assert_readable
from zoo.data.localisation import make_localisation_task
from zoo.demo.mil import TASK, TOLERANCE, chance_pointing, demo_step


def test_chance_pointing_is_the_area_within_the_tolerance():
    import numpy as np

    mask = np.zeros((1, 20, 20), bool)
    mask[0, 10, 10] = True
    assert chance_pointing(mask, 0) == pytest.approx(1 / 400)
    assert chance_pointing(mask, 2) == pytest.approx(13 / 400)  # the lattice points of a radius-2 disc
    both = np.concatenate([mask, np.zeros_like(mask)])  # images without lesions do not count
    assert chance_pointing(both, 2) == pytest.approx(13 / 400)


@pytest.mark.slow
def test_demo_step_learns_to_classify_and_to_point(tmp_path):
    result = demo_step(tmp_path)  # the demo's own seeded data and settings
    test = make_localisation_task(100, seed=1000, **TASK)  # the demo's test set, to check its figure
    positives = test.labels == 1
    chance = chance_pointing(test.masks[positives], TOLERANCE)
    assert result["chance_pointing"] == pytest.approx(chance) and 0.03 < chance < 0.2
    assert result["bag_auc"] >= 0.9  # bag scores separate positive from negative images
    assert result["pointing_game"] >= chance + 0.5  # and the map's peak lands on a lesion
    assert result["pixel_auc"] >= 0.8
    assert_readable(tmp_path / "mil_overlay.png", test.images[positives.argmax()])
