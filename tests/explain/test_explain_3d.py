"""Explanations of volumes: on an inflated 3D ResNet-50 a depth-constant volume gets the 2D
model's Grad-CAM and occlusion maps of its slice; simple_cnn3d's maps; the 2D-only refusals."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import zoo
from zoo.errors import InputShapeError, InvalidArgumentError
from zoo.explain import explain_batch
from zoo.explain.gradcam import conv_layers, grad_cam
from zoo.weights.inflated import inflate_weights

SIZE = 32  # resnet50(_3d)'s smallest input


@pytest.fixture(scope="module")
def inflated():
    """(2D ResNet-50, its 3D inflation, an image, its depth-constant volume), random weights
    with real BatchNorm statistics, logits out (the inflated classifier shares the 2D kernel)."""
    keras.utils.set_random_seed(4)
    two_d = zoo.load(
        "resnet50", input_shape=(SIZE, SIZE), in_chans=1, num_classes=3, classifier_activation=None
    )
    for layer in two_d.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.moving_mean.shape[0]
            rng = np.random.default_rng(len(layer.name))
            layer.moving_mean.assign(rng.normal(0, 0.1, c).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, c).astype("float32"))
    three_d = zoo.load(
        "resnet50_3d",
        input_shape=(SIZE,) * 3,
        in_chans=1,
        num_classes=3,
        classifier_activation=None,
    )
    inflate_weights(two_d, three_d)
    images = np.random.default_rng(0).uniform(0, 255, (1, SIZE, SIZE, 1)).astype("float32")
    return two_d, three_d, images, np.repeat(images[:, None], SIZE, axis=1)


def test_grad_cam_of_a_depth_constant_volume_is_the_2d_map_of_its_slice(inflated):
    """Each slice of the 3D map times the layer depth is the 2D map (alpha averages over depth)."""
    two_d, three_d, images, volumes = inflated
    np.testing.assert_allclose(
        three_d(volumes).numpy(), two_d(images).numpy(), rtol=1e-4, atol=1e-4
    )
    layer = "conv4_block6_out"  # 2 x 2 x 2 at 32 px: the raw map, before ReLU and upsampling
    assert layer in conv_layers(three_d)
    raw2 = grad_cam(two_d, images, layer, class_index=2, relu=False, upsample_to_input=False)
    raw3 = grad_cam(three_d, volumes, layer, class_index=2, relu=False, upsample_to_input=False)
    assert raw3.shape == (1, 2, *raw2.shape[1:])
    np.testing.assert_allclose(
        raw3 * 2, np.broadcast_to(raw2[:, None], raw3.shape), atol=1e-4 * np.abs(raw2).max()
    )
    # through the one API at the 8 x 8 x 8 layer, upsampled to the volume
    map2 = explain_batch(two_d, images, "gradcam", class_index=2, layer_name="conv2_block3_out")
    map3 = explain_batch(three_d, volumes, "gradcam", class_index=2, layer_name="conv2_block3_out")
    assert map3.shape == (1, SIZE, SIZE, SIZE) and map2.max() > 0
    np.testing.assert_allclose(
        map3 * 8, np.broadcast_to(map2[:, None], map3.shape), atol=1e-4 * map2.max()
    )


def test_occlusion_of_a_depth_constant_volume_is_the_2d_map_of_its_slice(inflated):
    """Patches through the whole depth keep the volume depth-constant: each drop is the 2D one."""
    two_d, three_d, images, volumes = inflated
    map2 = explain_batch(two_d, images, "occlusion", class_index=0, patch=16, stride=16)
    map3 = explain_batch(
        three_d, volumes, "occlusion", class_index=0, patch=(SIZE, 16, 16), stride=(SIZE, 16, 16)
    )
    assert map3.shape == (1, SIZE, SIZE, SIZE) and np.ptp(map2) > 0
    np.testing.assert_allclose(
        map3, np.broadcast_to(map2[:, None], map3.shape), atol=1e-4 * np.abs(map2).max()
    )


def test_simple_cnn3d_maps_and_the_2d_only_methods():
    keras.utils.set_random_seed(1)
    model = zoo.load("simple_cnn3d", input_shape=(16, 32, 32), in_chans=1, num_classes=2)
    volumes = np.random.default_rng(2).uniform(0, 1, (1, 16, 32, 32, 1)).astype("float32")
    volumes[:, 4:9, 10:18, 12:20] += 2.0  # a bright box: something for the maps to find
    for method, options in (
        ("gradcam", {}),
        ("occlusion", {"patch": (4, 8, 8)}),
        ("saliency", {}),
        ("smoothgrad", {"samples": 2}),
        ("integrated_gradients", {"steps": 4}),
    ):
        maps = explain_batch(model, volumes, method, class_index=1, **options)
        assert maps.shape == (1, 16, 32, 32) and np.isfinite(maps).all() and np.ptp(maps) > 0, (
            method
        )
    for method in ("cam", "perturbation"):
        with pytest.raises(
            InvalidArgumentError, match=rf"method='{method}' explains 2D images.*use one of gradcam"
        ):
            explain_batch(model, volumes, method)
    with pytest.raises(
        InvalidArgumentError, match="perturbation masks are 2D here.*'occlusion' or 'gradcam'"
    ):
        from zoo.explain.perturbation import perturbation_mask

        perturbation_mask(model, volumes)
    with pytest.raises(
        InputShapeError, match=r"2D images was given to a 3D model.*\(B, D, H, W, C\)"
    ):
        explain_batch(model, volumes[:, 0], "gradcam")
    with pytest.raises(
        InvalidArgumentError, match=r"'head_fc' is not a spatial \(B, D, H, W, C\) layer"
    ):
        explain_batch(model, volumes, "gradcam", layer_name="head_fc")
