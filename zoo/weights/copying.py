"""The one rule for copying weights between two models: by layer name, adapting the first conv.

Every zoo layer has an explicit, stable name, so a model built at a checkpoint's own shape
(its channels, its classifier) and the model the user asked for share the names of every
layer they have in common.
"""

from __future__ import annotations

import math

import numpy as np

from zoo.errors import WeightsError


def adapt_first_conv(kernel: np.ndarray, in_chans: int) -> np.ndarray:
    """timm's rule: repeat the kernel along input channels, keep ``in_chans``, scale by C/in_chans.

    A constant image (the same value in every channel) then gives the same response.
    """
    c = kernel.shape[-2]
    reps = math.ceil(in_chans / c)
    out = np.concatenate([kernel] * reps, axis=-2)[..., :in_chans, :]
    return (out * (c / in_chans)).astype(kernel.dtype)


def adapted(value: np.ndarray, variable) -> np.ndarray:
    """``value`` for ``variable``; a kernel of another input-channel count is adapted."""
    if value.shape != tuple(variable.shape):
        if value.ndim < 3 or value.shape[-1] != variable.shape[-1]:
            raise WeightsError(
                f"cannot adapt weight {variable.path} from {value.shape} to "
                f"{tuple(variable.shape)}: the checkpoint was saved from another "
                "architecture or variant; load the one it was saved from."
            )
        value = adapt_first_conv(value, variable.shape[-2])
    return value


def copy_by_name(source, target) -> None:
    """Copy every weighted layer of ``target`` from the same-named layer of ``source``.

    A first-conv kernel of another channel count is adapted (timm's rule); layers of
    ``source`` that ``target`` lacks (a classifier top) are left out.
    """
    for layer in target.layers:
        if layer.weights:
            values = source.get_layer(layer.name).get_weights()
            layer.set_weights([adapted(v, w) for v, w in zip(values, layer.weights, strict=True)])
