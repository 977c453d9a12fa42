"""Resampling layers for 2D and 3D: linear up-sampling by 2 and central cropping / slicing.

``LinearUpsampling`` doubles every spatial axis with half-pixel linear interpolation
(``align_corners=False``: torch's bilinear/trilinear, TF's ``resize`` bilinear), separably,
so one layer serves 2D (bilinear) and 3D (trilinear); Keras' UpSampling3D is nearest only.
"""

from __future__ import annotations

import keras
from keras import ops


def _along(x, axis, sl):
    index = [slice(None)] * len(x.shape)
    index[axis] = sl
    return x[tuple(index)]


@keras.saving.register_keras_serializable(package="zoo")
class LinearUpsampling(keras.layers.Layer):
    """x2 linear interpolation on every spatial axis.

    out[2i] = .75 x[i] + .25 x[i-1], out[2i+1] = .75 x[i] + .25 x[i+1].
    """

    def call(self, x):
        for axis in range(1, len(x.shape) - 1):
            prev = ops.concatenate(
                [_along(x, axis, slice(0, 1)), _along(x, axis, slice(0, -1))], axis=axis
            )
            nxt = ops.concatenate(
                [_along(x, axis, slice(1, None)), _along(x, axis, slice(-1, None))], axis=axis
            )
            even, odd = 0.75 * x + 0.25 * prev, 0.75 * x + 0.25 * nxt
            stacked = ops.stack([even, odd], axis=axis + 1)
            shape = list(ops.shape(x))
            shape[axis] = shape[axis] * 2
            x = ops.reshape(stacked, [-1 if i == 0 else s for i, s in enumerate(shape)])
        return x

    def compute_output_shape(self, input_shape):
        return (
            input_shape[0],
            *[None if n is None else 2 * n for n in input_shape[1:-1]],
            input_shape[-1],
        )


@keras.saving.register_keras_serializable(package="zoo")
class CentralCrop(keras.layers.Layer):
    """The central ``size`` window of every spatial axis (a patch at the finest scale)."""

    def __init__(self, size, **kwargs):
        super().__init__(**kwargs)
        self.size = int(size)

    def call(self, x):
        for axis in range(1, len(x.shape) - 1):
            start = (x.shape[axis] - self.size) // 2
            x = _along(x, axis, slice(start, start + self.size))
        return x

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *[self.size] * (len(input_shape) - 2), input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "size": self.size}


@keras.saving.register_keras_serializable(package="zoo")
class CentralSlice(keras.layers.Layer):
    """The central plane of a (D, H, W, C) patch orthogonal to spatial ``axis`` (0, 1 or 2)."""

    def __init__(self, axis, **kwargs):
        super().__init__(**kwargs)
        self.axis = int(axis)

    def call(self, x):
        axis = self.axis + 1
        centre = x.shape[axis] // 2
        return ops.squeeze(_along(x, axis, slice(centre, centre + 1)), axis=axis)

    def compute_output_shape(self, input_shape):
        shape = list(input_shape)
        del shape[self.axis + 1]
        return tuple(shape)

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}
