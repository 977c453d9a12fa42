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
from conftest import FileServer, write_card
from keras.src.legacy.saving import legacy_h5_format
from numerics_util import assert_deep_close, depth_of

import zoo
from zoo.errors import InputShapeError
from zoo.hub.cards import get_card
from zoo.models.adapt import check_batch

APPS = {"resnet50": ("ResNet50", "caffe"), "densenet121": ("DenseNet121", "torch"), "vgg16": ("VGG16", "caffe")}


def serve_2d(arch, cards, server):
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
    write_card(cards, f"{arch}_3d", "test", url, data, format="inflated-2d", inflate_from=arch,
               preprocess=mode, input_size=[32, 32, 32, 3])
    return ref


@pytest.fixture(scope="module")
def inflated(tmp_path_factory):
    """arch -> (keras.applications 2D reference, zoo 2D on the served file, zoo 3D inflated from it).

    Built once per module and architecture (the 3D networks are the suite's heaviest builds), in a
    ZOO_HOME of this module's own, from a file served over loopback as in test_imagenet_backbones.
    """
    server, home, built = FileServer(), tmp_path_factory.mktemp("inflate3d_home"), {}
    (home / "cards").mkdir()

    def get(arch):
        if arch not in built:
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv("ZOO_HOME", str(home))
                ref = serve_2d(arch, home / "cards", server)
                two_d = zoo.load(arch, pretrained=zoo.fetch(f"{arch}_3d.test"), input_shape=(32, 32), in_chans=1,
                                 num_classes=0, pooling=None)
                three_d = zoo.load(f"{arch}_3d.test", input_shape=(32, 32, 32), in_chans=1, num_classes=0,
                                   pooling=None)
            built[arch] = ref, two_d, three_d
        return built[arch]

    yield get
    server.close()


@pytest.mark.slow
@pytest.mark.numerics
@pytest.mark.parametrize("arch", list(APPS))
def test_depth_constant_volume_gives_2d_features(arch, inflated):
    _, two_d, three_d = inflated(arch)
    image = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 1)).astype("float32")
    volume = np.repeat(image[:, None], 32, axis=1)
    f2, f3 = two_d(image, training=False).numpy(), three_d(volume, training=False).numpy()
    assert f3.shape == (2, 1, *f2.shape[1:])
    assert_deep_close(f3, np.broadcast_to(f2[:, None], f3.shape), depth_of(arch), what=f"{arch} 3D vs 2D ")
    layer = "conv1_relu" if arch != "vgg16" else "block1_conv2"
    probe = keras.Model(three_d.inputs, three_d.get_layer(layer).output)(volume, training=False).numpy()
    assert_deep_close(probe, np.broadcast_to(probe[:, :1], probe.shape), 2, what=f"{arch} {layer} along depth ")


def test_inflated_kernel_is_repeated_and_divided(inflated):
    ref, two_d, three_d = inflated("resnet50")
    k2, k3 = two_d.get_layer("conv1_conv").kernel.numpy(), three_d.get_layer("conv1_conv").kernel.numpy()
    assert k3.shape == (7, *k2.shape)
    np.testing.assert_allclose(k3, np.broadcast_to(k2 / 7, k3.shape), rtol=1e-6)
    np.testing.assert_allclose(k3.sum(axis=0), k2, rtol=1e-5, atol=1e-7)
    # grey input is broadcast to RGB inside the preprocessing: the kernels are the 2D file's own
    np.testing.assert_array_equal(k2, ref.get_layer("conv1_conv").kernel.numpy())


@pytest.mark.parametrize("arch", ["resnet50", "densenet121", "vgg16"])
def test_shipped_inflated_cards_point_at_the_2d_file(arch):
    card, source = get_card(f"{arch}_3d.imagenet_inflated"), get_card(f"{arch}.imagenet_notop")
    assert card.format == "inflated-2d" and card.inflate_from == arch
    assert (card.urls, card.md5, card.preprocess) == (source.urls, source.md5, source.preprocess)
    assert zoo.model_info(f"{arch}_3d")["spatial_dims"] == 3


def test_phantom_inflated_card_points_at_the_shipped_2d_checkpoint():
    """The zoo's own file, a Keras 3 .weights.h5 with a classifier top, inflated like the legacy ones
    (tests/models/test_unet_encoder.py checks the weights and features)."""
    card, source = get_card("simple_cnn_3d.phantom_inflated"), get_card("simple_cnn.phantom")
    assert card.format == "inflated-2d" and card.inflate_from == "simple_cnn" and not card.include_top
    assert (card.urls, card.sha256, card.size, card.preprocess, card.input_range, card.in_chans) == (
        source.urls, source.sha256, source.size, source.preprocess, source.input_range, source.in_chans)
    assert zoo.model_info("simple_cnn_3d")["spatial_dims"] == 3


@pytest.mark.parametrize("arch", list(APPS))
def test_layer_names_match_keras_applications(arch, inflated):
    """Same layer names and, but for the added depth axis, the same weight shapes."""
    keras_2d, _, three_d = inflated(arch)
    shapes2 = {la.name: [tuple(w.shape) for w in la.weights] for la in keras_2d.layers if la.weights}
    shapes3 = {la.name: [tuple(w.shape) for w in la.weights] for la in three_d.layers if la.weights}
    assert shapes2.keys() == shapes3.keys()
    for name, ws in shapes2.items():
        assert [s[-len(w):] if len(w) == 4 else s for s, w in zip(shapes3[name], ws)] == ws, name
        assert all(len(s) == 5 for s, w in zip(shapes3[name], ws) if len(w) == 4), name  # kernels gained depth


def test_2d_batch_to_a_3d_model_is_a_clear_error():
    with pytest.raises(InputShapeError, match="3D network"):
        zoo.load("resnet50_3d", input_shape=(64, 64))
    model = zoo.load("unet3d", input_shape=(16, 16, 16), in_chans=1, depth=1, base_filters=2)
    with pytest.raises(InputShapeError, match="5D batch"):
        check_batch(model, np.zeros((2, 16, 16, 1), "float32"))
    check_batch(model, np.zeros((2, 16, 16, 16, 1), "float32"))
