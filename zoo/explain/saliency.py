"""Gradient saliency (Simonyan et al. 2014): d class score / d input pixel.

The usual post-processing (absolute value, max over channels, scaling to [0, 1]; tf-keras-vis
does all three by default) is optional, so the raw gradient can be checked exactly.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from zoo.errors import InvalidArgumentError
from zoo.explain.targets import pick_class, score_head

REDUCE = (None, "max", "mean")


def saliency(model, images, class_index=None, output=None, logits=True, absolute=True,
             channel_reduce="max", normalize=True) -> np.ndarray:
    """Input gradients of the chosen class score: (B, H, W) with ``channel_reduce``, else (B, H, W, C)."""
    if channel_reduce not in REDUCE:
        raise InvalidArgumentError(f"channel_reduce={channel_reduce!r}: use None, 'max' or 'mean'.")
    tensor, head = score_head(model, output, logits)
    graph = keras.Model(model.inputs, tensor)
    x = tf.convert_to_tensor(np.asarray(images, np.float32))
    with tf.GradientTape() as tape:
        tape.watch(x)
        score, _ = pick_class(head(graph([x], training=False)), class_index)
        total = tf.reduce_sum(score)
    g = tape.gradient(total, x).numpy()
    if absolute:
        g = np.abs(g)
    if channel_reduce == "max":
        g = g.max(axis=-1)
    elif channel_reduce == "mean":
        g = g.mean(axis=-1)
    if normalize:
        axes = tuple(range(1, g.ndim))
        lo, hi = g.min(axis=axes, keepdims=True), g.max(axis=axes, keepdims=True)
        g = (g - lo) / np.maximum(hi - lo, 1e-12)
    return g
