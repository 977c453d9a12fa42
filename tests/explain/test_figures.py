"""zoo.figures: explanation figures a person can read, training curves, and a light `import zoo`."""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from tests.explain.figure_checks import assert_readable, panel, read_png
from zoo.errors import DataError
from zoo.figures import explanation_figure, explanation_layout, training_curves


def _phantom():
    from zoo.data.synthetic import make_phantoms

    d = make_phantoms(1, seed=5, positive_fraction=1.0)
    yy, xx = np.mgrid[:64, :64]
    heat = np.exp(-((yy - 20.0) ** 2 + (xx - 40.0) ** 2) / 60.0) - 0.3  # signed, like a raw CAM
    return d.images[0], heat, d.masks[0]


def test_import_zoo_does_not_import_matplotlib():
    code = ("import sys, zoo, zoo.figures, zoo.explain.overlay; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('matplotlib', 'tensorflow')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("cmap", ["inferno", "viridis"])
def test_explanation_figure_shows_original_map_and_monotone_colour_bar(tmp_path, cmap):
    image, heat, mask = _phantom()
    fig = explanation_figure(tmp_path / "f.png", image, heat, mask=mask, method="Grad-CAM", layer="stage4_relu2",
                             class_name="1", score=0.97, cmap=cmap)
    assert fig.boxes == explanation_layout(image.shape)["boxes"] and fig.width >= 2 * 256
    png = assert_readable(fig.path, image, cmap)
    # the lesion outline (cyan) is drawn on the map panel, not on the original
    cyan = lambda a: ((a[..., 0] < 0.2) & (a[..., 1] > 0.8) & (a[..., 2] > 0.8)).sum()  # noqa: E731
    assert cyan(panel(png, fig.boxes["map"])) > 50 and cyan(panel(png, fig.boxes["image"])) == 0


def test_rgb_image_of_a_small_odd_shape(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 255, (40, 50, 3)).astype("float32")
    fig = explanation_figure(tmp_path / "rgb.png", image, rng.random((40, 50)), method="saliency")
    assert explanation_layout(image.shape)["scale"] == 7  # 40 px magnified to 280 >= 256
    assert_readable(fig.path, image)


def test_explanation_figure_refuses_bad_maps(tmp_path):
    image, heat, mask = _phantom()
    with pytest.raises(DataError, match="upsample the map"):
        explanation_figure(tmp_path / "a.png", image, heat[:32, :32])
    with pytest.raises(DataError, match="NaN"):
        explanation_figure(tmp_path / "a.png", image, np.full((64, 64), np.nan))
    with pytest.raises(DataError, match="mask"):
        explanation_figure(tmp_path / "a.png", image, heat, mask=mask[:10])
    fig = explanation_figure(tmp_path / "flat.png", image, np.zeros((64, 64)))  # a constant map still draws
    assert read_png(fig.path).shape[1] == fig.width


def _curve_pixels(path):
    png = read_png(path)
    blue = np.abs(png - np.array([0x1F, 0x77, 0xB4]) / 255).sum(-1) < 0.1  # matplotlib's C0 (train)
    orange = np.abs(png - np.array([0xFF, 0x7F, 0x0E]) / 255).sum(-1) < 0.1  # C1 (validation)
    return png, blue.sum(), orange.sum()


def test_training_curves_from_run_json_history_and_dicts(tmp_path):
    rows = [{"epoch": i, "stage": "stage1" if i < 3 else "stage2", "loss": 1.0 / i, "accuracy": 0.5 + 0.1 * i,
             "val_loss": 1.2 / i, "val_accuracy": 0.45 + 0.1 * i, "learning_rate": 1e-3} for i in range(1, 6)]
    run = tmp_path / "run" / "run.json"
    run.parent.mkdir()
    run.write_text(json.dumps({"arguments": {}, "history": rows}))
    for source in (run, run.parent, json.loads(run.read_text()), SimpleNamespace(history=rows)):
        path = training_curves(source, tmp_path / "curves.png")
        png, blue, orange = _curve_pixels(path)
        assert png.shape[1] >= 256 and blue > 100 and orange > 100
    keras_history = SimpleNamespace(history={"loss": [0.9, 0.5, 0.4], "val_loss": [1.0, 0.8, 0.7]})
    _, blue, orange = _curve_pixels(training_curves(keras_history, tmp_path / "k.png"))
    assert blue > 50 and orange > 50
    with pytest.raises(DataError, match="no epochs"):
        training_curves({"history": []}, tmp_path / "e.png")
    with pytest.raises(DataError, match="no such file"):
        training_curves(tmp_path / "missing.json", tmp_path / "e.png")


def test_segmentation_figure_draws_reference_and_prediction_outlines(tmp_path):
    """One panel per prediction, reference outline green, predicted red: a prediction equal to the
    reference hides the green under the red, one that misses shows both colours apart."""
    from zoo.figures import segmentation_figure

    yy, xx = np.mgrid[:40, :40]
    image = np.random.default_rng(0).uniform(0, 255, (40, 40, 1))
    truth = (yy - 20) ** 2 + (xx - 14) ** 2 <= 36
    shifted = (yy - 20) ** 2 + (xx - 28) ** 2 <= 36
    png = read_png(segmentation_figure(image, truth, {"same": truth, "shifted": shifted}, tmp_path / "s.png",
                                       title="test"))
    red = (png[..., 0] > 0.8) & (png[..., 1] < 0.3) & (png[..., 2] < 0.3)
    green = (png[..., 1] > 0.8) & (png[..., 0] < 0.3) & (png[..., 2] < 0.3)
    half = png.shape[1] // 2
    assert red[:, :half].sum() > 50 and red[:, half:].sum() > 50
    assert green[:, half:].sum() > 5 * max(green[:, :half].sum(), 1)
    with pytest.raises(DataError, match="prediction"):
        segmentation_figure(image, truth, {}, tmp_path / "none.png")
    with pytest.raises(DataError, match="shape"):
        segmentation_figure(image, truth, {"small": truth[:20]}, tmp_path / "bad.png")
