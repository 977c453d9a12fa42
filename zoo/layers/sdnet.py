"""SDNet's layers (Chartsias et al. 2019): a binary-ish anatomy factor and FiLM conditioning.

``StraightThroughRound``: the anatomy factor is a softmax over channels rounded to 0/1 in the
forward pass, with the gradient of the identity (the straight-through estimator), so the factor
stays spatial and categorical, yet trainable.

``FiLM`` (Perez et al. 2018): feature maps scaled and shifted per channel by vectors computed
from the modality factor, ``x * gamma + beta``: how SDNet's decoder mixes the anatomy (where)
with the modality (how it looks).
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="zoo")
class StraightThroughRound(keras.layers.Layer):
    """round(x) forward, identity backward: ``x + stop_gradient(round(x) - x)``."""

    def call(self, x):
        return x + ops.stop_gradient(ops.round(x) - x)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="zoo")
class FiLM(keras.layers.Layer):
    """``[x (N, *spatial, C), gamma (N, C), beta (N, C)] -> x * gamma + beta`` per channel."""

    def call(self, inputs):
        x, gamma, beta = inputs
        shape = (-1,) + (1,) * (len(x.shape) - 2) + (x.shape[-1],)
        return x * ops.reshape(gamma, shape) + ops.reshape(beta, shape)

    def compute_output_shape(self, input_shapes):
        return input_shapes[0]
