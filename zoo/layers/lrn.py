"""Local response normalisation across channels, as in AlexNet 2012 (Krizhevsky et al., sec. 3.3).

Keras 3 has no LRN layer; ``tf.nn.local_response_normalization`` is TensorFlow-only and
not serializable as a layer. The paper's formula (no division of alpha by the window):
``b_c = a_c / (k + alpha * sum_{|j - c| <= n // 2} a_j^2) ** beta``.
"""

from __future__ import annotations

import keras
from keras import ops

from zoo.errors import InvalidArgumentError


@keras.saving.register_keras_serializable(package="zoo")
class LocalResponseNormalization(keras.layers.Layer):
    """LRN over ``size`` channels (channels last); paper: k=2, n=5, alpha=1e-4, beta=0.75."""

    def __init__(self, size=5, alpha=1e-4, beta=0.75, k=2.0, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(size, int) or size < 1 or size % 2 == 0:
            raise InvalidArgumentError(
                f"LocalResponseNormalization size={size!r}: use a positive odd integer (5 in "
                "AlexNet)."
            )
        self.size, self.alpha, self.beta, self.k = size, float(alpha), float(beta), float(k)

    def call(self, x):
        sq = ops.square(x)
        r = self.size // 2
        pad = [(0, 0)] * (len(x.shape) - 1) + [(r, r)]
        padded = ops.pad(sq, pad)
        channels = ops.shape(x)[-1]
        window = padded[..., 0:channels]
        for j in range(1, self.size):
            window = window + padded[..., j:j + channels]
        return x / ops.power(self.k + self.alpha * window, self.beta)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "size": self.size,
            "alpha": self.alpha,
            "beta": self.beta,
            "k": self.k,
        }
