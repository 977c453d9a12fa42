"""Perturbation masks localise what the model looks at (pointing game on phantoms, a model that
sees one region only), and the model-randomisation check tells methods that follow the weights
from one that does not."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import ops

import zoo
from zoo.data.localisation import pointing_game
from zoo.explain import randomisation_check
from zoo.explain.perturbation import _gaussian_blur, perturbation_mask
from zoo.explain.sanity import spearman

TOLERANCE = 2  # pixels: the mask lives on a 4x coarser grid


@pytest.fixture(scope="module")
def phantoms():
    """The shipped phantom checkpoint and held-out positive phantoms of its task."""
    from zoo.data.synthetic import make_phantoms
    from zoo.demo import SOURCE_TASK

    model = zoo.load(
        "simple_cnn.phantom"
    )  # module scope: the session's ZOO_HOME (tests/conftest.py)
    task = {k: v for k, v in SOURCE_TASK.items() if k not in ("n", "seed")}
    return model, make_phantoms(24, seed=SOURCE_TASK["seed"] + 9999, positive_fraction=1.0, **task)


def test_perturbation_mask_points_at_the_lesion(phantoms):
    from zoo.demo.mil import chance_pointing

    model, data = phantoms
    images, masks = data.images[:6], data.masks[:6]
    kept = perturbation_mask(model, images, class_index=1, steps=80, return_mask=True)
    maps = 1.0 - kept  # what explain_batch(..., "perturbation") returns
    assert maps.shape == (6, 64, 64) and maps.min() >= 0 and maps.max() <= 1
    score, chance = pointing_game(maps, masks, TOLERANCE), chance_pointing(masks, TOLERANCE)
    assert score >= 5 / 6 and score > chance + 0.6, (score, chance)
    # blurring what the mask marks removes the evidence, and the mask stays small
    blurred = _gaussian_blur(images, 6.4)  # the default: a tenth of the side
    p_deleted = model(
        images * kept[..., None] + blurred * (1 - kept[..., None]), training=False
    ).numpy()[:, 1]
    assert np.median(p_deleted) < 0.5 and np.median(maps.mean(axis=(1, 2))) < 0.2, (
        p_deleted,
        maps.mean(),
    )


def test_a_model_that_sees_one_region_gets_a_mask_there(phantoms):
    """The checkpoint behind a window: pixels outside it have no effect, so the L1 term keeps
    them; the deletion concentrates inside the window, on the lesion there."""
    model, data = phantoms
    window = np.zeros((64, 64, 1), np.float32)
    window[8:40, 8:40] = 1.0
    inp = keras.Input((64, 64, 1))
    features = keras.Model(model.inputs, model.get_layer("head_fc").input)
    fc = keras.layers.Dense(
        2, activation="softmax", name="fc"
    )  # a copy: a layer called twice has no one input
    looking = keras.Model(inp, fc(features(ops.multiply(inp, window))), name="windowed")
    fc.set_weights(model.get_layer("head_fc").get_weights())
    inside = data.masks & window[None, ..., 0].astype(bool)
    chosen = [i for i in range(len(data.masks)) if inside[i].sum() >= 10][:3]
    assert len(chosen) == 3
    maps = perturbation_mask(looking, data.images[chosen], class_index=1, steps=80)
    near = np.zeros((64, 64), np.float32)
    near[4:44, 4:44] = (
        1.0  # the window and one cell of the 4x coarser mask around it (bilinear upsampling)
    )
    in_window = (maps * near).sum(axis=(1, 2)) / maps.sum(axis=(1, 2))
    assert np.all(in_window > 0.95), in_window
    assert pointing_game(maps, inside[chosen], TOLERANCE) >= 2 / 3


def test_spearman_against_its_definition():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=50), rng.normal(size=50)
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))  # no ties: ranks are orders
    assert spearman(a, b) == pytest.approx(np.corrcoef(ra, rb)[0, 1])
    assert spearman(a, np.exp(a)) == pytest.approx(1.0) and spearman(a, np.zeros(50)) == 0.0
    assert spearman([1, 1, 2], [1, 1, 2]) == pytest.approx(1.0)


def test_randomisation_check_flags_the_method_that_ignores_the_weights(phantoms):
    """Cascading randomisation of the checkpoint: Grad-CAM, saliency and SmoothGrad decorrelate;
    integrated gradients from a black baseline does not (x times the gradient keeps the image's
    structure, as Adebayo et al. found for gradient x input), and neither does an 'explanation'
    that returns the image itself: both are reported as failing. The model is untouched."""
    model, data = phantoms
    before = [w.copy() for w in model.get_weights()]
    report = randomisation_check(
        model,
        data.images[:2],
        methods=(
            "gradcam",
            "saliency",
            "smoothgrad",
            "integrated_gradients",
            ("image", lambda m, x, c: x[..., 0]),
        ),
        class_index=1,
        options={"smoothgrad": {"samples": 2}, "integrated_gradients": {"steps": 8}},
        report_after=2,
    )
    assert report.layers[-1] == "stage1_conv1" and len(report.layers) == 2
    for method in ("gradcam", "saliency", "smoothgrad"):
        assert report.correlations[method][-1] < 0.5, report.summary()
    assert np.allclose(report.correlations["image"], 1.0)
    assert report.insensitive == ["integrated_gradients", "image"], report.summary()
    assert "image: 1.00 -> 1.00; does NOT change with the weights" in report.summary()
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
