"""The weak and strong augmentations of the consistency methods: grey-scale only, defined here.

Images are raw grey values in any range (the zoo's [0, 255], windowed CT, ...); every intensity
change is relative to each image's own [min, max] and the result is clipped back to it, so no
value leaves the range the model was built for. There is NO colour jitter (hue, saturation,
channel mixing): on CT and MR the grey value is the measurement, and colour changes would make
images that cannot exist. Every draw is stateless (a seed per step), so runs repeat exactly.

weak (Pi-model, temporal ensembling, mean teacher, FixMatch's pseudo-label view, pseudo-labels):
    a horizontal flip with probability 1/2 and an integer shift of up to ``WEAK_SHIFT`` of the
    side in each direction (reflected borders). 3D volumes: the flip only. ``flip=False`` leaves
    the mirror out (FixMatch's default): a left-right mirror is not label-preserving for images
    with a side (anatomy: heart left, situs, laterality of a finding; digits, text, markers).

strong (FixMatch's trained view): FixMatch's recipe (Sohn et al. 2020, "RA"): the weak
augmentation (with the same ``flip`` choice), then RandAugment with ``RAND_OPS`` = 2 operations
per image, each drawn uniformly from ``STRONG`` with a magnitude drawn uniformly from its range,
then cutout. Rotations (+-30 degrees), shears and translations keep the side of the image.
The grey-scale operations (relative to each image's own range ``[lo, hi]``, clipped back into it):
    identity;
    gamma: x -> lo + (hi - lo) * ((x - lo) / (hi - lo)) ** g (RandAugment's auto-contrast /
    equalize, grey-scale);
    brightness: x -> lo + f (x - lo); contrast: around the image mean, factor f;
    sharpness: x -> blur + f (x - blur), a 3x3 Gaussian blur (f < 1 blurs, f > 1 sharpens);
    posterize: 2**b grey levels over [lo, hi];
    noise: Gaussian, sigma s * (hi - lo);
    rotate, shear_x, shear_y, translate_x, translate_y (reflected borders);
then cutout: one square of side uniform in (0, ``CUTOUT``] of the image side, set to the
image mean. RandAugment's colour operations (colour balance) and solarize (inverting the grey
values above a threshold) are left out: on CT and MR they make images that cannot exist.
"""

from __future__ import annotations

import math

from zoo.errors import InvalidArgumentError

WEAK_SHIFT = 0.125
RAND_OPS = 2  # operations per image (FixMatch's RandAugment: N = 2, magnitudes random)
CUTOUT = 0.5  # the largest cutout side, as a fraction of the image side
STRONG = {  # operation: magnitude range (FixMatch's RA ranges; grey-scale)
    "identity": (0.0, 0.0),
    "gamma": (0.6, 1.6),
    "brightness": (0.05, 1.95),
    "contrast": (0.05, 1.95),
    "sharpness": (0.05, 1.95),
    "posterize": (4.0, 8.0),
    "noise": (0.0, 0.1),
    "rotate": (-30.0, 30.0),
    "shear_x": (-0.3, 0.3),
    "shear_y": (-0.3, 0.3),
    "translate_x": (-0.3, 0.3),
    "translate_y": (-0.3, 0.3),
}
_INTENSITY = ("identity", "gamma", "brightness", "contrast", "sharpness", "posterize", "noise")
_GEOMETRIC = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")
assert tuple(STRONG) == _INTENSITY + _GEOMETRIC  # rand_augment picks by this order


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


def mirror(x, seed):
    """Each image (or volume) mirrored left-right with probability 1/2."""
    import tensorflow as tf

    mask = _per_image(x, _coin(seed, tf.shape(x)[0]))
    return tf.where(mask, tf.reverse(x, [x.shape.rank - 2]), x)


def affine(x, transforms):
    """Images (N, H, W, C) through per-image projective transforms (N, 8), reflected borders
    (FixMatch's choice; filling with the image's minimum instead was measured and not kept:
    docs/semi.md)."""
    import tensorflow as tf

    return tf.raw_ops.ImageProjectiveTransformV3(
        images=x, transforms=tf.cast(transforms, tf.float32), output_shape=tf.shape(x)[1:3],
        fill_value=0.0, interpolation="BILINEAR", fill_mode="REFLECT")


def _shift_transforms(dy, dx):
    import tensorflow as tf

    one, zero = tf.ones_like(dx), tf.zeros_like(dx)
    return tf.stack([one, zero, dx, zero, one, dy, zero, zero], 1)


def weak(x, seed, flip: bool = True):
    """Flip (unless ``flip`` is False) and integer shift (2D), the flip only (3D); see the module
    docstring. The shift draws do not depend on ``flip``."""
    import tensorflow as tf

    s_flip, s_dy, s_dx = _seeds(seed, 3)
    if flip:
        x = mirror(x, s_flip)
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


def _blur(x):
    import tensorflow as tf

    k1 = tf.constant([0.25, 0.5, 0.25], tf.float32)
    kernel = tf.tensordot(k1, k1, axes=0)[:, :, None, None]
    channels = tf.shape(x)[-1]
    kernel = tf.tile(kernel, [1, 1, channels, 1])
    padded = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="REFLECT")
    return tf.nn.depthwise_conv2d(padded, kernel, [1, 1, 1, 1], "VALID")


def _magnitude(op: str, u):
    """The magnitude of ``op`` for uniform draws ``u`` in [0, 1)."""
    lo, hi = STRONG[op]
    return lo + (hi - lo) * u


def intensity_candidates(x, u, seed):
    """Every operation of ``_INTENSITY`` on the whole batch, per-image magnitudes from ``u``
    (N,): a list in ``_INTENSITY``'s order, each clipped to the image's range."""
    import tensorflow as tf

    lo, hi, span = _range(x)
    unit = tf.clip_by_value((x - lo) / span, 0.0, 1.0)
    mean = tf.reduce_mean(x, [1, 2, 3], keepdims=True)
    blur = _blur(x)

    def m(op):
        return _per_image(x, _magnitude(op, u))

    levels = tf.pow(2.0, tf.round(m("posterize"))) - 1.0
    noise = tf.random.stateless_normal(tf.shape(x), seed) * span * m("noise")
    out = [x, lo + span * tf.pow(unit, m("gamma")), lo + (x - lo) * m("brightness"),
           mean + (x - mean) * m("contrast"), blur + (x - blur) * m("sharpness"),
           lo + span * tf.round(unit * levels) / levels, x + noise]
    return [tf.clip_by_value(c, lo, hi) for c in out]


def geometric_transforms(op_index, u, height, width):
    """Per-image inverse maps (N, 8) about the image centre: the geometric operation the image
    drew (``op_index`` into ``STRONG``'s order), the identity for an intensity operation."""
    import tensorflow as tf

    names = list(STRONG)

    zero = tf.zeros_like(u)

    def pick(op):
        return tf.where(op_index == names.index(op), _magnitude(op, u), zero)

    angle = pick("rotate") * (math.pi / 180)
    sx, sy = pick("shear_x"), pick("shear_y")
    tx, ty = pick("translate_x") * width, pick("translate_y") * height
    cos, sin = tf.cos(angle), tf.sin(angle)
    # output (col, row) -> input: rotation @ [[1, shear_x], [shear_y, 1]] about the centre
    a0, a1 = cos - sin * sy, cos * sx - sin
    b0, b1 = sin + cos * sy, sin * sx + cos
    cy, cx = (height - 1) / 2, (width - 1) / 2
    a2 = cx - a0 * cx - a1 * cy + tx
    b2 = cy - b0 * cx - b1 * cy + ty
    return tf.stack([a0, a1, a2, b0, b1, b2, zero, zero], 1)


def rand_augment(x, seed, ops: int = RAND_OPS):
    """``ops`` operations per image, each drawn uniformly from ``STRONG`` with a uniform
    magnitude (RandAugment as FixMatch uses it)."""
    import tensorflow as tf

    n = tf.shape(x)[0]
    size = tf.cast(tf.shape(x)[1:3], tf.float32)
    for round_seed in _seeds(seed, ops):
        s_op, s_mag, s_noise = _seeds(round_seed, 3)
        op = tf.random.stateless_uniform([n], s_op, 0, len(STRONG), tf.int32)
        u = _uniform(s_mag, n, 0.0, 1.0)
        candidates = tf.stack(intensity_candidates(x, u, s_noise), 0)  # (K, N, H, W, C)
        chosen = tf.where(op < len(_INTENSITY), op, 0)
        x = tf.gather_nd(candidates, tf.stack([chosen, tf.range(n)], 1))
        x = affine(x, geometric_transforms(op, u, size[0], size[1]))
    return x


def cutout(x, seed):
    """One square per image, side uniform in (0, ``CUTOUT``] of the image side, set to the
    image's mean."""
    import tensorflow as tf

    n, h, w = tf.shape(x)[0], tf.shape(x)[1], tf.shape(x)[2]
    s_size, sy, sx = _seeds(seed, 3)
    frac = _uniform(s_size, n, 0.0, CUTOUT)
    side_h = tf.maximum(1, tf.cast(tf.math.ceil(tf.cast(h, tf.float32) * frac), tf.int32))
    side_w = tf.maximum(1, tf.cast(tf.math.ceil(tf.cast(w, tf.float32) * frac), tf.int32))
    y0 = tf.cast(_uniform(sy, n, 0.0, 1.0) * tf.cast(h - side_h + 1, tf.float32), tf.int32)
    x0 = tf.cast(_uniform(sx, n, 0.0, 1.0) * tf.cast(w - side_w + 1, tf.float32), tf.int32)
    rows, cols = tf.range(h)[None, :], tf.range(w)[None, :]
    in_y = (rows >= y0[:, None]) & (rows < (y0 + side_h)[:, None])
    in_x = (cols >= x0[:, None]) & (cols < (x0 + side_w)[:, None])
    box = (in_y[:, :, None] & in_x[:, None, :])[..., None]
    mean = tf.reduce_mean(x, [1, 2, 3], keepdims=True)
    return tf.where(box, mean, x)


def strong(x, seed, flip: bool = True):
    """The strong grey-scale augmentation (2D): weak (with or without its flip), RandAugment,
    cutout (module docstring)."""
    if x.shape.rank != 4:
        raise InvalidArgumentError(
            f"strong augmentation got a batch of rank {x.shape.rank}: it is defined for 2D images "
            "(N, H, W, C); use a method without strong augmentation (e.g. mean_teacher) "
            "for volumes.")
    s_weak, s_rand, s_cut = _seeds(seed, 3)
    return cutout(rand_augment(weak(x, s_weak, flip), s_rand), s_cut)
