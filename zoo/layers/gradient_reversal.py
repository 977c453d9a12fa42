"""The gradient-reversal layer of adversarial domain adaptation (Ganin & Lempitsky 2015, DANN).

Forward it is the identity; backward it multiplies the incoming gradient by ``-lambda``, so one
optimizer minimising ``task loss + domain loss`` trains the domain discriminator to tell the
domains apart while the features below it learn to make them indistinguishable.

``lambda`` is a non-trainable variable (saved in ``.keras`` files and engine checkpoints) so a
schedule can change it between compiled steps without re-tracing: DANN's
``2 / (1 + exp(-10 p)) - 1`` over training progress ``p`` (``dann_lambda``).
"""

from __future__ import annotations

import math

import keras

from zoo.errors import InvalidArgumentError


def dann_lambda(progress: float, gamma: float = 10.0) -> float:
    """DANN's schedule ``2 / (1 + exp(-gamma p)) - 1``: 0 at the start, towards 1 at the end.

    Args:
        progress: the fraction of training done, in [0, 1].
        gamma: how fast lambda rises (10 in the paper).

    Returns:
        lambda for that point of training.
    """
    if not 0.0 <= progress <= 1.0:
        raise InvalidArgumentError(f"progress={progress!r}: give the fraction of training done, "
                                   "between 0 and 1.")
    return 2.0 / (1.0 + math.exp(-gamma * progress)) - 1.0


@keras.saving.register_keras_serializable(package="zoo")
class GradientReversal(keras.layers.Layer):
    """Identity forward, ``-lambda`` times the incoming gradient backward.

    Args:
        lambda_: the initial reversal strength (>= 0); ``set_lambda`` changes it during training.
    """

    def __init__(self, lambda_: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        lambda_ = float(lambda_)
        if not (math.isfinite(lambda_) and lambda_ >= 0):
            raise InvalidArgumentError(
                f"GradientReversal(lambda_={lambda_!r}): give a finite strength >= 0 "
                "(0 blocks the domain gradient, 1 reverses it unscaled).")
        self.initial_lambda = lambda_
        self.lambda_var = self.add_weight(
            name="lambda", shape=(), initializer=keras.initializers.Constant(lambda_),
            trainable=False, dtype="float32")

    def set_lambda(self, value: float) -> None:
        """Set lambda (between compiled steps: it is a variable, nothing is re-traced)."""
        if not (math.isfinite(value) and value >= 0):
            raise InvalidArgumentError(f"lambda={value!r}: give a finite strength >= 0.")
        self.lambda_var.assign(float(value))

    @property
    def lambda_(self) -> float:
        return float(keras.ops.convert_to_numpy(self.lambda_var))

    def call(self, x):
        import tensorflow as tf

        lam = tf.cast(tf.convert_to_tensor(self.lambda_var), x.dtype)

        @tf.custom_gradient
        def reverse(t):
            def grad(upstream):
                return -lam * upstream

            return tf.identity(t), grad

        return reverse(x)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "lambda_": self.initial_lambda}
