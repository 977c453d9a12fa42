"""The weak and strong augmentations of the consistency methods: grey-scale only, defined here.

Images are raw grey values in any range (the zoo's [0, 255], windowed CT, ...); every intensity
change is relative to each image's own [min, max] and the result is clipped back to it, so no
value leaves the range the model was built for. There is NO colour jitter (hue, saturation,
channel mixing): on CT and MR the grey value is the measurement, and colour changes would make
images that cannot exist. Every draw is stateless (a seed per step), so runs repeat exactly.

weak (Pi-model, temporal ensembling, mean teacher, FixMatch's pseudo-label view, pseudo-labels):
    a horizontal flip with probability 1/2 and an integer shift of up to ``WEAK_SHIFT`` of the
    side in each direction (reflected borders). 3D volumes: the flip only.

strong (FixMatch's trained view), ``STRONG`` holds the ranges; each intensity step is applied
to an image with probability 1/2, with a uniformly drawn magnitude:
    gamma: x -> lo + (hi - lo) * ((x - lo) / (hi - lo)) ** g, g in [0.6, 1.6];
    contrast: around the image mean, factor in [0.6, 1.4];
    brightness: + b * (hi - lo), b in [-0.2, 0.2];
    noise: Gaussian, sigma s * (hi - lo), s in [0, 0.06];
    blur: a 3x3 Gaussian blur blended in with weight in [0, 1];
    then always an affine map (rotation +-30 degrees, scale 0.85-1.15, shear +-0.2, shift +-0.125
    of the side; reflected borders), then cutout: one square of half the side set to the image
    mean (as in FixMatch).
"""

from __future__ import annotations

import math

from zoo.errors import InvalidArgumentError

WEAK_SHIFT = 0.125
STRONG = {
    "gamma": (0.6, 1.6),
    "contrast": (0.6, 1.4),
    "brightness": (-0.2, 0.2),
    "noise": (0.0, 0.06),
    "blur": (0.0, 1.0),
    "rotation_degrees": (-30.0, 30.0),
    "scale": (0.85, 1.15),
    "shear": (-0.2, 0.2),
    "shift": (-0.125, 0.125),
    "cutout": 0.5,
}


def _seeds(seed, n: int):
    import tensorflow as tf

    return tf.unstack(tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), n))


def _uniform(seed, n, low, high):
    import tensorflow as tf

    return tf.random.stateless_uniform([n], seed, low, high)


def _per_image(x, values):
    """(N,) values broadcast against images (N, ...)."""
    import tensorflow as tf

    return tf.reshape(values, [-1] + [1] * (x.shape.rank - 1))


def _coin(seed, n):
    return _uniform(seed, n, 0.0, 1.0) < 0.5


def flip(x, seed):
    """Each image (or volume) mirrored left-right with probability 1/2."""
    import tensorflow as tf

    mask = _per_image(x, _coin(seed, tf.shape(x)[0]))
    return tf.where(mask, tf.reverse(x, [x.shape.rank - 2]), x)


def affine(x, transforms):
    """Images (N, H, W, C) through per-image projective transforms (N, 8), reflected borders."""
    import tensorflow as tf

    shape = tf.shape(x)[1:3]
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=x, transforms=tf.cast(transforms, tf.float32), output_shape=shape,
        fill_value=0.0, interpolation="BILINEAR", fill_mode="REFLECT")


def _shift_transforms(dy, dx):
    import tensorflow as tf

    one, zero = tf.ones_like(dx), tf.zeros_like(dx)
    return tf.stack([one, zero, dx, zero, one, dy, zero, zero], 1)


def weak(x, seed):
    """Flip and integer shift (2D), flip only (3D); see the module docstring."""
    import tensorflow as tf

    s_flip, s_dy, s_dx = _seeds(seed, 3)
    x = flip(x, s_flip)
    if x.shape.rank != 4:
        return x
    n = tf.shape(x)[0]
    size = tf.cast(tf.shape(x)[1:3], tf.float32)
    dy = tf.round(_uniform(s_dy, n, -WEAK_SHIFT, WEAK_SHIFT) * size[0])
    dx = tf.round(_uniform(s_dx, n, -WEAK_SHIFT, WEAK_SHIFT) * size[1])
    return affine(x, _shift_transforms(dy, dx))


def _range(x):
    import tensorflow as tf

    axes = list(range(1, x.shape.rank))
    lo = tf.reduce_min(x, axes, keepdims=True)
    hi = tf.reduce_max(x, axes, keepdims=True)
    return lo, hi, tf.maximum(hi - lo, 1e-6)


def _maybe(x, changed, seed):
    import tensorflow as tf

    return tf.where(_per_image(x, _coin(seed, tf.shape(x)[0])), changed, x)


def _blur(x):
    import tensorflow as tf

    k1 = tf.constant([0.25, 0.5, 0.25], tf.float32)
    kernel = tf.tensordot(k1, k1, axes=0)[:, :, None, None]
    channels = tf.shape(x)[-1]
    kernel = tf.tile(kernel, [1, 1, channels, 1])
    padded = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="REFLECT")
    return tf.nn.depthwise_conv2d(padded, kernel, [1, 1, 1, 1], "VALID")


def intensity(x, seed):
    """Gamma, contrast, brightness, noise and blur, each with probability 1/2 (see above)."""
    import tensorflow as tf

    n = tf.shape(x)[0]
    seeds = _seeds(seed, 11)
    lo, hi, span = _range(x)

    def draw(i, key):
        return _per_image(x, _uniform(seeds[i], n, *STRONG[key]))

    unit = (x - lo) / span
    x = _maybe(x, lo + span * tf.pow(tf.clip_by_value(unit, 0.0, 1.0), draw(0, "gamma")),
               seeds[1])
    mean = tf.reduce_mean(x, list(range(1, x.shape.rank)), keepdims=True)
    x = _maybe(x, mean + (x - mean) * draw(2, "contrast"), seeds[3])
    x = _maybe(x, x + span * draw(4, "brightness"), seeds[5])
    noise = tf.random.stateless_normal(tf.shape(x), seeds[6]) * span * draw(7, "noise")
    x = _maybe(x, x + noise, seeds[8])
    if x.shape.rank == 4:
        weight = draw(9, "blur")
        x = _maybe(x, weight * _blur(x) + (1 - weight) * x, seeds[10])
    return tf.clip_by_value(x, lo, hi)


def _affine_transforms(seed, n, height, width):
    """Per-image inverse maps (output -> input pixel) about the image centre."""
    import tensorflow as tf

    s = _seeds(seed, 5)
    angle = _uniform(s[0], n, *STRONG["rotation_degrees"]) * (math.pi / 180)
    scale = _uniform(s[1], n, *STRONG["scale"])
    shear = _uniform(s[2], n, *STRONG["shear"])
    ty = _uniform(s[3], n, *STRONG["shift"]) * height
    tx = _uniform(s[4], n, *STRONG["shift"]) * width
    cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
    a0, a1 = cos, -sin + shear * cos
    b0, b1 = sin, cos + shear * sin
    cy, cx = (height - 1) / 2, (width - 1) / 2
    a2 = cx - a0 * cx - a1 * cy + tx
    b2 = cy - b0 * cx - b1 * cy + ty
    zero = tf.zeros_like(a0)
    return tf.stack([a0, a1, a2, b0, b1, b2, zero, zero], 1)


def cutout(x, seed):
    """One square of ``STRONG["cutout"]`` of the side per image, set to the image's mean."""
    import tensorflow as tf

    n, h, w = tf.shape(x)[0], tf.shape(x)[1], tf.shape(x)[2]
    sy, sx = _seeds(seed, 2)
    side_h = tf.cast(tf.cast(h, tf.float32) * STRONG["cutout"], tf.int32)
    side_w = tf.cast(tf.cast(w, tf.float32) * STRONG["cutout"], tf.int32)
    y0 = tf.random.stateless_uniform([n], sy, 0, h - side_h + 1, tf.int32)
    x0 = tf.random.stateless_uniform([n], sx, 0, w - side_w + 1, tf.int32)
    rows, cols = tf.range(h)[None, :], tf.range(w)[None, :]
    in_y = (rows >= y0[:, None]) & (rows < (y0 + side_h)[:, None])
    in_x = (cols >= x0[:, None]) & (cols < (x0 + side_w)[:, None])
    box = (in_y[:, :, None] & in_x[:, None, :])[..., None]
    mean = tf.reduce_mean(x, [1, 2, 3], keepdims=True)
    return tf.where(box, mean, x)


def strong(x, seed):
    """The strong grey-scale augmentation (2D): intensity steps, flip, affine, cutout."""
    import tensorflow as tf

    if x.shape.rank != 4:
        raise InvalidArgumentError(
            f"strong augmentation got a batch of rank {x.shape.rank}: it is defined for 2D images "
            "(N, H, W, C); use a method without strong augmentation (e.g. mean_teacher) "
            "for volumes.")
    s_int, s_flip, s_aff, s_cut = _seeds(seed, 4)
    x = intensity(x, s_int)
    x = flip(x, s_flip)
    size = tf.cast(tf.shape(x)[1:3], tf.float32)
    x = affine(x, _affine_transforms(s_aff, tf.shape(x)[0], size[0], size[1]))
    return cutout(x, s_cut)
