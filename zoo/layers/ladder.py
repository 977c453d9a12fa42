"""The ladder network's decoder layers (Rasmus et al. 2015, arXiv:1507.02672).

``BatchStandardize``: the paper's parameter-free ``batchnorm``: each channel standardised with the
batch's own mean and variance (no moving statistics: the decoder only runs while training).

``LadderCombinator``: the "vanilla" combinator g of the paper, per channel (per unit of a dense
layer), with the initialisation of the authors' code (the decoder starts from ẑ = 0):

    mu = a1 * sigmoid(a2 * u + a3) + a4 * u + a5
    v  = a6 * sigmoid(a7 * u + a8) + a9 * u + a10
    ẑ  = (z̃ - mu) * v + mu
"""

from __future__ import annotations

import keras
from keras import ops

INIT = (0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0)  # a1 .. a10


def standardize(x, epsilon: float = 1e-3):
    """(x - batch mean) / sqrt(batch variance + epsilon), per channel (the last axis)."""
    axes = tuple(range(len(x.shape) - 1))
    mean, var = ops.moments(x, axes=axes)
    return (x - mean) / ops.sqrt(var + epsilon)


@keras.saving.register_keras_serializable(package="zoo")
class BatchStandardize(keras.layers.Layer):
    """``standardize`` as a layer (no weights)."""

    def __init__(self, epsilon: float = 1e-3, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)

    def call(self, x):
        return standardize(x, self.epsilon)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="zoo")
class LadderCombinator(keras.layers.Layer):
    """``[z̃, u] -> ẑ``: the vanilla combinator g with ten weights per channel (module docstring)."""

    def build(self, input_shapes):
        channels = input_shapes[0][-1]
        self.a = [self.add_weight(shape=(channels,), name=f"a{i + 1}",
                                  initializer=keras.initializers.Constant(value))
                  for i, value in enumerate(INIT)]

    def call(self, inputs):
        z, u = inputs
        a = self.a
        mu = a[0] * ops.sigmoid(a[1] * u + a[2]) + a[3] * u + a[4]
        v = a[5] * ops.sigmoid(a[6] * u + a[7]) + a[8] * u + a[9]
        return (z - mu) * v + mu

    def compute_output_shape(self, input_shapes):
        return input_shapes[0]
