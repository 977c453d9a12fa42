"""GAN builders: DCGAN generator and discriminator (optionally conditional), the PatchGAN
discriminator of pix2pix, and CycleGAN's ResNet generator.

Registered with their own tasks (``generator``, ``discriminator``), so ``zoo.list_models("*gan*")``
lists them, cards can hold their weights, and the registry-wide classifier checks skip them. A
latent-input generator gets its ``(latent_dim,)`` input from ``zoo.load`` and the image shape to
produce as ``output_shape`` (see ``ModelEntry.latent_dim``). pix2pix's generator is the zoo's
``unet`` itself (any zoo encoder through the encoder U-Net), ``unet3d`` with ``patchgan3d`` for
volumes. Discriminators end in logits (no
activation): the losses in ``zoo.generative.losses`` take logits. ``spectral_norm=True`` wraps
every convolution and dense layer in ``keras.layers.SpectralNormalization`` (Miyato et al. 2018).
"""

from __future__ import annotations

import math

from zoo._lazy import keras
from zoo.errors import InputShapeError, InvalidArgumentError
from zoo.layers import dims as D
from zoo.models import _blocks
from zoo.models.registry import register_model

DCGAN_PAPER = "Radford et al. 2016 (DCGAN), arXiv:1511.06434"


def check_positive(name: str, value, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InvalidArgumentError(f"{name}={value!r}: give an integer >= {low}.")
    return value


def check_divisible(sizes, factor: int, name: str, option: str) -> None:
    """Every spatial size a multiple of ``factor``: what a stack of stride-2 layers reproduces."""
    for s in sizes:
        if s is not None and (s % factor or s < factor):
            lo = max(factor, s - s % factor)
            raise InputShapeError(
                f"image size {s}: {name} halves (or doubles) the size {int(math.log2(factor))} "
                f"times ({option}), so it only reproduces multiples of {factor}; resize or crop "
                f"the images to {lo} or {lo + factor}, or use a smaller {option}.")


def wrap(layer, spectral_norm: bool):
    """The layer, or the layer under Keras' spectral normalisation (named ``<layer>_sn``)."""
    if not spectral_norm:
        return layer
    return keras.layers.SpectralNormalization(layer, name=f"{layer.name}_sn")


def label_input(num_labels: int, width: int, name: str):
    """A conditional GAN's integer label input and its embedding (``width`` numbers)."""
    label = keras.Input(shape=(1,), dtype="int32", name="label")
    embedded = keras.layers.Embedding(num_labels, width, name=f"{name}_label_embedding")(label)
    return label, keras.layers.Flatten(name=f"{name}_label_flat")(embedded)


def _with_labels(out, extra):
    return {"outputs": out, "inputs": extra} if extra else out


@register_model(
    "dcgan_generator",
    family="zoo",
    default_size=(32, 32),
    min_size=8,
    task="generator",
    latent_dim=100,
    description="DCGAN generator: latent vector -> image (transposed convolutions, tanh); "
    "num_labels > 0 for a conditional one (a second 'label' input)",
    paper=DCGAN_PAPER,
)
def dcgan_generator(z, *, include_top, num_classes, classifier_activation, output_shape,
                    latent_dim=100, depth=3, base_filters=64, num_labels=0, norm="batch"):
    """output_shape: the image produced (H, W, C), each size a multiple of 2**depth; depth:
    the number of x2 up-samplings after the projection; num_labels: classes of a conditional
    generator (0: unconditional)."""
    check_positive("depth", depth)
    check_positive("base_filters", base_filters)
    check_positive("num_labels", num_labels, 0)
    check_positive("latent_dim", latent_dim)
    _blocks.check_norm(norm)
    *spatial, channels = output_shape
    check_divisible(spatial, 2**depth, "dcgan_generator", "depth")
    extra = []
    if num_labels:
        label, embedded = label_input(num_labels, min(latent_dim, 32), "gen")
        z = keras.layers.Concatenate(name="gen_condition")([z, embedded])
        extra = [label]
    start = [s // 2**depth for s in spatial]
    width = base_filters * 2 ** (depth - 1)
    x = keras.layers.Dense(math.prod(start) * width, use_bias=norm == "none", name="project")(z)
    x = keras.layers.Reshape((*start, width), name="project_reshape")(x)
    x = _blocks.normalization(x, norm, f"project_{norm}")
    x = keras.layers.ReLU(name="project_relu")(x)
    for i in range(depth - 1):
        width //= 2
        x = keras.layers.Conv2DTranspose(max(width, 1), 4, strides=2, padding="same",
                                         use_bias=norm == "none", name=f"up{i + 1}_conv")(x)
        x = _blocks.normalization(x, norm, f"up{i + 1}_{norm}")
        x = keras.layers.ReLU(name=f"up{i + 1}_relu")(x)
    x = keras.layers.Conv2DTranspose(channels, 4, strides=2, padding="same", name="to_image")(x)
    out = keras.layers.Activation("tanh", name="image_tanh", dtype="float32")(x)
    return _with_labels(out, extra)


def _down(x, filters, name, *, norm, spectral_norm, strides=2):
    """conv 4 -> norm -> LeakyReLU(0.2): the DCGAN / PatchGAN discriminator block (2D or 3D)."""
    conv = D.conv(D.spatial_dims_of(x))(filters, 4, strides=strides, padding="same",
                                        use_bias=norm == "none", name=f"{name}_conv")
    x = wrap(conv, spectral_norm)(x)
    x = _blocks.normalization(x, norm, f"{name}_{norm}")
    return keras.layers.LeakyReLU(0.2, name=f"{name}_lrelu")(x)


@register_model(
    "dcgan_discriminator",
    family="zoo",
    default_size=(32, 32),
    min_size=8,
    task="discriminator",
    description="DCGAN discriminator: image -> real/fake logit; the feature map without its top "
    "(a few-label encoder); num_labels > 0 for a conditional one, spectral_norm option",
    paper=DCGAN_PAPER,
)
def dcgan_discriminator(x, *, include_top, num_classes, classifier_activation, depth=3,
                        base_filters=64, num_labels=0, norm="batch", spectral_norm=False):
    """depth: stride-2 blocks (sizes multiples of 2**depth); include_top: the real/fake logit
    (``num_classes`` of them, 1 when 0); num_labels: a conditional discriminator's classes."""
    check_positive("depth", depth)
    check_positive("base_filters", base_filters)
    check_positive("num_labels", num_labels, 0)
    _blocks.check_norm(norm)
    spatial = x.shape[1:-1]
    check_divisible(spatial, 2**depth, "dcgan_discriminator", "depth")
    extra = []
    if num_labels:
        label, embedded = label_input(num_labels, math.prod(spatial), "disc")
        plane = keras.layers.Reshape((*spatial, 1), name="disc_label_plane")(embedded)
        x = keras.layers.Concatenate(name="disc_condition")([x, plane])
        extra = [label]
    for i in range(depth):
        x = _down(x, base_filters * 2**i, f"down{i + 1}", norm="none" if i == 0 else norm,
                  spectral_norm=spectral_norm)
    if include_top:
        x = keras.layers.Flatten(name="logit_flatten")(x)
        dense = keras.layers.Dense(num_classes or 1, name="logit", dtype="float32")
        x = wrap(dense, spectral_norm)(x)
    return _with_labels(x, extra)


def _register_patchgan(name: str, dims: int):
    @register_model(
        name,
        family="zoo",
        default_size=(64,) * dims,
        min_size=8,
        spatial_dims=dims,
        task="discriminator",
        description=f"{dims}D PatchGAN discriminator (pix2pix): a logit per overlapping patch "
        "(70 pixels wide with n_layers=3); give it the source and target channels concatenated",
        paper="Isola et al. 2017 (pix2pix), arXiv:1611.07004",
    )
    def patchgan(x, *, include_top, num_classes, classifier_activation, n_layers=3,
                 base_filters=64, norm="batch", spectral_norm=False):
        """n_layers: stride-2 blocks (sizes multiples of 2**n_layers); include_top: the
        1-channel logit map; without it the last feature map."""
        check_positive("n_layers", n_layers)
        check_positive("base_filters", base_filters)
        _blocks.check_norm(norm)
        check_divisible(x.shape[1:-1], 2**n_layers, name, "n_layers")
        for i in range(n_layers):
            x = _down(x, base_filters * min(2**i, 8), f"down{i + 1}",
                      norm="none" if i == 0 else norm, spectral_norm=spectral_norm)
        x = _down(x, base_filters * min(2**n_layers, 8), "features", norm=norm,
                  spectral_norm=spectral_norm, strides=1)
        if include_top:
            conv = D.conv(dims)(num_classes or 1, 4, padding="same", name="patch_logits",
                                dtype="float32")
            x = wrap(conv, spectral_norm)(x)
        return x

    return patchgan


patchgan = _register_patchgan("patchgan", 2)
patchgan3d = _register_patchgan("patchgan3d", 3)


def _residual(x, filters, name, norm):
    y = _blocks.conv_norm_act(x, filters, 3, f"{name}_a", norm=norm)
    y = _blocks.conv_norm_act(y, filters, 3, f"{name}_b", norm=norm, activation="linear")
    return keras.layers.Add(name=f"{name}_add")([x, y])


@register_model(
    "cyclegan_resnet",
    family="zoo",
    default_size=(64, 64),
    min_size=8,
    task="generator",
    description="CycleGAN ResNet generator: image -> image of the same size (two stride-2 "
    "convolutions, n_blocks residual blocks, two transposed convolutions, tanh)",
    paper="Zhu et al. 2017 (CycleGAN), arXiv:1703.10593",
)
def cyclegan_resnet(x, *, include_top, num_classes, classifier_activation, base_filters=64,
                    n_blocks=6, norm="instance"):
    """Sizes multiples of 4; num_classes: output channels (0: as many as the input)."""
    check_positive("base_filters", base_filters)
    check_positive("n_blocks", n_blocks, 0)
    _blocks.check_norm(norm)
    check_divisible(x.shape[1:-1], 4, "cyclegan_resnet", "its two down-samplings")
    channels = num_classes or x.shape[-1]
    x = _blocks.conv_norm_act(x, base_filters, 7, "c7", norm=norm)
    for i in (1, 2):
        x = _blocks.conv_norm_act(x, base_filters * 2**i, 3, f"down{i}", norm=norm, strides=2)
    for i in range(n_blocks):
        x = _residual(x, base_filters * 4, f"res{i + 1}", norm)
    for i in (1, 2):
        x = keras.layers.Conv2DTranspose(base_filters * 2 ** (2 - i), 3, strides=2,
                                         padding="same", use_bias=False, name=f"up{i}_conv")(x)
        x = _blocks.normalization(x, norm, f"up{i}_{norm}")
        x = keras.layers.ReLU(name=f"up{i}_relu")(x)
    x = keras.layers.Conv2D(channels, 7, padding="same", name="to_image")(x)
    return keras.layers.Activation("tanh", name="image_tanh", dtype="float32")(x)
