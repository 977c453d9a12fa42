"""Dilated context CNN for dense per-pixel classification (Wolterink et al. 2016; Yu & Koltun 2016).

Eight 3x3 convolutions with dilations 1, 1, 2, 4, 8, 16, 32, 1 grow the receptive field to
1 + 2 * (1+1+2+4+8+16+32+1) = 131 pixels with no pooling, so every output pixel is
classified from a 131 x 131 context at full resolution; the issue's ninth dilation "1" is
the 1x1 classification layer. 'valid' padding gives the paper's patch-to-pixel network
(output = input - 130), 'same' a full-size label map.
"""

from __future__ import annotations

from zoo._lazy import keras
from zoo.errors import InvalidArgumentError
from zoo.models import _blocks
from zoo.models.registry import register_model

DILATIONS = (1, 1, 2, 4, 8, 16, 32, 1)


def _features(model):
    return {
        1: next(layer.name for layer in reversed(model.layers) if layer.name.startswith("context"))
    }


@register_model(
    "dilated_cnn",
    family="zoo",
    default_size=(192, 192),
    min_size=16,
    preprocess="none",
    task="segmentation",
    feature_layers=_features,
    description="3x3 convolutions dilated 1,1,2,4,8,16,32,1 (131-pixel receptive field) + 1x1 "
    "layers, per-pixel classes",
    paper="Wolterink et al. 2016, arXiv:1704.03669; Yu & Koltun 2016, arXiv:1511.07122",
)
def build_dilated_cnn(
    x,
    *,
    include_top,
    num_classes,
    classifier_activation,
    dilations=DILATIONS,
    filters=32,
    head_filters=192,
    padding="same",
    norm="batch",
    dropout=0.5,
):
    _blocks.check_norm(norm)
    if not dilations or any(not isinstance(d, int) or d < 1 for d in dilations):
        raise InvalidArgumentError(
            f"dilations={dilations!r}: give positive integers, one per 3x3 layer."
        )
    if padding == "valid" and x.shape[1] is not None and x.shape[1] <= 2 * sum(dilations):
        raise InvalidArgumentError(
            f"input {tuple(x.shape[1:-1])} with padding='valid' leaves no output pixel: use sizes "
            f"above {2 * sum(dilations)} (the receptive field is {1 + 2 * sum(dilations)})."
        )
    for i, d in enumerate(dilations, start=1):
        x = _blocks.conv_norm_act(
            x, filters, 3, f"context{i}", norm=norm, padding=padding, dilation=d
        )
    x = keras.layers.Conv2D(head_filters, 1, activation="relu", name="classify1")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="classify_dropout")(x)
    return keras.layers.Conv2D(
        num_classes or 2, 1, activation=classifier_activation, name="head_conv", dtype="float32"
    )(x)
