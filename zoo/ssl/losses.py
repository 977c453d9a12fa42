"""The pretext losses, in ``keras.ops`` so they stay backend-neutral.

NT-Xent convention (SimCLR, Chen et al. 2020): for a batch of N pairs there are 2N views;
each view's positive is its pair and its negatives are the other 2N - 2 views (itself is
excluded from the softmax). When all 2N projections are identical every logit is 1/t, so
the loss is log(2N - 1), not the "log N" of the issue text (that would be the value if
each view were contrasted with N candidates, as in a one-directional InfoNCE over the
other view only, which is ``nt_xent(..., symmetric_views=False)`` here).
"""

from __future__ import annotations

import keras
from keras import ops


def _normalize(z):
    return z / ops.sqrt(ops.maximum(ops.sum(z * z, axis=-1, keepdims=True), 1e-12))


def nt_xent(z1, z2, temperature: float = 0.5, symmetric_views: bool = True):
    """Normalised temperature-scaled cross entropy of paired projections z1[i] <-> z2[i]."""
    z1, z2 = _normalize(ops.cast(z1, "float32")), _normalize(ops.cast(z2, "float32"))
    n = ops.shape(z1)[0]
    if not symmetric_views:  # InfoNCE: z1[i] against the N candidates z2[:]
        logits = ops.matmul(z1, ops.transpose(z2)) / temperature
        return ops.mean(ops.logsumexp(logits, axis=1) - ops.diagonal(logits))
    z = ops.concatenate([z1, z2], axis=0)
    logits = ops.matmul(z, ops.transpose(z)) / temperature
    logits = logits - 1e9 * ops.eye(2 * n, dtype=logits.dtype)  # a view is not its own negative
    positive = ops.concatenate([ops.arange(n) + n, ops.arange(n)], axis=0)
    pos_logit = ops.take_along_axis(logits, ops.expand_dims(positive, 1), axis=1)[:, 0]
    return ops.mean(ops.logsumexp(logits, axis=1) - pos_logit)


def byol_distance(p, z):
    """BYOL's loss of each pair: the squared distance of the normalised vectors, 2 - 2 cos(p, z).

    Args:
        p: predictions (N, D).
        z: targets (N, D).

    Returns:
        The (N,) distances.
    """
    p, z = _normalize(ops.cast(p, "float32")), _normalize(ops.cast(z, "float32"))
    return 2.0 - 2.0 * ops.sum(p * z, axis=-1)


def byol_regression(p, z):
    """BYOL's loss of a batch: the mean of ``byol_distance`` over the pairs.

    Args:
        p: predictions (N, D).
        z: targets (N, D).

    Returns:
        A scalar.
    """
    return ops.mean(byol_distance(p, z))


@keras.saving.register_keras_serializable(package="zoo")
class NTXent(keras.losses.Loss):
    """NT-Xent on a model output that concatenates the two views' projections on the last axis."""

    def __init__(self, temperature: float = 0.5, name: str = "nt_xent", **kwargs):
        super().__init__(name=name, **kwargs)
        self.temperature = float(temperature)

    def call(self, y_true, y_pred):
        z1, z2 = ops.split(y_pred, 2, axis=-1)
        return nt_xent(z1, z2, self.temperature)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}


@keras.saving.register_keras_serializable(package="zoo")
class MaskedL2(keras.losses.Loss):
    """Context-encoder reconstruction: mean squared error over the masked region only, times
    ``weight``.

    ``y_true`` holds the target channels followed by one mask channel (1 = hidden, to be predicted).
    """

    def __init__(self, weight: float = 0.999, name: str = "masked_l2", **kwargs):
        super().__init__(name=name, **kwargs)
        self.weight = float(weight)

    def call(self, y_true, y_pred):
        target, mask = y_true[..., :-1], y_true[..., -1:]
        err = ops.sum(mask * ops.square(ops.cast(y_pred, "float32") - target), axis=(1, 2, 3))
        area = ops.sum(mask, axis=(1, 2, 3)) * ops.cast(ops.shape(target)[-1], "float32")
        return self.weight * err / ops.maximum(area, 1.0)

    def get_config(self):
        return {**super().get_config(), "weight": self.weight}
