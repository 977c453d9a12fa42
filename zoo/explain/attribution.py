"""Attribution maps beyond the plain gradient: SmoothGrad, integrated gradients, occlusion.

All three explain one class score of one output (``zoo.explain.targets``), fixed per image
from the unperturbed input so that noisy, interpolated or occluded copies are scored against
the same class. They work on 2D images and 3D volumes alike.

- SmoothGrad (Smilkov et al. 2017): the mean input gradient over copies with Gaussian noise of
  standard deviation ``sigma`` times the image's value range; ``sigma=0`` is plain saliency.
- Integrated gradients (Sundararajan et al. 2017): (x - x') times the path integral of the
  gradient from the baseline x' to x (trapezoid rule); the attributions sum to
  f(x) - f(x') up to the quadrature error (completeness), reported by ``completeness_gap``.
- Occlusion (Zeiler & Fergus 2014): each pixel gets the mean drop of the score over the
  patches covering it when each is replaced by the baseline; for a linear model and 1-pixel
  patches that drop is the weights times (x - baseline), summed over channels.
"""

from __future__ import annotations

import itertools

import keras
import numpy as np
import tensorflow as tf

from zoo.errors import InvalidArgumentError
from zoo.explain.inputs import check_images
from zoo.explain.targets import pick_class, score_head


class Scorer:
    """One class score per image of ``model``'s chosen output (pre-softmax with ``logits``)."""

    def __init__(self, model, output=None, logits=True):
        tensor, self.head = score_head(model, output, logits)
        self.graph = keras.Model(model.inputs, tensor)

    def all_scores(self, x) -> tf.Tensor:
        """(B, C) scores of every class."""
        scores = self.head(self.graph([tf.convert_to_tensor(x)], training=False))
        return tf.reshape(scores, (tf.shape(scores)[0], -1))

    def classes(self, x, class_index=None) -> np.ndarray:
        """(B,) class per image: ``class_index`` (checked) or each image's top class."""
        return pick_class(self.all_scores(x), class_index)[1].astype("int32")

    def score(self, x, index) -> np.ndarray:
        """(B,) score of class ``index`` (B,) per image."""
        return keras.ops.convert_to_numpy(pick_class(self.all_scores(x), index)[0])

    def gradient(self, x, index) -> np.ndarray:
        """d score / d x, the shape of ``x``."""
        x = tf.convert_to_tensor(np.asarray(x, np.float32))
        with tf.GradientTape() as tape:
            tape.watch(x)
            total = tf.reduce_sum(pick_class(self.all_scores(x), index)[0])
        return tape.gradient(total, x).numpy()


REDUCE = (None, "max", "mean", "sum")


def postprocess(g, absolute=True, channel_reduce="max", normalize=True) -> np.ndarray:
    """The usual map of an input attribution (B, *spatial, C): absolute value, a reduction over
    channels, scaling to [0, 1] per image; each step optional so raw values can be checked."""
    if channel_reduce not in REDUCE:
        raise InvalidArgumentError(
            f"channel_reduce={channel_reduce!r}: use None, 'max', 'mean' or 'sum'."
        )
    if absolute:
        g = np.abs(g)
    if channel_reduce is not None:
        g = getattr(g, channel_reduce)(axis=-1)
    if normalize:
        axes = tuple(range(1, g.ndim))
        lo, hi = g.min(axis=axes, keepdims=True), g.max(axis=axes, keepdims=True)
        g = (g - lo) / np.maximum(hi - lo, 1e-12)
    return g


def _positive_int(name, value, minimum=1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise InvalidArgumentError(f"{name}={value!r}: give an integer >= {minimum}.")
    return int(value)


def smoothgrad(
    model,
    images,
    class_index=None,
    output=None,
    logits=True,
    samples=16,
    sigma=0.15,
    seed=0,
    absolute=True,
    channel_reduce="max",
    normalize=True,
    batch_size=32,
) -> np.ndarray:
    """SmoothGrad maps: the input gradient averaged over ``samples`` noisy copies.

    ``sigma`` is the noise's standard deviation as a fraction of each image's value range
    (max - min), as in Smilkov et al.; 0 gives ``saliency`` exactly. Post-processing as
    ``postprocess``.
    """
    x = check_images(model, images, "smoothgrad", spatial=False)
    samples = _positive_int("samples", samples)
    if not np.isfinite(sigma) or sigma < 0:
        raise InvalidArgumentError(
            f"sigma={sigma!r}: give a noise level >= 0 (a fraction of the value range)."
        )
    scorer = Scorer(model, output, logits)
    index = scorer.classes(x, class_index)
    axes = tuple(range(1, x.ndim))
    spread = (x.max(axis=axes, keepdims=True) - x.min(axis=axes, keepdims=True)) * sigma
    rng = np.random.default_rng(seed)
    total = np.zeros_like(x)
    for _ in range(1 if sigma == 0 else samples):
        noisy = x + (rng.standard_normal(x.shape).astype(np.float32) * spread if sigma else 0.0)
        for i in range(0, len(x), batch_size):
            total[i : i + batch_size] += scorer.gradient(
                noisy[i : i + batch_size], index[i : i + batch_size]
            )
    g = total / (1 if sigma == 0 else samples)
    return postprocess(g, absolute, channel_reduce, normalize)


def _baseline(x, baseline, what: str) -> np.ndarray:
    """The baseline broadcast to ``x``: a number, an image (one for all) or one per image."""
    try:
        return np.broadcast_to(np.asarray(baseline, np.float32), x.shape).copy()
    except ValueError:
        raise InvalidArgumentError(
            f"{what}: baseline of shape {np.shape(baseline)} does not broadcast to the images "
            f"{x.shape}; give a number (0: black in raw pixel values), one image or one baseline "
            "per image."
        ) from None


def integrated_gradients(
    model,
    images,
    class_index=None,
    output=None,
    logits=True,
    baseline=0.0,
    steps=128,
    channel_reduce="sum",
    batch_size=64,
) -> np.ndarray:
    """Integrated-gradient attributions: (B, *spatial) summed over channels, or the raw
    (B, *spatial, C) with ``channel_reduce=None``. They sum to f(x) - f(baseline) up to the
    trapezoid rule's error over ``steps`` intervals (see ``completeness_gap``).

    ``baseline``: raw pixel values (the model takes raw pixels; 0 is black).
    """
    x = check_images(model, images, "integrated_gradients", spatial=False)
    steps = _positive_int("steps", steps)
    base = _baseline(x, baseline, "integrated_gradients")
    scorer = Scorer(model, output, logits)
    index = scorer.classes(x, class_index)
    alphas = np.linspace(0.0, 1.0, steps + 1, dtype=np.float32)
    weights = np.full(steps + 1, 1.0 / steps, np.float32)
    weights[[0, -1]] /= 2
    attributions = np.zeros_like(x)
    per_chunk = max(1, batch_size // (steps + 1))
    for i in range(0, len(x), per_chunk):
        xs, bs, idx = x[i : i + per_chunk], base[i : i + per_chunk], index[i : i + per_chunk]
        path = bs[:, None] + alphas.reshape(1, -1, *(1,) * (x.ndim - 1)) * (xs - bs)[:, None]
        path = path.reshape(-1, *x.shape[1:])
        g = np.zeros((len(path),) + x.shape[1:], np.float32)
        rep = np.repeat(idx, steps + 1)
        for j in range(0, len(path), batch_size):
            g[j : j + batch_size] = scorer.gradient(
                path[j : j + batch_size], rep[j : j + batch_size]
            )
        g = g.reshape(len(xs), steps + 1, *x.shape[1:])
        attributions[i : i + per_chunk] = (xs - bs) * (
            g * weights.reshape(1, -1, *(1,) * (x.ndim - 1))
        ).sum(1)
    return (
        attributions
        if channel_reduce is None
        else postprocess(attributions, False, channel_reduce, False)
    )


def completeness_gap(
    model, images, attributions, class_index=None, output=None, logits=True, baseline=0.0
) -> np.ndarray:
    """(B,) relative gap |sum(attributions) - (f(x) - f(baseline))| / |f(x) - f(baseline)|."""
    x = check_images(model, images, "completeness_gap", spatial=False)
    scorer = Scorer(model, output, logits)
    index = scorer.classes(x, class_index)
    delta = scorer.score(x, index) - scorer.score(_baseline(x, baseline, "completeness_gap"), index)
    total = np.asarray(attributions, np.float64).reshape(len(x), -1).sum(1)
    return np.abs(total - delta) / np.maximum(np.abs(delta), 1e-12)


def _per_axis(name, value, spatial) -> tuple[int, ...]:
    values = (value,) * len(spatial) if np.isscalar(value) else tuple(value)
    if len(values) != len(spatial) or not all(
        isinstance(v, int | np.integer) and v >= 1 for v in values
    ):
        raise InvalidArgumentError(
            f"{name}={value!r}: give a positive integer or one per spatial axis "
            f"({len(spatial)} for inputs of spatial size {tuple(spatial)})."
        )
    if name == "patch" and any(v > n for v, n in zip(values, spatial)):
        raise InvalidArgumentError(
            f"patch={value!r} is larger than the input's spatial size {tuple(spatial)}; "
            "give a smaller patch."
        )
    return tuple(int(v) for v in values)


def _starts(n: int, patch: int, stride: int) -> list[int]:
    """Window starts along one axis, the last flush with the end so every pixel is covered."""
    starts = list(range(0, n - patch + 1, stride))
    if starts[-1] != n - patch:
        starts.append(n - patch)
    return starts


def occlusion(
    model,
    images,
    class_index=None,
    output=None,
    logits=True,
    patch=None,
    stride=None,
    baseline=0.0,
    batch_size=64,
) -> np.ndarray:
    """(B, *spatial) occlusion sensitivity: per pixel, the mean of f(x) - f(x with a patch set to
    ``baseline``) over the patches covering it. Positive where hiding the pixel lowers the score.

    ``patch`` / ``stride``: an integer or one per spatial axis (default: an eighth of each side
    of an image, a quarter of each side of a volume (7 x 7 x 7 = 343 windows, not 3375);
    stride half the patch). Volumes are occluded with 3D patches.
    """
    x = check_images(model, images, "occlusion")
    spatial = x.shape[1:-1]
    if patch is None:
        patch = tuple(max(1, n // (8 if len(spatial) == 2 else 4)) for n in spatial)
    patch = _per_axis("patch", patch, spatial)
    stride = _per_axis(
        "stride", stride if stride is not None else tuple(max(1, p // 2) for p in patch), spatial
    )
    if any(s > p for s, p in zip(stride, patch)):
        raise InvalidArgumentError(
            f"stride={stride} is larger than patch={patch}, so some pixels would never be "
            "occluded; give a stride no larger than the patch."
        )
    base = _baseline(x, baseline, "occlusion")
    scorer = Scorer(model, output, logits)
    index = scorer.classes(x, class_index)
    reference = scorer.score(x, index)
    windows = [
        tuple(slice(s, s + p) for s, p in zip(corner, patch))
        for corner in itertools.product(
            *(_starts(n, p, s) for n, p, s in zip(spatial, patch, stride))
        )
    ]
    count = np.zeros(spatial, np.float32)
    for w in windows:
        count[w] += 1
    maps = np.zeros(x.shape[:-1], np.float32)
    for b in range(len(x)):
        for i in range(0, len(windows), batch_size):
            chunk = windows[i : i + batch_size]
            copies = np.repeat(x[b : b + 1], len(chunk), axis=0)
            for k, w in enumerate(chunk):
                copies[(k, *w)] = base[(b, *w)]
            drops = reference[b] - scorer.score(copies, np.full(len(chunk), index[b]))
            for k, w in enumerate(chunk):
                maps[(b, *w)] += drops[k]
    return maps / count
