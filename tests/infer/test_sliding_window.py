"""zoo.infer.sliding_window: stitched windows against a whole-image forward pass, 2D and 3D."""

from __future__ import annotations

import numpy as np
import pytest

import zoo
from zoo.errors import InputShapeError, InvalidArgumentError, UnknownNameError
from zoo.infer import sliding_window

UNET = dict(in_chans=1, depth=1, base_filters=4, num_classes=2, classifier_activation=None)


def _pair(name, window, full, **options):
    """One network built for the window and for the whole image (the U-Net needs static sizes)."""
    small = zoo.load(name, input_shape=window, **options)
    big = zoo.load(name, input_shape=full, **options)
    big.set_weights(small.get_weights())
    return small, big


@pytest.fixture(scope="module")
def unet2d():
    return _pair("unet", (32, 40), (64, 80), **UNET)


@pytest.mark.parametrize("blend", ["gaussian", "constant"])
def test_unet_2d_stitched_equals_whole_image(unet2d, blend):
    small, big = unet2d
    x = np.random.default_rng(0).uniform(0, 1, (2, 64, 80, 1)).astype("float32")
    radius = zoo.receptive_field(small).size[0] // 2  # window edges see padding within this
    out = sliding_window(small, x, overlap=0.75, blend=blend, margin=radius, align=2, batch=16)
    whole = big(x, training=False).numpy()
    assert out.shape == whole.shape
    np.testing.assert_allclose(out, whole, rtol=0, atol=1e-5 * np.abs(whole).max())


def test_without_margin_window_edges_differ(unet2d):
    """The margin is what makes it exact: plain blending keeps the windows' padding artefacts."""
    small, big = unet2d
    x = np.random.default_rng(0).uniform(0, 1, (1, 64, 80, 1)).astype("float32")
    out = sliding_window(small, x, overlap=0.5)
    assert np.abs(out - big(x, training=False).numpy()).max() > 1e-4


def test_unet3d_stitched_equals_whole_volume():
    options = dict(UNET, depth=1, base_filters=2, norm="none")
    small, big = _pair("unet3d", (24, 24, 24), (36, 40, 40), **options)
    v = np.random.default_rng(1).uniform(0, 1, (1, 36, 40, 40, 1)).astype("float32")
    radius = zoo.receptive_field(small).size[0] // 2
    out = sliding_window(small, v, overlap=0.75, margin=radius, align=2, batch=16)
    whole = big(v, training=False).numpy()
    np.testing.assert_allclose(out, whole, rtol=0, atol=1e-5 * np.abs(whole).max())


def test_dilated_net_of_any_size_with_roi():
    net = zoo.load(
        "dilated_cnn",
        input_shape=(None, None),
        in_chans=1,
        dilations=(1, 2, 4),
        filters=4,
        head_filters=8,
        num_classes=2,
        dropout=0.0,
    )
    x = np.random.default_rng(2).uniform(0, 255, (1, 70, 90, 1)).astype("float32")
    radius = zoo.receptive_field(net).size[0] // 2
    out = sliding_window(net, x, roi=(40, 48), overlap=0.85, margin=radius, batch=32)
    whole = net(x, training=False).numpy()
    np.testing.assert_allclose(out, whole, rtol=0, atol=1e-5 * np.abs(whole).max())
    # the windows can run on a compiled predictor as well (any spatial size: the TensorFlow engine)
    predictor = zoo.compile_for_inference(net, engine="tensorflow", precision="fp32", batch=32)
    out = sliding_window(predictor, x, roi=(40, 48), overlap=0.85, margin=radius, batch=32)
    np.testing.assert_allclose(out, whole, rtol=0, atol=1e-5 * np.abs(whole).max())


def test_blend_weights_average_overlapping_windows():
    """A pointwise function: blending overlapping windows must return its output unchanged."""
    x = np.random.default_rng(3).normal(size=(2, 30, 26, 3)).astype("float32")
    for blend in ("gaussian", "constant"):
        np.testing.assert_allclose(
            sliding_window(lambda w: 2 * w[..., :1] - 1, x, roi=(12, 10), overlap=0.4, blend=blend),
            2 * x[..., :1] - 1,
            rtol=1e-5,
            atol=1e-5,
        )
    # one value per window: the constant blend is the plain mean of the covering windows' values
    out = sliding_window(
        lambda w: np.broadcast_to(w.mean(axis=(1, 2), keepdims=True), w.shape),
        x[:1, :20, :10],
        roi=(10, 10),
        overlap=0.5,
        blend="constant",
    )
    top, mid, bottom = (x[0, a : a + 10, :10].mean(axis=(0, 1)) for a in (0, 5, 10))
    np.testing.assert_allclose(out[0, 7, 3], (top + mid) / 2, rtol=1e-5)
    np.testing.assert_allclose(out[0, 2, 3], top, rtol=1e-5)
    np.testing.assert_allclose(out[0, 17, 3], bottom, rtol=1e-5)


def test_errors_name_the_cause():
    x = np.zeros((1, 20, 20, 1), "float32")
    ident = lambda w: w  # noqa: E731
    with pytest.raises(InputShapeError, match=r"window \(32\) is larger than the image \(20\)"):
        sliding_window(ident, x, roi=32)
    with pytest.raises(InvalidArgumentError, match=r"overlap=1.0"):
        sliding_window(ident, x, roi=8, overlap=1.0)
    with pytest.raises(InvalidArgumentError, match=r"margin=4.*2\*margin < roi"):
        sliding_window(ident, x, roi=8, margin=4)
    with pytest.raises(InvalidArgumentError, match=r"use overlap >= "):
        sliding_window(ident, x, roi=8, overlap=0.25, margin=2)
    with pytest.raises(InputShapeError, match=r"not a multiple of align=4"):
        sliding_window(ident, np.zeros((1, 22, 20, 1), "float32"), roi=8, align=4)
    with pytest.raises(InputShapeError, match=r"dense outputs"):
        sliding_window(lambda w: w.mean(axis=(1, 2)), x, roi=8)
    with pytest.raises(InputShapeError, match=r"add the batch axis"):
        sliding_window(ident, x[0], roi=8)
    with pytest.raises(UnknownNameError, match=r"blend='gauss'.*gaussian"):
        sliding_window(ident, x, roi=8, blend="gauss")
