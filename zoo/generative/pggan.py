"""Progressive growing (Karras et al. 2018): train at 4 x 4 (or ``start``), then double the
resolution, blending each new block in while ``alpha`` ramps from 0 to 1.

Each stage is a DCGAN-style task (``DCGANTask``, any GAN loss, R1) on models from
``zoo.load("pggan_generator" / "pggan_discriminator")`` at that resolution; ``grow`` builds the
next stage and copies every layer the two share by name (the builders name layers by
resolution). ``FadeInSchedule`` moves every ``FadeIn`` layer's alpha linearly over the first
``steps`` steps of a stage, between steps (no re-tracing).
"""

from __future__ import annotations

import numpy as np

from zoo.errors import InputShapeError
from zoo.generative.base import (
    GANResult,
    check_images,
    check_positive_number,
    to_unit,
    train_task,
)
from zoo.generative.dcgan import DCGANTask
from zoo.generative.losses import gan_loss
from zoo.train.engine import Hook


def fade_layers(model) -> list:
    """Every FadeIn layer of ``model``."""
    from zoo.layers.gan import FadeIn

    return [layer for layer in model.layers if isinstance(layer, FadeIn)]


def set_alpha(models, alpha: float) -> None:
    for model in models:
        for layer in fade_layers(model):
            layer.set_alpha(alpha)


class FadeInSchedule(Hook):
    """alpha = step / ``steps`` (capped at 1) for every FadeIn layer, counted from the stage's
    first step."""

    def __init__(self, steps: int):
        self.steps, self.start = max(int(steps), 1), 0

    def on_train_begin(self, engine) -> None:
        self.start = engine.step_count
        set_alpha(engine.task.models().values(), 0.0)

    def on_batch_end(self, engine, step, logs) -> None:
        set_alpha(engine.task.models().values(), (engine.step_count - self.start) / self.steps)


def copy_shared(source, target) -> int:
    """Copy the weights of every layer ``target`` shares (by name) with ``source``, except the
    fade-in weights; returns how many layers were copied."""
    from zoo.layers.gan import FadeIn

    names = {layer.name for layer in source.layers}
    copied = 0
    for layer in target.layers:
        if layer.weights and layer.name in names and not isinstance(layer, FadeIn):
            layer.set_weights(source.get_layer(layer.name).get_weights())
            copied += 1
    return copied


def build_stage(size: int, channels: int, *, latent_dim: int = 128, base_filters: int = 32,
                max_filters: int = 128, fade: bool = True, previous=None):
    """(generator, discriminator) at ``size`` x ``size``, grown from ``previous`` (a pair)."""
    from zoo.models.factory import load

    common = {"base_filters": base_filters, "max_filters": max_filters, "fade": fade}
    gen = load("pggan_generator", input_shape=(size, size, channels), latent_dim=latent_dim,
               **common)
    disc = load("pggan_discriminator", input_shape=(size, size, channels), include_top=True,
                num_classes=1, **common)
    if previous is not None:
        copy_shared(previous[0], gen)
        copy_shared(previous[1], disc)
    return gen, disc


def grow(generator, discriminator, **options):
    """The next resolution's pair (twice the size), faded in, sharing every earlier layer."""
    size = int(generator.output.shape[1]) * 2
    return build_stage(size, int(generator.output.shape[-1]),
                       latent_dim=int(generator.inputs[0].shape[-1]),
                       previous=(generator, discriminator), **options)


def downsample(images: np.ndarray, size: int) -> np.ndarray:
    """Average pooling of (N, S, S, C) images to ``size`` (S a multiple of size)."""
    n, s, _, c = images.shape
    f = s // size
    return images.reshape(n, size, f, size, f, c).mean(axis=(2, 4))


def stages(size: int, start: int) -> list[int]:
    """The resolutions from ``start`` to ``size``, both powers of two, start <= size."""
    ok = all(v >= 4 and not v & (v - 1) for v in (size, start)) and start <= size
    if not ok:
        raise InputShapeError(
            f"images of {size} x {size} from start={start}: progressive growing doubles square "
            "images from a power of two >= 4 up to the image size, a power of two; resize the "
            "images (e.g. to 32 or 64) or pick start among 4, 8, 16, ...")
    return [start * 2**k for k in range((size // start).bit_length())]


def train_pggan(images, *, value_range=(0.0, 255.0), start: int = 4, epochs_per_stage: int = 2,
                fade_fraction: float = 0.5, batch_size: int = 32, learning_rate: float = 1e-3,
                loss: str = "non_saturating", r1_gamma: float = 0.0, seed: int = 0,
                latent_dim: int = 128, base_filters: int = 32,
                max_filters: int = 128) -> GANResult:
    """Grow from ``start`` to the images' size; each later stage fades its block in over the
    first ``fade_fraction`` of its steps. Checked before any training."""
    import keras

    from zoo.train.batches import Batches

    images = check_images(images, "images")
    if images.shape[1] != images.shape[2]:
        raise InputShapeError(f"images {images.shape[1:3]}: progressive growing takes square "
                              "images; crop or pad them first.")
    sizes = stages(images.shape[1], start)
    check_positive_number(fade_fraction, "fade_fraction")
    gan_loss(loss)
    unit = to_unit(images, value_range)
    keras.utils.set_random_seed(seed)
    pair, history = None, []
    options = {"base_filters": base_filters, "max_filters": max_filters}
    for size in sizes:
        pair = build_stage(size, images.shape[-1], latent_dim=latent_dim,
                           fade=pair is not None, previous=pair, **options)
        data = Batches(downsample(unit, size), np.zeros(len(unit), np.int32), batch_size,
                       seed=seed)
        steps = int(fade_fraction * epochs_per_stage * len(data))
        task = DCGANTask(*pair, loss=loss, r1_gamma=r1_gamma, seed=seed)
        rows = train_task(task, data, epochs=epochs_per_stage, learning_rate=learning_rate,
                          hooks=[FadeInSchedule(steps)] if size > sizes[0] else [])
        history += [{**row, "resolution": size} for row in rows]
    return GANResult({"generator": pair[0], "discriminator": pair[1]}, history,
                     tuple(value_range))
