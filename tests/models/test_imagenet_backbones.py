"""zoo.load on the keras.applications backbones against keras.applications itself.

Weight files are legacy-format .h5 written from keras.applications models with random
weights, served over a loopback HTTP server and described by cards the test writes.
"""

from __future__ import annotations

import io

import h5py
import keras
import numpy as np
import pytest
from conftest import write_card
from keras.src.legacy.saving import legacy_h5_format
from numerics_util import assert_deep_close, depth_of

import zoo
from zoo.errors import InputShapeError, InvalidArgumentError, UnknownModelError, WeightsError

# arch: (keras.applications constructor, preprocess module, preprocess mode, test size)
ARCHS = {
    "inception_v3": ("InceptionV3", "inception_v3", "tf", 75),
    "resnet50": ("ResNet50", "resnet", "caffe", 64),
    "resnet101": ("ResNet101", "resnet", "caffe", 32),
    "resnet152": ("ResNet152", "resnet", "caffe", 32),
    "densenet121": ("DenseNet121", "densenet", "torch", 64),
    "densenet169": ("DenseNet169", "densenet", "torch", 32),
    "densenet201": ("DenseNet201", "densenet", "torch", 32),
    "vgg16": ("VGG16", "vgg16", "caffe", 32),
    "vgg19": ("VGG19", "vgg19", "caffe", 32),
}
HEAVY = {"resnet101", "resnet152", "densenet169", "densenet201"}


def legacy_h5_bytes(model) -> bytes:
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
    return buf.getvalue()


def serve_reference(arch, zoo_env, server, size, include_top=False, tag="test"):
    app, _, mode, _ = ARCHS[arch]
    keras.utils.set_random_seed(1)
    ref = getattr(keras.applications, app)(weights=None, include_top=include_top, input_shape=(size, size, 3))
    data = legacy_h5_bytes(ref)
    url = server.add(f"{arch}_{tag}.h5", data)
    write_card(zoo_env / "cards", arch, tag, url, data, preprocess=mode, include_top=include_top,
               input_size=[size, size, 3], num_classes=1000 if include_top else 0)
    return ref


def images(size, chans=3, n=2, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, chans)).astype("float32")


def run(model, x):
    """The model called directly (no predict: no tf.function to trace for one small batch)."""
    out = model(x, training=False)
    return [o.numpy() for o in out] if isinstance(out, list | tuple) else out.numpy()


@pytest.mark.numerics
@pytest.mark.parametrize("arch", [pytest.param(a, marks=pytest.mark.slow) if a in HEAVY else a for a in ARCHS])
def test_parity_grey_identity_and_heads(arch, zoo_env, server):
    app, module, _, size = ARCHS[arch]
    ref = serve_reference(arch, zoo_env, server, size)
    x = images(size)
    preprocess = getattr(keras.applications, module).preprocess_input
    expected = run(ref, preprocess(x.copy()))

    backbone = zoo.load(arch, pretrained="test", num_classes=0, pooling=None)
    got = run(backbone, x)
    assert_deep_close(got, expected, depth_of(arch), what=f"{arch} vs keras.applications ")
    # the tolerance is far too tight to let a real bug through: another preprocessing mode fails it
    wrong = {"caffe": "torch"}.get(ARCHS[arch][2], "caffe")
    off = run(ref, keras.applications.imagenet_utils.preprocess_input(x.copy(), mode=wrong))
    with pytest.raises(AssertionError, match="allowed"):
        assert_deep_close(got, off, depth_of(arch), what=f"{arch} with {wrong} preprocessing (must fail) ")

    grey = zoo.load(arch, pretrained="test", in_chans=1, num_classes=0, pooling=None)
    g = x[..., :1]
    assert_deep_close(run(grey, g), run(backbone, np.repeat(g, 3, -1)), depth_of(arch), what=f"{arch} grey ")

    head = zoo.load(arch, pretrained="test", in_chans=1, num_classes=5, dropout=0.2)
    assert head.output.shape == (None, 5) and head.get_layer("head_fc").units == 5
    for layer in grey.layers:
        if layer.weights:
            for a, b in zip(layer.get_weights(), head.get_layer(layer.name).get_weights()):
                np.testing.assert_array_equal(a, b)


@pytest.mark.numerics
def test_top_checkpoint_keeps_imagenet_classifier(zoo_env, server):
    ref = serve_reference("densenet121", zoo_env, server, 64, include_top=True, tag="top")
    x = images(64)
    expected = run(ref, keras.applications.densenet.preprocess_input(x.copy()))
    model = zoo.load("densenet121", pretrained="top")
    assert model.output.shape == (None, 1000)
    assert_deep_close(run(model, x), expected, depth_of("densenet121"), what="densenet121 top ")


@pytest.mark.numerics
def test_six_channel_rule_on_constant_images(zoo_env, server):
    """timm's rule: a 6-channel model on a constant-across-channels image equals the RGB model."""
    serve_reference("inception_v3", zoo_env, server, 75)
    rgb = zoo.load("inception_v3", pretrained="test", num_classes=0)
    six = zoo.load("inception_v3", pretrained="test", in_chans=6, num_classes=0)
    g = images(75, 1)
    assert_deep_close(run(six, np.repeat(g, 6, -1)), run(rgb, np.repeat(g, 3, -1)), depth_of("inception_v3"),
                      what="6 channels vs RGB ")


def test_bad_input_raises_clear_errors(zoo_env, server, tmp_path):
    with pytest.raises(UnknownModelError, match="Did you mean 'resnet50'"):
        zoo.load("resnet500")
    with pytest.raises(UnknownModelError, match="imagenet"):
        zoo.load("resnet50", pretrained="imagenett")
    with pytest.raises(InvalidArgumentError, match="in_chans=0"):
        zoo.load("resnet50", in_chans=0)
    with pytest.raises(InputShapeError, match=">= 75"):
        zoo.load("inception_v3", input_shape=(64, 64))
    with pytest.raises(InputShapeError, match="channels"):
        zoo.load("resnet50", input_shape=(64, 64, 3), in_chans=1)
    with pytest.raises(WeightsError, match="no such file"):
        zoo.load("resnet50", pretrained=str(tmp_path / "missing.h5"))
    with pytest.raises(InvalidArgumentError, match="224"):
        zoo.load("vgg16", pretrained="imagenet", input_shape=(64, 64))
    serve_reference("vgg16", zoo_env, server, 32)
    with pytest.raises(WeightsError, match="does not fit densenet121"):
        zoo.load("densenet121", pretrained=zoo.fetch("vgg16.test"), input_shape=(32, 32))
