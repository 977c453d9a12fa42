"""Layers the GAN builders need that Keras lacks: PGGAN's fade-in (a weighted sum whose weight
moves during training without re-tracing) and the minibatch standard deviation.

Spectral normalisation is Keras' own ``keras.layers.SpectralNormalization``.
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="zoo")
class FadeIn(keras.layers.Layer):
    """``(1 - alpha) * low + alpha * high`` (Karras et al. 2018's fade-in of a new resolution).

    ``alpha`` is a non-trainable weight, so a schedule assigns it between steps (``set_alpha``)
    without re-tracing the step; at 0 the output is the low-resolution path, at 1 the new one.
    """

    def __init__(self, alpha: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.initial_alpha = float(alpha)

    def build(self, input_shape):
        self.alpha = self.add_weight(
            name="alpha", shape=(), trainable=False,
            initializer=keras.initializers.Constant(self.initial_alpha))

    def call(self, inputs):
        low, high = inputs
        alpha = ops.cast(self.alpha, high.dtype)
        return (1.0 - alpha) * ops.cast(low, high.dtype) + alpha * high

    def set_alpha(self, value: float) -> None:
        self.alpha.assign(float(min(max(value, 0.0), 1.0)))

    def compute_output_shape(self, input_shape):
        return input_shape[1]

    def get_config(self):
        return {**super().get_config(), "alpha": self.initial_alpha}


@keras.saving.register_keras_serializable(package="zoo")
class MinibatchStd(keras.layers.Layer):
    """One extra channel: the batch's mean per-feature standard deviation (PGGAN), so the
    discriminator can see a generator that collapses to one image."""

    def call(self, x):
        std = ops.sqrt(ops.var(x, axis=0) + 1e-8)
        mean = ops.mean(std)
        extra = ops.ones_like(x[..., :1]) * ops.cast(mean, x.dtype)
        return ops.concatenate([x, extra], axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] + 1)
