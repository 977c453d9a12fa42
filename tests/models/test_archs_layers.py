"""The custom layers of the new architectures against independent references (numpy, TF, torch rules)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from zoo.errors import InvalidArgumentError
from zoo.layers.lrn import LocalResponseNormalization
from zoo.layers.padding import SpatialPadding
from zoo.layers.pooling import AdaptiveAveragePooling2D, CeilMaxPooling2D
from zoo.layers.resample import CentralCrop, CentralSlice, LinearUpsampling

RNG = np.random.default_rng(0)


def test_lrn_matches_tensorflow_and_the_paper():
    x = RNG.normal(size=(2, 5, 5, 12)).astype("float32") * 20
    got = LocalResponseNormalization()(x).numpy()
    ref = tf.nn.local_response_normalization(x, depth_radius=2, bias=2.0, alpha=1e-4, beta=0.75).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-5)
    c = 0  # the paper's sum at the first channel covers channels 0..2 only
    hand = x[..., c] / (2 + 1e-4 * (x[..., 0:3] ** 2).sum(-1)) ** 0.75
    np.testing.assert_allclose(got[..., c], hand, rtol=1e-5)
    with pytest.raises(InvalidArgumentError, match="odd"):
        LocalResponseNormalization(size=4)


def torch_ceil_pool(x, k, s):
    """torch's MaxPool2d(ceil_mode=True, padding=0), written out: out = ceil((n - k) / s) + 1 windows."""
    n, h, w, c = x.shape
    oh, ow = -(-(h - k) // s) + 1, -(-(w - k) // s) + 1
    out = np.empty((n, oh, ow, c), x.dtype)
    for i in range(oh):
        for j in range(ow):
            out[:, i, j] = x[:, i * s:i * s + k, j * s:j * s + k].max(axis=(1, 2))
    return out


@pytest.mark.parametrize("size", [7, 8, 13, 14])
def test_ceil_max_pooling(size):
    x = RNG.normal(size=(2, size, size + 1, 3)).astype("float32")
    got = CeilMaxPooling2D(3, 2)(x).numpy()
    np.testing.assert_array_equal(got, torch_ceil_pool(x, 3, 2))
    assert CeilMaxPooling2D(3, 2).compute_output_shape((None, size, size + 1, 3))[1:3] == got.shape[1:3]


@pytest.mark.parametrize("size", [4, 6, 9, 13])
def test_adaptive_average_pooling_bins(size):
    x = RNG.normal(size=(1, size, size, 2)).astype("float32")
    got = AdaptiveAveragePooling2D((6, 6))(x).numpy()
    for i in range(6):  # torch's rule: rows floor(i*n/6) .. ceil((i+1)*n/6) - 1
        r0, r1 = (i * size) // 6, -(-((i + 1) * size) // 6)
        for j in range(6):
            c0, c1 = (j * size) // 6, -(-((j + 1) * size) // 6)
            np.testing.assert_allclose(got[0, i, j], x[0, r0:r1, c0:c1].mean(axis=(0, 1)), rtol=1e-5, atol=1e-6)


def test_linear_upsampling_is_half_pixel_bilinear():
    x = RNG.normal(size=(2, 5, 7, 3)).astype("float32")
    got = LinearUpsampling()(x).numpy()
    ref = tf.image.resize(x, (10, 14), method="bilinear").numpy()  # half-pixel centres, edge-clamped
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    v = RNG.normal(size=(1, 3, 4, 5, 2)).astype("float32")
    tri = LinearUpsampling()(v).numpy()
    assert tri.shape == (1, 6, 8, 10, 2)
    # separable: trilinear = bilinear in-plane, then linear along depth
    inplane = np.stack([tf.image.resize(v[:, d], (8, 10)).numpy() for d in range(3)], axis=1)
    depth = tf.image.resize(inplane.transpose(0, 2, 1, 3, 4).reshape(8, 3, 10, 2), (6, 10)).numpy()
    np.testing.assert_allclose(tri, depth.reshape(1, 8, 6, 10, 2).transpose(0, 2, 1, 3, 4), rtol=1e-5, atol=1e-6)


def test_spatial_padding_edge_along_depth_zero_in_plane():
    x = RNG.normal(size=(2, 3, 4, 5, 2)).astype("float32")
    got = SpatialPadding([(2, 1), (1, 1), (0, 3)], edge_axes=(0,))(x).numpy()
    ref = np.pad(x, [(0, 0), (2, 1), (0, 0), (0, 0), (0, 0)], mode="edge")
    ref = np.pad(ref, [(0, 0), (0, 0), (1, 1), (0, 3), (0, 0)])
    np.testing.assert_array_equal(got, ref)


def test_central_crop_and_slice():
    v = RNG.normal(size=(1, 7, 9, 11, 1)).astype("float32")
    np.testing.assert_array_equal(CentralCrop(5)(v).numpy(), v[:, 1:6, 2:7, 3:8])
    np.testing.assert_array_equal(CentralSlice(0)(v).numpy(), v[:, 3])
    np.testing.assert_array_equal(CentralSlice(2)(v).numpy(), v[:, :, :, 5])


def test_layers_round_trip_through_keras_files(tmp_path):
    x = keras.Input((9, 9, 4))
    y = LocalResponseNormalization(size=3, name="lrn")(x)
    y = CeilMaxPooling2D(3, 2, name="ceil")(y)
    y = LinearUpsampling(name="up")(y)
    y = AdaptiveAveragePooling2D((3, 3), name="adaptive")(y)
    y = SpatialPadding([(1, 1), (1, 1)], edge_axes=(1,), name="pad")(y)
    y = CentralCrop(4, name="crop")(y)
    model = keras.Model(x, y)
    model.save(tmp_path / "m.keras")
    again = keras.models.load_model(tmp_path / "m.keras", safe_mode=True)
    data = RNG.normal(size=(2, 9, 9, 4)).astype("float32")
    np.testing.assert_allclose(again.predict(data, verbose=0), model.predict(data, verbose=0), rtol=1e-6)
