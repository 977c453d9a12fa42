"""Image quality for translation and generation: SSIM (TensorFlow's ``tf.image.ssim``), PSNR,
MAE / MSE in physical units (``zoo.metrics.image``), and the Frechet distance on a named zoo
backbone's pooled features (default the shipped ``simple_cnn.ssl_simclr`` encoder). That distance
is not the "FID": FID is defined on InceptionV3's ImageNet features, which the zoo does not use
here; numbers are comparable only with the same backbone and image size.
"""

from __future__ import annotations

import numpy as np

from zoo.errors import InputShapeError, InvalidArgumentError
from zoo.metrics.image import frechet_distance, mae, mse, psnr

__all__ = ["ssim", "psnr", "mae", "mse", "features", "frechet", "DEFAULT_BACKBONE"]

DEFAULT_BACKBONE = "simple_cnn.ssl_simclr"


def _batch(images, name: str) -> np.ndarray:
    images = np.asarray(images, np.float32)
    if images.ndim == 2:
        images = images[None, ..., None]
    elif images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise InputShapeError(f"{name}: shape {images.shape}; give (H, W), (N, H, W) or "
                              "(N, H, W, C) images.")
    return images


def ssim(a, b, data_range: float) -> np.ndarray:
    """SSIM per image (Wang et al. 2004) by ``tf.image.ssim``: 11x11 Gaussian window, sigma 1.5,
    K1 = 0.01, K2 = 0.03, over the window's valid positions (scikit-image's
    ``structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
    data_range=...)`` gives the same number). Images at least 11 x 11."""
    import tensorflow as tf

    if not data_range > 0:
        raise InvalidArgumentError(f"data_range={data_range!r}: give the positive span of the "
                                   "image values (255 for 8-bit, e.g. 2000 for CT in HU).")
    x, y = _batch(a, "a"), _batch(b, "b")
    if x.shape != y.shape or min(x.shape[1:3]) < 11:
        raise InputShapeError(f"images {x.shape} and {y.shape}: give two batches of one shape, "
                              "at least 11 x 11 (the SSIM window).")
    return tf.image.ssim(tf.constant(x), tf.constant(y), max_val=float(data_range),
                         filter_size=11, filter_sigma=1.5, k1=0.01, k2=0.03).numpy()


def features(images, backbone: str = DEFAULT_BACKBONE, batch_size: int = 64) -> np.ndarray:
    """(N, D) average-pooled features of ``backbone`` (``arch`` or ``arch.tag``; the images in
    its input range, e.g. [0, 255] for the default)."""
    from zoo.models.factory import load

    x = _batch(images, "images")
    model = load(backbone, input_shape=x.shape[1:])
    out = np.asarray(model.predict(x, batch_size=batch_size, verbose=0))
    return out.reshape(len(x), -1)


def frechet(real, generated, backbone: str = DEFAULT_BACKBONE) -> float:
    """The Frechet distance of ``backbone``'s features of two image sets (not the FID)."""
    return frechet_distance(features(real, backbone), features(generated, backbone))
