"""Training steps that a plain ``fit`` with one loss cannot express: BYOL's momentum network and
the context encoder's adversarial term. Both are ``keras.Model`` subclasses with their own
``train_step`` (TensorFlow backend), wrapping Functional parts that are saved on their own.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from zoo.ssl.losses import MaskedL2, byol_regression


def momentum_copy(model):
    """An exact copy of ``model``: ``clone_model`` makes fresh variables; values copied after."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


class MomentumTrainer(keras.Model):
    """BYOL (Grill et al. 2020): online encoder+projector+predictor regresses the momentum target.

    After each step every target variable, BatchNorm moving statistics included, becomes
    ``m * target + (1 - m) * online``. The target runs with batch statistics (training mode),
    as in the paper; its own statistic updates of that forward pass are replaced by the average.
    """

    def __init__(self, online, predictor, momentum: float = 0.99, **kwargs):
        super().__init__(**kwargs)
        self.online, self.predictor = online, predictor
        self.target = momentum_copy(online)
        self.momentum = float(momentum)
        self.loss_tracker = keras.metrics.Mean(name="loss")

    @property
    def metrics(self):
        return [self.loss_tracker]

    def call(self, inputs, training=False):
        return self.online(inputs, training=training)

    def update_target(self, previous):
        m = self.momentum
        for t, o, p in zip(self.target.variables, self.online.variables, previous, strict=True):
            t.assign(m * p + (1.0 - m) * ops.cast(o, t.dtype))

    def train_step(self, data):
        v1, v2 = keras.utils.unpack_x_y_sample_weight(data)[0]
        previous = [tf.identity(v) for v in self.target.variables]
        t1 = tf.stop_gradient(self.target(v1, training=True))
        t2 = tf.stop_gradient(self.target(v2, training=True))
        variables = self.online.trainable_variables + self.predictor.trainable_variables
        with tf.GradientTape() as tape:
            p1 = self.predictor(self.online(v1, training=True), training=True)
            p2 = self.predictor(self.online(v2, training=True), training=True)
            loss = byol_regression(p1, t2) + byol_regression(p2, t1)
        self.optimizer.apply(tape.gradient(loss, variables), variables)
        self.update_target(previous)
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}


class ContextEncoderGAN(keras.Model):
    """Pathak 2016's joint loss: 0.999 x masked L2 + 0.001 x adversarial, with a small discriminator
    that tells real images from images completed by the generator."""

    def __init__(
        self,
        generator,
        discriminator,
        rec_weight: float = 0.999,
        adv_weight: float = 0.001,
        d_learning_rate: float = 1e-4,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.generator, self.discriminator = generator, discriminator
        self.reconstruction = MaskedL2(rec_weight)
        self.adv_weight = float(adv_weight)
        self.d_optimizer = keras.optimizers.Adam(d_learning_rate, beta_1=0.5)
        self.bce = keras.losses.BinaryCrossentropy()
        self.trackers = [keras.metrics.Mean(name=n) for n in ("loss", "reconstruction", "d_loss")]

    @property
    def metrics(self):
        return self.trackers

    def call(self, inputs, training=False):
        return self.generator(inputs, training=training)

    def train_step(self, data):
        x, y = data[0], data[1]
        target, mask = y[..., :-1], y[..., -1:]
        with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
            pred = self.generator(x, training=True)
            completed = target * (1.0 - mask) + pred * mask
            real = self.discriminator(target, training=True)
            fake = self.discriminator(completed, training=True)
            d_loss = self.bce(tf.ones_like(real), real) + self.bce(tf.zeros_like(fake), fake)
            rec = ops.mean(self.reconstruction.call(y, pred))
            g_loss = rec + self.adv_weight * self.bce(tf.ones_like(fake), fake)
        g_vars, d_vars = self.generator.trainable_variables, self.discriminator.trainable_variables
        self.optimizer.apply(g_tape.gradient(g_loss, g_vars), g_vars)
        self.d_optimizer.apply(d_tape.gradient(d_loss, d_vars), d_vars)
        for tracker, value in zip(self.trackers, (g_loss, rec, d_loss), strict=True):
            tracker.update_state(value)
        return {t.name: t.result() for t in self.trackers}
