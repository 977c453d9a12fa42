"""The MIL demo step: trains, scores against the hidden masks, writes an overlay PNG."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from zoo.heads import demo_step


@pytest.mark.slow
def test_demo_step_reports_scores_and_writes_an_overlay(tmp_path):
    result = demo_step(tmp_path, n_train=64, epochs=1)
    assert set(result) == {"bag_auc", "pointing_game", "pixel_auc", "chance_pointing", "overlay"}
    for key in ("bag_auc", "pointing_game", "pixel_auc"):
        assert 0.0 <= result[key] <= 1.0
    assert 0.005 < result["chance_pointing"] < 0.15  # lesions cover 1-15% of a positive image
    png = tf.io.decode_png((tmp_path / "mil_overlay.png").read_bytes()).numpy()
    assert png.shape == (64, 64, 3) and len(np.unique(png.reshape(-1, 3), axis=0)) > 10
