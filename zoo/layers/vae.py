"""The VAE's reparameterisation layer and its closed-form terms (Kingma & Welling 2014).

``Sampling`` draws ``z = mean + exp(log_var / 2) * eps`` while training and returns the mean
otherwise, so a saved VAE gives the same output on every call (its deterministic path). The
functions are the per-example terms of the ELBO in ``keras.ops``, shared by the generative VAE
(zoo.generative.vae) and the semi-supervised M1/M2 (zoo.semi.vae_m1m2), which may not import
each other: the Gaussian KL to N(0, I) in closed form and the Bernoulli / Gaussian
log-likelihoods, each summed over every axis but the batch.
"""

from __future__ import annotations

import math

import keras
from keras import ops

LOG_2PI = math.log(2.0 * math.pi)


@keras.saving.register_keras_serializable(package="zoo")
class Sampling(keras.layers.Layer):
    """``[mean, log_var] -> z``: a reparameterised draw in training, the mean in inference.

    Args:
        seed: the seed of the layer's own generator (None: a random one); the draws of one
            layer never move another layer's random state.
    """

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        mean, log_var = inputs
        if not training:
            return mean
        eps = keras.random.normal(ops.shape(mean), dtype=mean.dtype, seed=self.seed_generator)
        return mean + ops.exp(0.5 * log_var) * eps

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


def _per_example(value):
    """Sum over every axis but the first."""
    return ops.sum(ops.reshape(value, (ops.shape(value)[0], -1)), axis=1)


def gaussian_kl(mean, log_var):
    """KL(N(mean, exp(log_var)) || N(0, I)) per example, in nats (closed form).

    Args:
        mean: (B, ...) posterior means.
        log_var: (B, ...) posterior log-variances.

    Returns:
        (B,) ``0.5 * sum(exp(log_var) + mean**2 - 1 - log_var)``.
    """
    mean, log_var = ops.cast(mean, "float32"), ops.cast(log_var, "float32")
    return _per_example(0.5 * (ops.exp(log_var) + ops.square(mean) - 1.0 - log_var))


def bernoulli_log_likelihood(x, logits):
    """log p(x | logits) per example for x in [0, 1] (continuous x: the usual relaxation).

    Args:
        x: (B, ...) targets in [0, 1].
        logits: (B, ...) the decoder's logits.

    Returns:
        (B,) ``sum(x * log sigmoid(l) + (1 - x) * log sigmoid(-l))``, computed stably.
    """
    x, logits = ops.cast(x, "float32"), ops.cast(logits, "float32")
    # log sigmoid(l) = -softplus(-l); x log s(l) + (1 - x) log s(-l) = x * l - softplus(l)
    return _per_example(x * logits - ops.softplus(logits))


def gaussian_log_likelihood(x, mean, log_var=None):
    """log N(x; mean, exp(log_var)) per example (``log_var`` None: unit variance).

    Args:
        x: (B, ...) values.
        mean: (B, ...) means.
        log_var: (B, ...) log-variances, or None.

    Returns:
        (B,) the log density summed over every axis but the batch.
    """
    x, mean = ops.cast(x, "float32"), ops.cast(mean, "float32")
    log_var = ops.zeros_like(mean) if log_var is None else ops.cast(log_var, "float32")
    return _per_example(-0.5 * (LOG_2PI + log_var + ops.square(x - mean) * ops.exp(-log_var)))
