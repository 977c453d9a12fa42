"""Small building blocks shared by the zoo's own architectures (2D and 3D alike)."""

from __future__ import annotations

import math

from zoo._lazy import keras
from zoo.errors import InvalidArgumentError
from zoo.layers import dims as D

NORMS = ("none", "batch", "group", "instance")


def check_norm(norm: str) -> str:
    if norm not in NORMS:
        raise InvalidArgumentError(f"norm={norm!r}: use one of {NORMS}.")
    return norm


def normalization(x, norm: str, name: str):
    """Batch, group (8, or the width's largest divisor below 8), instance or no normalisation."""
    if norm == "none":
        return x
    if norm == "batch":
        return keras.layers.BatchNormalization(name=name)(x)
    groups = -1 if norm == "instance" else math.gcd(8, int(x.shape[-1]))
    return keras.layers.GroupNormalization(groups=groups, name=name)(x)


def conv_norm_act(
    x,
    filters: int,
    kernel,
    name: str,
    *,
    dims: int = 2,
    norm: str = "batch",
    padding="same",
    strides=1,
    dilation=1,
    activation="relu",
):
    """conv -> norm -> activation, named ``{name}_conv``, ``{name}_{norm}``,
    ``{name}_{activation}``.

    The convolution has a bias only without normalisation (a norm's offset makes it redundant).
    """
    x = D.conv(dims)(filters, kernel, strides=strides, padding=padding, dilation_rate=dilation,
                     use_bias=norm == "none", name=f"{name}_conv")(x)
    x = normalization(x, norm, f"{name}_{norm}")
    if activation == "prelu":
        shared = tuple(range(1, dims + 1))
        return keras.layers.PReLU(shared_axes=shared, name=f"{name}_prelu")(x)
    return keras.layers.Activation(activation, name=f"{name}_{activation}")(x)
