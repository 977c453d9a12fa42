"""CAM and Grad-CAM: the CAM identity of a GAP model, Grad-CAM = CAM / (H W), the layer helper."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import zoo
from zoo.errors import InvalidArgumentError
from zoo.explain.cam import class_activation_maps, gap_classifier, upsample
from zoo.explain.gradcam import conv_layers, default_layer, find_conv_layer, grad_cam
from zoo.heads.builder import build_mil_head, build_tiled_mil

X = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 1)).astype("float32")


@pytest.fixture(scope="module")
def gap_models():
    """simple_cnn with the zoo's GAP + Dense head: logits, and softmax with dropout in between."""
    keras.utils.set_random_seed(0)
    logits = zoo.load("simple_cnn", in_chans=1, input_shape=(32, 32), num_classes=3, classifier_activation=None)
    soft = zoo.load("simple_cnn", in_chans=1, input_shape=(32, 32), num_classes=3, dropout=0.3)
    for model in (logits, soft):  # non-trivial BatchNorm statistics, so the maps are not constant
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.moving_variance.assign(np.full(layer.moving_variance.shape, 0.5, "float32"))
    return logits, soft


def test_cam_spatial_mean_plus_bias_is_the_gap_model_logit(gap_models):
    model = gap_models[0]
    logits = model.predict(X, verbose=0)
    dense = model.get_layer("head_fc")
    for c in range(3):
        cam = class_activation_maps(model, X, class_index=c, upsample_to_input=False)
        assert cam.shape == (3, 1, 1) or cam.ndim == 3
        np.testing.assert_allclose(cam.mean((1, 2)) + dense.bias.numpy()[c], logits[:, c], rtol=1e-4, atol=1e-4)
    features, layer = gap_classifier(model)
    assert layer is dense and features.shape[1:] == (1, 1, 64)


def test_cam_identity_on_a_wider_map_and_upsampling():
    inp = keras.Input((12, 12, 2))
    a = keras.layers.Conv2D(5, 3, padding="same", activation="relu", name="conv")(inp)
    pooled = keras.layers.GlobalAveragePooling2D(name="gap")(a)
    model = keras.Model(inp, keras.layers.Dense(4, name="fc")(pooled))
    x = np.random.default_rng(1).normal(size=(2, 12, 12, 2)).astype("float32")
    cam = class_activation_maps(model, x, class_index=2, upsample_to_input=False)
    assert cam.shape == (2, 12, 12)
    np.testing.assert_allclose(cam.mean((1, 2)) + model.get_layer("fc").bias.numpy()[2],
                               model.predict(x, verbose=0)[:, 2], rtol=1e-4, atol=1e-5)
    # default class = top class
    top = model.predict(x, verbose=0).argmax(-1)
    expected = np.stack([class_activation_maps(model, x[i:i + 1], int(top[i]), False)[0] for i in range(2)])
    np.testing.assert_allclose(class_activation_maps(model, x, None, False), expected, rtol=1e-5)
    up = upsample(np.ones((1, 3, 3)) * 7.0, (9, 9))
    assert up.shape == (1, 9, 9) and np.allclose(up, 7.0)


@pytest.mark.parametrize("cells", [2, 4, 8])
def test_upsampled_peak_stays_at_its_cells_centre(cells):
    """Every cell's peak, border cells included, lands on the cell's centre pixels (clamped
    bilinear resizing put a border cell's peak in the image corner)."""
    import tensorflow as tf

    stride = 64 // cells
    for i, j in [(0, 0), (cells - 1, 0), (cells // 2, cells - 1)]:
        low = np.zeros((1, cells, cells), np.float32)
        low[0, i, j] = 1.0
        y, x = np.unravel_index(np.argmax(upsample(low, (64, 64))[0]), (64, 64))
        centre = (i * stride + (stride - 1) / 2, j * stride + (stride - 1) / 2)
        assert abs(y - centre[0]) <= 0.5 and abs(x - centre[1]) <= 0.5, (i, j, y, x)
    # between the outermost cell centres it is TensorFlow's half-pixel bilinear resize
    low = np.random.default_rng(cells).normal(size=(2, cells, cells, 3)).astype(np.float32)
    reference = tf.image.resize(low, (64, 64), method="bilinear").numpy()
    inner = slice(stride // 2, 64 - stride // 2)
    np.testing.assert_allclose(upsample(low, (64, 64))[:, inner, inner], reference[:, inner, inner], atol=1e-5)
    np.testing.assert_array_equal(upsample(low, (64, 64), "nearest"), np.repeat(np.repeat(low, stride, 1), stride, 2))


@pytest.mark.parametrize("which", [0, 1])
def test_grad_cam_of_conv_gap_dense_is_cam_over_hw(gap_models, which):
    """On the softmax model too: Grad-CAM differentiates the pre-softmax score (logits=True)."""
    model = gap_models[which]
    layer = gap_classifier(model)[0]._keras_history.operation.name
    cam = class_activation_maps(model, X, class_index=1, upsample_to_input=False)
    gc = grad_cam(model, X, layer_name=layer, class_index=1, relu=False, upsample_to_input=False)
    h, w = cam.shape[1:]
    np.testing.assert_allclose(gc, cam / (h * w), rtol=1e-4, atol=1e-6)


def test_grad_cam_identity_at_a_real_spatial_resolution():
    inp = keras.Input((10, 10, 1))
    a = keras.layers.Conv2D(6, 3, padding="same", activation="tanh", name="conv")(inp)
    out = keras.layers.Dense(3, activation="softmax", name="fc")(keras.layers.GlobalAveragePooling2D(name="gap")(a))
    model = keras.Model(inp, out)
    x = np.random.default_rng(2).normal(size=(2, 10, 10, 1)).astype("float32")
    cam = class_activation_maps(model, x, class_index=0, upsample_to_input=False)
    gc = grad_cam(model, x, "conv", class_index=0, relu=False, upsample_to_input=False)
    np.testing.assert_allclose(gc, cam / 100.0, rtol=1e-4, atol=1e-7)
    relu = grad_cam(model, x, "conv", class_index=0)
    assert relu.shape == (2, 10, 10) and relu.min() >= 0
    np.testing.assert_allclose(relu, np.maximum(cam, 0) / 100.0, rtol=1e-4, atol=1e-7)


def test_mil_head_cam_is_its_instance_map_and_grad_cam_explains_the_bag():
    feats = zoo.load("simple_cnn", in_chans=1, input_shape=(32, 32), features=(8,))
    model = build_mil_head(feats, "lse", num_classes=2)
    out = model.predict(X, verbose=0)
    cam = class_activation_maps(model, X, class_index=1, upsample_to_input=False)
    np.testing.assert_allclose(cam, out["instance_maps"][..., 1], rtol=1e-6)
    assert class_activation_maps(model, X, class_index=1).shape == (3, 32, 32)
    gc = grad_cam(model, X, class_index=0)
    assert gc.shape == (3, 32, 32) and np.isfinite(gc).all() and gc.min() >= 0


def test_grad_cam_for_a_keras_applications_backbone():
    model = zoo.load("resnet50", in_chans=1, input_shape=(32, 32), num_classes=2)
    gc = grad_cam(model, X[:1], layer_name="conv4_block6_out")
    assert gc.shape == (1, 32, 32) and np.isfinite(gc).all()
    # at 32 px conv5 is 1 x 1; the default is the deepest map of >= 7 x 7 (conv2's 8 x 8)
    assert find_conv_layer(model).name == "conv2_block3_out"


def test_layer_helper_suggests_valid_layers(gap_models):
    model = gap_models[0]
    names = conv_layers(model)
    assert names[0] == "preprocess" and names[-1] == "stage5_pool" and "head_fc" not in names
    assert find_conv_layer(model).name == default_layer(model) == "stage3_relu2"  # 8 x 8 at 32 px; then 4 x 4
    with pytest.raises(InvalidArgumentError, match=r"'stage4_conv' is not in model .*Did you mean .*'stage4_conv1'.*stage5_pool"):
        grad_cam(model, X, layer_name="stage4_conv")
    with pytest.raises(InvalidArgumentError, match=r"'head_fc' is not a spatial \(B, H, W, C\) layer"):
        find_conv_layer(model, "head_fc")
    with pytest.raises(InvalidArgumentError, match="class_index=5"):
        grad_cam(model, X, class_index=5)
    tiled = build_tiled_mil(keras.Model(model.inputs, model.get_layer("stage3_pool").output), "max")
    with pytest.raises(InvalidArgumentError, match="Grad-CAM explains a model of one image input"):
        grad_cam(tiled, np.zeros((1, 2, 32, 32, 1)))
    with pytest.raises(InvalidArgumentError, match="global-average-pooling"):
        inp = keras.Input((8, 8, 1))
        flat = keras.layers.Flatten()(keras.layers.Conv2D(2, 3, name="c")(inp))
        class_activation_maps(keras.Model(inp, keras.layers.Dense(2)(flat)), np.zeros((1, 8, 8, 1)))


def test_grad_cam_points_at_the_lesion_on_the_shipped_phantom_checkpoint(zoo_env):
    """Pointing game on 100 held-out positive phantoms of the checkpoint's task, tolerance half the
    explained layer's stride; chance is the fraction of the image within that tolerance of a lesion."""
    from zoo.data.localisation import pointing_game
    from zoo.data.synthetic import make_phantoms
    from zoo.demo import SOURCE_TASK
    from zoo.demo.mil import chance_pointing

    model = zoo.load("simple_cnn.phantom")
    task = {k: v for k, v in SOURCE_TASK.items() if k not in ("n", "seed")}
    held_out = make_phantoms(100, seed=SOURCE_TASK["seed"] + 9999, positive_fraction=1.0, **task)
    layer = find_conv_layer(model)
    stride = model.inputs[0].shape[1] // layer.output.shape[1]
    maps = grad_cam(model, held_out.images, class_index=1)  # one batched gradient
    tolerance = stride // 2
    score, chance = pointing_game(maps, held_out.masks, tolerance), chance_pointing(held_out.masks, tolerance)
    assert score >= 0.6 and score > chance + 0.4, (layer.name, stride, score, chance)
