"""Windows against DICOM's linear VOI formula by hand; the Keras layer against numpy; HU-input models."""

from __future__ import annotations

import numpy as np
import pytest

from zoo.data.windows import PRESETS, resolve_window, stack_windows, window
from zoo.errors import InvalidArgumentError


def dicom_linear(x, c, w):
    """PS3.3 C.11.2.1.2.1 with y in [0, 1], written out case by case."""
    out = []
    for v in np.ravel(x):
        if v <= c - 0.5 - (w - 1) / 2:
            out.append(0.0)
        elif v > c - 0.5 + (w - 1) / 2:
            out.append(1.0)
        else:
            out.append((v - (c - 0.5)) / (w - 1) + 0.5)
    return np.array(out, np.float32).reshape(np.shape(x))


def test_window_matches_the_dicom_formula():
    x = np.linspace(-1200, 2000, 321)
    for name, (c, w) in PRESETS.items():
        np.testing.assert_allclose(window(x, name), dicom_linear(x, c, w), atol=1e-6, err_msg=name)
    assert window(np.array([0.0, 40.0, 80.0]), 40, 80).tolist() == pytest.approx([0.0, 0.5 + 0.5 / 79, 1.0])


def test_presets_are_the_usual_values():
    assert PRESETS["brain"] == (40.0, 80.0) and PRESETS["lung"] == (-600.0, 1500.0)
    assert {"subdural", "stroke", "mediastinum", "bone", "liver", "abdomen_soft_tissue"} <= set(PRESETS)


def test_bad_windows_are_explained():
    with pytest.raises(InvalidArgumentError, match="Did you mean 'brain'"):
        resolve_window("brian")
    with pytest.raises(InvalidArgumentError, match="width > 1"):
        resolve_window((40, 0))
    with pytest.raises(InvalidArgumentError, match="center, width"):
        resolve_window(object())


def test_stack_windows_gives_one_channel_per_window():
    hu = np.random.default_rng(0).uniform(-1000, 1500, (5, 6, 1)).astype(np.float32)
    out = stack_windows(hu, ["brain", "subdural", (400, 1800)])
    assert out.shape == (5, 6, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out[..., 1], dicom_linear(hu[..., 0], 75, 215), atol=1e-6)


def test_png_writer_and_pipeline_window_as_the_numpy_function():
    """``zoo dicom``'s PNGs and the tf.data pipeline's normalisation are the same windows."""
    from types import SimpleNamespace

    from zoo.data.dicom_cli import to_uint8
    from zoo.data.pipeline import _affine, _apply

    hu = np.random.default_rng(3).uniform(-1100, 2000, (6, 7, 1)).astype(np.float32)
    wins = [PRESETS["brain"], PRESETS["lung"], (3000.0, 2.0)]  # a narrow window far from 0
    expected = stack_windows(hu, wins)
    np.testing.assert_allclose(expected[..., 2], dicom_linear(hu[..., 0], 3000.0, 2.0), atol=1e-6)
    png = to_uint8(hu, SimpleNamespace(units="HU", window=None), windows=wins)
    np.testing.assert_array_equal(png, np.round(expected * 255).astype(np.uint8))
    ab = _affine({"units": "HU"}, wins, 3)
    np.testing.assert_allclose(_apply(hu, ab, (0.0, 1.0)), expected, atol=1e-5)


def test_window_layer_matches_numpy_and_round_trips(tmp_path):
    import keras

    import zoo
    from zoo.layers.window import WindowStack

    hu = np.random.default_rng(1).uniform(-1100, 2000, (2, 8, 8, 1)).astype(np.float32)
    inputs = keras.Input((8, 8, 1), name="hu")
    model = keras.Model(inputs, WindowStack(["brain", "lung", "bone"], output_range=(0, 255), name="win")(inputs))
    expected = stack_windows(hu, ["brain", "lung", "bone"]) * 255
    np.testing.assert_allclose(model.predict(hu, verbose=0), expected, atol=1e-3)
    path = tmp_path / "w.keras"
    model.save(path)
    loaded = zoo.load_model(path)
    np.testing.assert_allclose(loaded.predict(hu, verbose=0), expected, atol=1e-3)
    assert loaded.get_layer("win").windows == [(40.0, 80.0), (-600.0, 1500.0), (400.0, 1800.0)]


@pytest.mark.slow
def test_with_hu_input_feeds_a_zoo_model_windows_it_expects(tmp_path):
    import zoo
    from zoo.data.windows import with_hu_input

    base = zoo.load("simple_cnn", in_chans=3, num_classes=2, input_shape=(32, 32))
    wrapped = with_hu_input(base, ["brain", "subdural", "bone"])
    hu = np.random.default_rng(2).uniform(-1000, 1500, (2, 32, 32, 1)).astype(np.float32)
    contract = zoo.input_contract(base)
    lo, hi = contract["input_range"]
    manual = base.predict(stack_windows(hu, ["brain", "subdural", "bone"]) * (hi - lo) + lo, verbose=0)
    np.testing.assert_allclose(wrapped.predict(hu, verbose=0), manual, atol=1e-5)
    wrapped.save(tmp_path / "hu.keras")
    np.testing.assert_allclose(zoo.load_model(tmp_path / "hu.keras").predict(hu, verbose=0), manual, atol=1e-5)
    with pytest.raises(InvalidArgumentError, match="2 windows for a model with 3 input channels"):
        with_hu_input(base, ["brain", "bone"])
