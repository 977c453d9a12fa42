"""pix2pix (Isola et al. 2017): paired image-to-image translation (e.g. MR -> CT).

The generator is the zoo's ``unet`` (``encoder=`` any zoo backbone through the encoder U-Net)
with a tanh head; the discriminator a PatchGAN that sees the source and the (real or generated)
target concatenated. Losses, per example: discriminator ``D(real) + D(fake)`` terms of the chosen
GAN loss over the patch map; generator ``G(fake) + l1_weight * mean|target - G(source)|``.
Volumes (N, D, H, W, C) train the same way on ``unet3d`` and ``patchgan3d``.
"""

from __future__ import annotations

import numpy as np

from zoo.errors import DataError
from zoo.generative.base import (
    GANResult,
    GANTask,
    check_images,
    check_options,
    check_positive_number,
    check_same_shape,
    from_unit,
    to_unit,
    train_task,
)
from zoo.generative.losses import gan_loss, l1
from zoo.train.engine import StepOutput


class Pix2PixTask(GANTask):
    """Generator ``gen``, PatchGAN ``disc``; batches are (source, target) pairs in [-1, 1]."""

    def __init__(self, generator, discriminator, l1_weight: float = 100.0,
                 loss: str = "non_saturating"):
        self.generator, self.discriminator = generator, discriminator
        self.groups = {"gen": {"generator": generator}, "disc": {"discriminator": discriminator}}
        self.l1_weight = check_positive_number(l1_weight, "l1_weight", allow_zero=True)
        self.loss = gan_loss(loss)

    def losses(self, source, target, training: bool):
        """(generator loss, discriminator loss, L1) per example."""
        from keras import ops

        source, target = ops.cast(source, "float32"), ops.cast(target, "float32")
        fake = self.generator(source, training=training)
        real_logits = self.discriminator(ops.concatenate([source, target], -1), training=training)
        fake_logits = self.discriminator(ops.concatenate([source, fake], -1), training=training)
        rec = l1(target, fake)
        g_loss = self.loss.generator(fake_logits) + self.l1_weight * rec
        return g_loss, self.loss.discriminator(real_logits, fake_logits), rec

    def step(self, batch, training: bool) -> StepOutput:
        from keras import ops

        x, y, w = batch
        g_loss, d_loss, rec = self.losses(x, y, training)
        w = ops.cast(w, "float32")
        return StepOutput({"gen": g_loss * w, "disc": d_loss * w},
                          {"l1": (ops.sum(rec * w), ops.sum(w))})


def build_pix2pix(source_shape, target_channels: int, *, depth: int = 3, base_filters: int = 16,
                  n_layers: int = 2, disc_filters: int = 16, norm: str = "instance",
                  encoder: str | None = None, encoder_weights: str | None = None):
    """(U-Net generator, PatchGAN discriminator) by ``zoo.load`` (``unet3d`` and ``patchgan3d``
    for (D, H, W, C) volumes); sizes the U-Net cannot reproduce (not multiples of 2**depth)
    raise InputShapeError here, before any training. ``norm="instance"`` by default: the
    paper's BatchNorm at batch size 1 is instance normalisation, and BatchNorm's moving
    statistics lag a short run (bench_generative: 135 HU MAE in inference mode vs 21 HU in
    training mode after 288 steps)."""
    from zoo.models.factory import load

    shape = tuple(int(s) for s in source_shape)
    volumes = len(shape) == 4
    unet = {"encoder": encoder, "encoder_weights": encoder_weights} if encoder else {
        "depth": depth, "base_filters": base_filters, "norm": norm}
    gen = load("unet3d" if volumes else "unet", input_shape=shape,
               num_classes=int(target_channels), classifier_activation="tanh", **unet)
    disc = load("patchgan3d" if volumes else "patchgan",
                input_shape=(*shape[:-1], shape[-1] + int(target_channels)),
                include_top=True, num_classes=1, n_layers=n_layers, base_filters=disc_filters,
                norm=norm)
    return gen, disc


def check_pairs(source, target) -> tuple[np.ndarray, np.ndarray]:
    """Paired arrays: the same number of images, of the same spatial size (channels may differ);
    a ``zoo.data.modalities`` set given whole must be the paired version."""
    if target is None:
        if not hasattr(source, "paired"):
            raise DataError("train_pix2pix(source) without target=: give both image arrays, or "
                            "a zoo.data.modalities.make_modalities(...) set.")
        if not source.paired:
            raise DataError("pix2pix needs paired images (source[i] and target[i] of one "
                            "subject, registered); this set is unpaired: use "
                            "make_modalities(paired=True), or CycleGAN for unpaired data.")
        source, target = source.mr, source.ct
    source = check_images(source, "source", volumes=True)
    target = check_images(target, "target", volumes=True)
    if len(source) != len(target):
        raise DataError(
            f"{len(source)} source but {len(target)} target images: pix2pix learns from pairs "
            "(one target per source, registered); give equal numbers of paired images, or use "
            "CycleGAN (zoo.generative.cyclegan) for unpaired data.")
    check_same_shape(source[..., :1], target[..., :1], ("source", "target"),
                     "pix2pix maps each source pixel to the target pixel at the same place.")
    return source, target


def train_pix2pix(source, target=None, *, source_range, target_range, epochs: int = 5,
                  batch_size: int = 16, learning_rate: float = 2e-4, l1_weight: float = 100.0,
                  loss: str = "non_saturating", seed: int = 0, hooks=(),
                  **model_options) -> GANResult:
    """Train pix2pix on paired images; ``*_range``: the values each side spans (scaled to
    [-1, 1] for the networks). Everything is checked, and the models built, before the first
    step."""
    import keras

    from zoo.train.batches import Batches

    source, target = check_pairs(source, target)
    x, y = to_unit(source, source_range, "source"), to_unit(target, target_range, "target")
    gan_loss(loss)
    check_options(model_options, build_pix2pix, what="train_pix2pix")
    keras.utils.set_random_seed(seed)
    gen, disc = build_pix2pix(source.shape[1:], target.shape[-1], **model_options)
    task = Pix2PixTask(gen, disc, l1_weight=l1_weight, loss=loss)
    history = train_task(task, Batches(x, y, batch_size, seed=seed), epochs=epochs,
                         learning_rate=learning_rate, hooks=hooks)
    return GANResult({"generator": gen, "discriminator": disc}, history,
                     (tuple(source_range), tuple(target_range)))


def translate(generator, images, *, source_range, target_range, batch_size: int = 32):
    """``images`` through ``generator``, from ``source_range`` units to ``target_range`` units."""
    x = to_unit(check_images(images, "images", volumes=True), source_range, "images")
    return from_unit(np.asarray(generator.predict(x, batch_size=batch_size, verbose=0)),
                     target_range)
