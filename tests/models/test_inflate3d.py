"""3D backbones inflated from 2D ImageNet files: a depth-constant volume gives the 2D features.

The 2D files are legacy .h5 written from keras.applications models with random weights
(as in test_imagenet_backbones), described by an ``inflated-2d`` card like the shipped ones.
"""

from __future__ import annotations

import io

import h5py
import keras
import numpy as np
import pytest
from conftest import write_card
from keras.src.legacy.saving import legacy_h5_format

import zoo
from zoo.errors import InputShapeError
from zoo.hub.cards import get_card
from zoo.models.adapt import check_batch

APPS = {"resnet50": ("ResNet50", "caffe"), "densenet121": ("DenseNet121", "torch"), "vgg16": ("VGG16", "caffe")}


def serve_2d(arch, zoo_env, server):
    app, mode = APPS[arch]
    keras.utils.set_random_seed(3)
    ref = getattr(keras.applications, app)(weights=None, include_top=False, input_shape=(32, 32, 3))
    if arch == "densenet121":  # give BatchNorm real statistics, so their inflation is tested too
        for layer in ref.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                c = layer.moving_mean.shape[0]
                rng = np.random.default_rng(len(layer.name))
                layer.set_weights([rng.uniform(0.5, 1.5, c), rng.normal(0, 0.1, c), rng.normal(0, 0.1, c),
                                   rng.uniform(0.5, 1.5, c)])
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, ref)
    data = buf.getvalue()
    url = server.add(f"{arch}.h5", data)
    write_card(zoo_env / "cards", f"{arch}_3d", "test", url, data, format="inflated-2d", inflate_from=arch,
               preprocess=mode, input_size=[32, 32, 32, 3])
    return ref


@pytest.mark.slow
@pytest.mark.parametrize("arch", list(APPS))
def test_depth_constant_volume_gives_2d_features(arch, zoo_env, server):
    serve_2d(arch, zoo_env, server)
    two_d = zoo.load(arch, pretrained=zoo.fetch(f"{arch}_3d.test"), input_shape=(32, 32), in_chans=1,
                     num_classes=0, pooling=None)
    three_d = zoo.load(f"{arch}_3d.test", input_shape=(32, 32, 32), in_chans=1, num_classes=0, pooling=None)
    image = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 1)).astype("float32")
    volume = np.repeat(image[:, None], 32, axis=1)
    f2, f3 = two_d.predict(image, verbose=0), three_d.predict(volume, verbose=0)
    assert f3.shape == (2, 1, *f2.shape[1:])
    scale = np.abs(f2).max()
    np.testing.assert_allclose(f3, np.broadcast_to(f2[:, None], f3.shape), rtol=1e-5, atol=2e-6 * scale)
    mid = three_d.get_layer("conv1_relu" if arch != "vgg16" else "block1_conv2").output
    probe = keras.Model(three_d.inputs, mid).predict(volume, verbose=0)
    np.testing.assert_allclose(probe, np.broadcast_to(probe[:, :1], probe.shape), atol=1e-6 * np.abs(probe).max())


def test_inflated_kernel_is_repeated_and_divided(zoo_env, server):
    serve_2d("resnet50", zoo_env, server)
    two_d = zoo.load("resnet50", pretrained=zoo.fetch("resnet50_3d.test"), input_shape=(32, 32), num_classes=0)
    three_d = zoo.load("resnet50_3d.test", input_shape=(32, 32, 32), num_classes=3)
    k2, k3 = two_d.get_layer("conv1_conv").kernel.numpy(), three_d.get_layer("conv1_conv").kernel.numpy()
    assert k3.shape == (7, *k2.shape)
    np.testing.assert_allclose(k3, np.broadcast_to(k2 / 7, k3.shape), rtol=1e-6)
    np.testing.assert_allclose(k3.sum(axis=0), k2, rtol=1e-5, atol=1e-7)
    assert three_d.output.shape == (None, 3)


@pytest.mark.parametrize("arch", ["resnet50", "densenet121", "vgg16"])
def test_shipped_inflated_cards_point_at_the_2d_file(arch):
    card, source = get_card(f"{arch}_3d.imagenet_inflated"), get_card(f"{arch}.imagenet_notop")
    assert card.format == "inflated-2d" and card.extra["inflate_from"] == arch
    assert (card.urls, card.md5, card.preprocess) == (source.urls, source.md5, source.preprocess)
    assert zoo.model_info(f"{arch}_3d")["spatial_dims"] == 3


@pytest.mark.slow
def test_layer_names_match_keras_applications():
    for arch, (app, _) in APPS.items():
        two_d = getattr(keras.applications, app)(weights=None, include_top=False, input_shape=(32, 32, 3))
        three_d = zoo.load(f"{arch}_3d", input_shape=(32, 32, 32), num_classes=0, pooling=None)
        shapes2 = {la.name: [w.shape for w in la.weights] for la in two_d.layers if la.weights}
        shapes3 = {la.name: [w.shape for w in la.weights] for la in three_d.layers if la.weights}
        assert shapes2.keys() == shapes3.keys()
        for name, ws in shapes2.items():
            assert [s[-len(w):] if len(w) == 4 else s for s, w in zip(shapes3[name], ws)] == [tuple(w) for w in ws]


def test_2d_batch_to_a_3d_model_is_a_clear_error():
    with pytest.raises(InputShapeError, match="3D network"):
        zoo.load("resnet50_3d", input_shape=(64, 64))
    model = zoo.load("unet3d", input_shape=(16, 16, 16), in_chans=1, depth=1, base_filters=2)
    with pytest.raises(InputShapeError, match="5D batch"):
        check_batch(model, np.zeros((2, 16, 16, 1), "float32"))
    check_batch(model, np.zeros((2, 16, 16, 16, 1), "float32"))
