"""GAN losses on discriminator logits, one value per example (the engine averages them).

``GAN_LOSSES`` (a Registry): ``non_saturating`` (Goodfellow et al. 2014's -log D(G(z)) form),
``hinge`` (Lim & Ye 2017; Miyato et al. 2018) and ``lsgan`` (Mao et al. 2017, targets 1 / 0).
Each is a pair (discriminator loss(real, fake), generator loss(fake)); a logit map (PatchGAN)
is averaged over its positions. ``r1_penalty`` is Mescheder et al. 2018's gradient penalty on
real images; ``l1`` is pix2pix's reconstruction, CycleGAN's cycle and identity term.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import keras
from keras import ops

from zoo.registry import Registry


def per_example(value):
    """The mean over every axis but the first (a logit map or an image -> one value)."""
    value = ops.cast(value, "float32")
    if len(value.shape) == 1:
        return value
    return ops.mean(ops.reshape(value, (ops.shape(value)[0], -1)), axis=1)


@dataclass(frozen=True)
class GanLoss:
    """discriminator(real_logits, fake_logits) and generator(fake_logits), per example."""

    discriminator: Callable
    generator: Callable


GAN_LOSSES = Registry("GAN loss", {
    "non_saturating": GanLoss(
        lambda real, fake: per_example(ops.softplus(-real) + ops.softplus(fake)),
        lambda fake: per_example(ops.softplus(-fake))),
    "hinge": GanLoss(
        lambda real, fake: per_example(ops.relu(1.0 - real) + ops.relu(1.0 + fake)),
        lambda fake: per_example(-fake)),
    "lsgan": GanLoss(
        lambda real, fake: per_example(ops.square(real - 1.0) + ops.square(fake)),
        lambda fake: per_example(ops.square(fake - 1.0))),
}, argument="loss")


def gan_loss(name: str) -> GanLoss:
    """The pair named ``name``; an unknown name raises UnknownNameError with suggestions."""
    return GAN_LOSSES[name]


def l1(target, prediction):
    """Mean absolute difference per example."""
    return per_example(ops.abs(ops.cast(target, "float32") - ops.cast(prediction, "float32")))


def r1_penalty(discriminator, real, gamma: float):
    """``gamma / 2 * ||grad_x D(x)||^2`` per real example (the sum of the logits' gradient).

    A nested tape, so the penalty is differentiable for the discriminator's update.
    """
    import tensorflow as tf

    real = tf.convert_to_tensor(real, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(real)
        logits = ops.sum(per_example(discriminator(real, training=True)))
    grad = tape.gradient(logits, real)
    squared = ops.sum(ops.reshape(ops.square(grad), (ops.shape(grad)[0], -1)), axis=1)
    return 0.5 * float(gamma) * squared


def bce_metric(logits):
    """Mean sigmoid of logits per example: the discriminator's probability of 'real'."""
    return per_example(keras.activations.sigmoid(ops.cast(logits, "float32")))
