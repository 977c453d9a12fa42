"""Pooling layers that PyTorch checkpoints assume and Keras lacks.

``CeilMaxPooling2D`` is torch's ``MaxPool2d(ceil_mode=True)`` (GoogLeNet): the last,
partial window is kept. Padding the bottom/right by ``stride - 1`` with -inf and pooling
'valid' gives exactly ``ceil((H - k) / s) + 1`` outputs, with no static shape needed.

``AdaptiveAveragePooling2D`` is torch's ``AdaptiveAvgPool2d`` (AlexNet's 6x6, GoogLeNet's
auxiliary 4x4): output cell i averages rows floor(i*H/n) .. ceil((i+1)*H/n) - 1.
"""

from __future__ import annotations

import math

import keras
from keras import ops

from zoo.errors import InputShapeError


@keras.saving.register_keras_serializable(package="zoo")
class CeilMaxPooling2D(keras.layers.Layer):
    def __init__(self, pool_size=3, strides=2, **kwargs):
        super().__init__(**kwargs)
        self.pool_size, self.strides = int(pool_size), int(strides)

    def call(self, x):
        extra = self.strides - 1
        if extra:
            x = ops.pad(x, [(0, 0), (0, extra), (0, extra), (0, 0)], constant_values=float("-inf"))
        return ops.max_pool(x, self.pool_size, self.strides, padding="valid")

    def compute_output_shape(self, input_shape):
        def out(n):
            return None if n is None else math.ceil((n - self.pool_size) / self.strides) + 1

        return (input_shape[0], out(input_shape[1]), out(input_shape[2]), input_shape[3])

    def get_config(self):
        return {**super().get_config(), "pool_size": self.pool_size, "strides": self.strides}


def adaptive_bins(size: int, bins: int) -> list[tuple[int, int]]:
    """torch's adaptive pooling windows: [floor(i*size/bins), ceil((i+1)*size/bins))."""
    return [(i * size // bins, -(-(i + 1) * size // bins)) for i in range(bins)]


@keras.saving.register_keras_serializable(package="zoo")
class AdaptiveAveragePooling2D(keras.layers.Layer):
    """Average pooling to a fixed ``output_size`` grid (needs static H and W)."""

    def __init__(self, output_size=(6, 6), **kwargs):
        super().__init__(**kwargs)
        self.output_size = tuple(int(v) for v in output_size)

    def call(self, x):
        h, w = x.shape[1], x.shape[2]
        if h is None or w is None:
            raise InputShapeError(
                f"layer {self.name}: adaptive pooling needs a fixed input_shape (got "
                f"{tuple(x.shape)}); give zoo.load an input_shape with both spatial sizes."
            )
        if (h, w) == self.output_size:
            return x
        rows = []
        for r0, r1 in adaptive_bins(h, self.output_size[0]):
            cells = [
                ops.mean(x[:, r0:r1, c0:c1, :], axis=(1, 2))
                for c0, c1 in adaptive_bins(w, self.output_size[1])
            ]
            rows.append(ops.stack(cells, axis=1))
        return ops.stack(rows, axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.output_size, input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "output_size": list(self.output_size)}
