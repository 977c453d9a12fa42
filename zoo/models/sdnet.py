"""SDNet's networks (Chartsias et al. 2019, arXiv:1903.09467), 2D; trained by zoo.semi.sdnet.

``sdnet`` (task "segmentation") is the model a user loads: image -> class probabilities, the
anatomy encoder (the images mapped from ``input_range`` onto the U-Net's range, the zoo's
``unet`` with ``n_anatomy`` softmax channels, rounded to 0/1 per pixel by
``zoo.layers.sdnet.StraightThroughRound``, layer ``anatomy_round``, so the U-Net's feature
layers are the model's own) then the segmentor (a nested model ``sdnet_segmentor``: two
conv-BN-ReLU and a 1x1 softmax convolution on the anatomy factor, layers ``head_seg_*``, so
``zoo.freeze`` leaves it trainable as the transfer head). Being registered, a trained
SDNet published as card ``sdnet.TAG`` is rebuilt by ``zoo.load("sdnet", pretrained=TAG)`` (the
card's ``builder_options`` give the widths). ``encoder=`` (any 2D zoo classification backbone
with multi-scale features: simple_cnn, resnet*, densenet*, vgg*) becomes the U-Net's encoder,
as for ``zoo.load("unet", encoder=...)``; the images are then mapped onto that backbone's own
input range instead of [0, 1].

``modality_encoder`` and ``decoder`` are the training-only parts: [image, anatomy] -> (mu,
logvar) of the modality factor, and [anatomy, z] -> image (FiLM-modulated convolutions).
"""

from __future__ import annotations

import math

from zoo._lazy import keras
from zoo.errors import InvalidArgumentError
from zoo.models.registry import register_model


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgumentError(f"{name}={value!r}: give a positive integer.")
    return int(value)


def check_input_range(input_range) -> tuple[float, float]:
    """(low, high) finite pixel values with high > low, else InvalidArgumentError."""
    try:
        lo, hi = (float(v) for v in input_range)
    except (TypeError, ValueError):
        lo = hi = math.nan
    if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
        raise InvalidArgumentError(
            f"input_range={input_range!r}: give (low, high) pixel values with high > low.")
    return lo, hi


def _rescale(input_range, target, name: str):
    """A Rescaling layer mapping ``input_range`` linearly onto ``target``."""
    (lo, hi), (a, b) = input_range, target
    scale = (b - a) / (hi - lo)
    return keras.layers.Rescaling(scale, a - lo * scale, name=name)


def _anatomy(x, n_anatomy, depth, base_filters, input_range, encoder, freeze_encoder):
    """image tensor -> anatomy factor s (in the caller's graph, so the U-Net's feature layers
    are the model's own): rescale, the zoo U-Net (softmax over n_anatomy), round."""
    from zoo.layers.sdnet import StraightThroughRound
    from zoo.models.unet import build_unet

    target = (0.0, 1.0)
    if encoder is not None:
        try:
            target = tuple(encoder.get_layer("preprocess").input_range)
        except ValueError:
            target = (0.0, 255.0)
    x = _rescale(input_range, target, "input_rescale")(x)
    s = build_unet(x, include_top=True, num_classes=n_anatomy, classifier_activation="softmax",
                   depth=depth, base_filters=base_filters, encoder=encoder,
                   freeze_encoder=freeze_encoder)
    return StraightThroughRound(name="anatomy_round")(s)


def _segmentor(shape, n_anatomy: int, num_classes: int, width: int, activation):
    """s -> class probabilities: two 3x3 conv-BN-ReLU and a 1x1 convolution."""
    s = keras.Input((*shape[:-1], n_anatomy), name="anatomy")
    x = s
    for i in (1, 2):
        x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False,
                                name=f"head_seg_conv{i}")(x)
        x = keras.layers.BatchNormalization(name=f"head_seg_bn{i}")(x)
        x = keras.layers.ReLU(name=f"head_seg_relu{i}")(x)
    out = keras.layers.Conv2D(num_classes, 1, activation=activation, name="head_seg_out",
                              dtype="float32")(x)
    return keras.Model(s, out, name="sdnet_segmentor")


def modality_encoder(shape, *, n_anatomy: int, z_dim: int, width: int, input_range):
    """[image, s] -> [mu, logvar]: two strided conv-BN-LeakyReLU, pooling, two Dense heads."""
    image = keras.Input(tuple(shape), name="image")
    s = keras.Input((*shape[:-1], n_anatomy), name="anatomy")
    x = _rescale(check_input_range(input_range), (0.0, 1.0), "modality_rescale")(image)
    x = keras.layers.Concatenate(name="modality_concat")([x, s])
    for i in (1, 2):
        x = keras.layers.Conv2D(width * i, 3, strides=2, padding="same",
                                name=f"modality_conv{i}")(x)
        x = keras.layers.BatchNormalization(name=f"modality_bn{i}")(x)
        x = keras.layers.LeakyReLU(0.2, name=f"modality_act{i}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="modality_pool")(x)
    x = keras.layers.Dense(4 * z_dim, activation="relu", name="modality_fc")(x)
    mu = keras.layers.Dense(z_dim, name="z_mean", dtype="float32")(x)
    logvar = keras.layers.Dense(z_dim, name="z_log_var", dtype="float32")(x)
    return keras.Model([image, s], [mu, logvar], name="sdnet_modality")


def decoder(shape, *, n_anatomy: int, z_dim: int, width: int):
    """[s, z] -> the image in [0, 1]: convolutions on the anatomy, each scaled and shifted by
    FiLM(z) (how SDNet mixes where the structures are with how they look)."""
    from zoo.layers.sdnet import FiLM

    s = keras.Input((*shape[:-1], n_anatomy), name="anatomy")
    z = keras.Input((z_dim,), name="modality")
    x = s
    for i in (1, 2, 3):
        x = keras.layers.Conv2D(width, 3, padding="same", name=f"decoder_conv{i}")(x)
        gamma = keras.layers.Dense(width, name=f"decoder_film{i}_gamma",
                                   bias_initializer="ones")(z)
        beta = keras.layers.Dense(width, name=f"decoder_film{i}_beta")(z)
        x = FiLM(name=f"decoder_film{i}")([x, gamma, beta])
        x = keras.layers.LeakyReLU(0.2, name=f"decoder_act{i}")(x)
    out = keras.layers.Conv2D(shape[-1], 1, name="decoder_out", dtype="float32")(x)
    return keras.Model([s, z], out, name="sdnet_decoder")


def _features(model) -> dict[int, str]:
    """The anatomy U-Net's feature layers (zoo.models.unet's)."""
    from zoo.models.unet import _features as unet_features

    return unet_features(model)


@register_model(
    "sdnet",
    family="zoo",
    default_size=(128, 128),
    min_size=16,
    preprocess="none",
    spatial_dims=2,
    task="segmentation",
    description="SDNet segmenter: anatomy factor (zoo U-Net, any 2D backbone as encoder=) -> "
    "segmentor; trained semi-supervised by zoo.semi.fit_sdnet",
    paper="Chartsias et al. 2019, arXiv:1903.09467",
    takes_encoder=True,
    feature_layers=_features,
)
def build_sdnet_segmenter(x, *, include_top, num_classes, classifier_activation, n_anatomy=8,
                          depth=3, base_filters=16, width=16, input_range=(0.0, 1.0),
                          encoder=None, freeze_encoder=False):
    """n_anatomy: anatomy channels; depth, base_filters: the U-Net's (without encoder=);
    width: the segmentor's channels; input_range: the images' (low, high) pixel values;
    encoder: a 2D backbone name for the U-Net's encoder (zoo.load builds it)."""
    shape = tuple(int(v) for v in x.shape[1:])
    num_classes = _positive_int(num_classes or 2, "num_classes")
    if num_classes < 2:
        raise InvalidArgumentError(
            f"num_classes={num_classes}: count the background too (2 for one structure).")
    n_anatomy, width = _positive_int(n_anatomy, "n_anatomy"), _positive_int(width, "width")
    s = _anatomy(x, n_anatomy, depth, base_filters, check_input_range(input_range), encoder,
                 freeze_encoder)
    return _segmentor(shape, n_anatomy, num_classes, width, classifier_activation)(s)
