"""Progressive growing (Karras et al. 2018): generator and discriminator at one resolution, with
the fade-in of the newest resolution block.

Every layer is named by the resolution it works at (``g16_conv1``, ``to_rgb_16``, ``d16_conv1``,
``from_rgb_16``), so growing is building the next resolution and copying weights by name
(``zoo.generative.pggan.grow``). With ``fade=True`` the newest block is blended in by a
``FadeIn`` layer: at ``alpha=0`` the generator's output is the previous resolution's output
up-sampled (nearest) and the discriminator sees the average-pooled image through the previous
resolution's ``from_rgb``; at ``alpha=1`` only the new block counts. Outputs are linear (as in the
paper); the equalised learning rate and pixel norm of the paper are left out.
"""

from __future__ import annotations

from zoo._lazy import keras
from zoo.errors import InputShapeError
from zoo.models.gan import check_positive
from zoo.models.registry import register_model

PAPER = "Karras et al. 2018 (progressive growing of GANs), arXiv:1710.10196"


def check_resolution(sizes, name: str) -> int:
    """One square power-of-two size >= 4 (the resolutions progressive growing passes through)."""
    sizes = [s for s in sizes]
    size = sizes[0]
    if len(set(sizes)) != 1 or size is None or size < 4 or size & (size - 1):
        raise InputShapeError(
            f"image size {tuple(sizes)}: {name} grows square images through the powers of two "
            "from 4 (4, 8, 16, 32, 64, ...); resize the images to one of those sizes.")
    return size


def widths(base_filters: int, max_filters: int):
    """The channel count at resolution ``r``: halved per doubling, between 8 and max_filters."""
    return lambda r: max(8, min(max_filters, base_filters * 32 // r))


def _resolutions(size: int) -> list[int]:
    return [2**k for k in range(3, size.bit_length())]


def _conv(x, filters, kernel, name):
    x = keras.layers.Conv2D(filters, kernel, padding="same", name=name)(x)
    return keras.layers.LeakyReLU(0.2, name=f"{name}_lrelu")(x)


@register_model(
    "pggan_generator",
    family="zoo",
    default_size=(32, 32),
    min_size=4,
    task="generator",
    latent_dim=128,
    description="Progressive-growing generator at one resolution (powers of two), with the "
    "fade-in of its newest block (alpha)",
    paper=PAPER,
)
def pggan_generator(z, *, include_top, num_classes, classifier_activation, output_shape,
                    latent_dim=128, base_filters=32, max_filters=128, fade=True, alpha=0.0):
    """output_shape: (R, R, C), R a power of two >= 4; fade: blend the newest block in with a
    FadeIn layer named ``fade_in`` whose weight starts at ``alpha``."""
    from zoo.layers.gan import FadeIn

    check_positive("base_filters", base_filters)
    check_positive("max_filters", max_filters)
    *spatial, channels = output_shape
    size = check_resolution(spatial, "pggan_generator")
    width = widths(base_filters, max_filters)
    x = keras.layers.Dense(16 * width(4), name="g4_dense")(z)
    x = keras.layers.Reshape((4, 4, width(4)), name="g4_reshape")(x)
    x = keras.layers.LeakyReLU(0.2, name="g4_dense_lrelu")(x)
    x = previous = _conv(x, width(4), 3, "g4_conv")
    for r in _resolutions(size):
        previous = x
        x = keras.layers.UpSampling2D(2, name=f"g{r}_up")(x)
        x = _conv(x, width(r), 3, f"g{r}_conv1")
        x = _conv(x, width(r), 3, f"g{r}_conv2")
    high = keras.layers.Conv2D(channels, 1, name=f"to_rgb_{size}", dtype="float32")(x)
    if not fade or size == 4:
        return high
    low = keras.layers.Conv2D(channels, 1, name=f"to_rgb_{size // 2}", dtype="float32")(previous)
    low = keras.layers.UpSampling2D(2, name=f"to_rgb_{size // 2}_up")(low)
    return FadeIn(alpha, name="fade_in", dtype="float32")([low, high])


def _block_down(x, r, width):
    x = _conv(x, width(r), 3, f"d{r}_conv1")
    x = _conv(x, width(r // 2), 3, f"d{r}_conv2")
    return keras.layers.AveragePooling2D(2, name=f"d{r}_pool")(x)


@register_model(
    "pggan_discriminator",
    family="zoo",
    default_size=(32, 32),
    min_size=4,
    task="discriminator",
    description="Progressive-growing discriminator at one resolution (powers of two), with the "
    "fade-in of its newest block (alpha) and the minibatch standard deviation",
    paper=PAPER,
)
def pggan_discriminator(x, *, include_top, num_classes, classifier_activation, base_filters=32,
                        max_filters=128, fade=True, alpha=0.0, minibatch_std=True):
    """Square power-of-two inputs; include_top: the real/fake logit; without it the 4x4 map."""
    from zoo.layers.gan import FadeIn, MinibatchStd

    check_positive("base_filters", base_filters)
    check_positive("max_filters", max_filters)
    size = check_resolution(x.shape[1:-1], "pggan_discriminator")
    width = widths(base_filters, max_filters)
    image = x
    x = _conv(image, width(size), 1, f"from_rgb_{size}")
    if size > 4:
        x = _block_down(x, size, width)
        if fade:
            low = keras.layers.AveragePooling2D(2, name=f"from_rgb_{size // 2}_pool")(image)
            low = _conv(low, width(size // 2), 1, f"from_rgb_{size // 2}")
            x = FadeIn(alpha, name="fade_in")([low, x])
    for r in reversed(_resolutions(size)[:-1]):
        x = _block_down(x, r, width)
    if minibatch_std:
        x = MinibatchStd(name="d4_minibatch_std")(x)
    x = _conv(x, width(4), 3, "d4_conv")
    if include_top:
        x = keras.layers.Flatten(name="d4_flatten")(x)
        x = keras.layers.Dense(width(4), name="d4_dense")(x)
        x = keras.layers.LeakyReLU(0.2, name="d4_dense_lrelu")(x)
        x = keras.layers.Dense(num_classes or 1, name="logit", dtype="float32")(x)
    return x
