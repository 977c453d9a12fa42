"""DCGAN (Radford et al. 2016) and its conditional variant as a two-optimizer engine Task.

Stabilisers are options: the loss (``non_saturating``, ``hinge``, ``lsgan``), spectral
normalisation of the discriminator, and the R1 penalty on real images (``r1_gamma``). Real images
are scaled to [-1, 1] (the generator's tanh range) from ``value_range``; samples are scaled back.
"""

from __future__ import annotations

import numpy as np

from zoo.errors import DataError, InvalidArgumentError
from zoo.generative.base import (
    GANResult,
    GANTask,
    check_images,
    check_options,
    check_positive_number,
    from_unit,
    to_unit,
    train_task,
)
from zoo.generative.losses import bce_metric, gan_loss, r1_penalty
from zoo.train.engine import StepOutput


class DCGANTask(GANTask):
    """One step: sample z (and use the batch's labels when conditional), score real and fake,
    the discriminator's loss (+ R1) for ``disc`` and the generator's for ``gen``."""

    def __init__(self, generator, discriminator, loss: str = "non_saturating",
                 r1_gamma: float = 0.0, seed: int = 0):
        import keras

        self.generator, self.discriminator = generator, discriminator
        self.groups = {"gen": {"generator": generator}, "disc": {"discriminator": discriminator}}
        self.loss = gan_loss(loss)
        self.r1_gamma = check_positive_number(r1_gamma, "r1_gamma", allow_zero=True)
        self.conditional = len(generator.inputs) > 1
        if self.conditional and self.r1_gamma:
            raise InvalidArgumentError(
                "r1_gamma with a conditional DCGAN: the R1 penalty here takes the image "
                "gradient of an unconditional discriminator; use r1_gamma=0 or num_labels=0.")
        self.latent_dim = int(generator.inputs[0].shape[-1])
        self.seeds = keras.random.SeedGenerator(seed)

    def sample_latent(self, n):
        import keras

        return keras.random.normal((n, self.latent_dim), seed=self.seeds)

    def step(self, batch, training: bool) -> StepOutput:
        from keras import ops

        x, y, w = batch
        x = ops.cast(x, "float32")
        z = self.sample_latent(ops.shape(x)[0])
        cond = [ops.reshape(ops.cast(y, "int32"), (-1, 1))] if self.conditional else []
        fake = self.generator([z, *cond] if cond else z, training=training)
        real_logits = self.discriminator([x, *cond] if cond else x, training=training)
        fake_logits = self.discriminator([fake, *cond] if cond else fake, training=training)
        d_loss = self.loss.discriminator(real_logits, fake_logits)
        if self.r1_gamma:
            d_loss = d_loss + r1_penalty(self.discriminator, x, self.r1_gamma)
        g_loss = self.loss.generator(fake_logits)
        w = ops.cast(w, "float32")
        count = ops.cast(ops.shape(x)[0], "float32")
        return StepOutput({"gen": g_loss * w, "disc": d_loss * w},
                          {"d_real": (ops.sum(bce_metric(real_logits)), count),
                           "d_fake": (ops.sum(bce_metric(fake_logits)), count)})

    def predict(self, x):
        return self.generator(x, training=False)


def build_dcgan(image_shape, *, latent_dim: int = 100, depth: int = 3, base_filters: int = 64,
                num_labels: int = 0, spectral_norm: bool = False, norm: str = "batch"):
    """(generator, discriminator) for images of ``image_shape`` (H, W, C), by ``zoo.load``.

    With spectral normalisation the discriminator has no BatchNorm (Miyato et al. 2018)."""
    from zoo.models.factory import load

    shape = tuple(int(s) for s in image_shape)
    gen = load("dcgan_generator", input_shape=shape, latent_dim=latent_dim, depth=depth,
               base_filters=base_filters, num_labels=num_labels, norm=norm)
    disc = load("dcgan_discriminator", input_shape=shape, include_top=True, num_classes=1,
                depth=depth, base_filters=base_filters, num_labels=num_labels,
                norm="none" if spectral_norm else norm, spectral_norm=spectral_norm)
    return gen, disc


def _labels(labels, n: int, num_labels: int) -> np.ndarray:
    if labels is not None and not num_labels:
        raise DataError("labels= without num_labels: an unconditional DCGAN takes no labels; "
                        "pass num_labels=<number of classes> for a conditional one, or drop "
                        "labels.")
    if labels is None:
        if num_labels:
            raise DataError(f"num_labels={num_labels}: a conditional DCGAN needs labels=, one "
                            "integer class per image.")
        return np.zeros(n, np.int32)
    labels = np.asarray(labels)
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"labels: shape {labels.shape} ({labels.dtype}); give one integer class "
                        f"per image, shape ({n},).")
    if num_labels and (labels.min() < 0 or labels.max() >= num_labels):
        raise DataError(f"labels span {labels.min()}..{labels.max()} but num_labels="
                        f"{num_labels}; give classes 0..{num_labels - 1}.")
    return labels.astype(np.int32)


def train_dcgan(images, *, labels=None, value_range=(0.0, 255.0), epochs: int = 5,
                batch_size: int = 32, learning_rate: float = 2e-4, loss: str = "non_saturating",
                r1_gamma: float = 0.0, seed: int = 0, hooks=(), **model_options) -> GANResult:
    """Train a (conditional when ``num_labels`` > 0) DCGAN on ``images`` (N, H, W[, C]).

    Every argument is checked, and the models built, before the first step.
    """
    import keras

    from zoo.train.batches import Batches

    images = check_images(images, "images")
    y = _labels(labels, len(images), model_options.get("num_labels", 0))
    unit = to_unit(images, value_range)
    gan_loss(loss)
    check_options(model_options, build_dcgan, what="train_dcgan")
    keras.utils.set_random_seed(seed)
    gen, disc = build_dcgan(images.shape[1:], **model_options)
    task = DCGANTask(gen, disc, loss=loss, r1_gamma=r1_gamma, seed=seed)
    history = train_task(task, Batches(unit, y, batch_size, seed=seed), epochs=epochs,
                         learning_rate=learning_rate, hooks=hooks)
    return GANResult({"generator": gen, "discriminator": disc}, history, tuple(value_range))


def sample(generator, n: int, *, seed: int = 0, value_range=(-1.0, 1.0), labels=None):
    """``n`` generated images in ``value_range`` (from a seeded standard normal latent)."""
    z = np.random.default_rng(seed).standard_normal(
        (n, int(generator.inputs[0].shape[-1]))).astype(np.float32)
    inputs = z if len(generator.inputs) == 1 else [
        z, np.asarray(labels if labels is not None else np.zeros(n), np.int32).reshape(-1, 1)]
    return from_unit(np.asarray(generator.predict(inputs, verbose=0)), value_range)
