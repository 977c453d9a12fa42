"""A .keras file saved by the first wave's main still loads and computes the same (issue 13's fixture)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import zoo

FIXTURES = Path(__file__).parent / "fixtures"


def test_keras_file_saved_by_the_first_wave_loads_in_safe_mode():
    model = zoo.load_model(FIXTURES / "simple_cnn_phantom_v0.keras")
    x = np.linspace(0, 255, 64 * 64, dtype="float32").reshape(1, 64, 64, 1)
    expected = np.load(FIXTURES / "simple_cnn_phantom_v0_out.npy")
    np.testing.assert_allclose(np.asarray(model(x)), expected, rtol=1e-5, atol=1e-6)
    assert model.count_params() == 190994
