"""A small 3D CNN: the volumetric twin of simple_cnn, for Models Genesis 3D and volume tasks.

Four stages of two 3x3x3 conv-BN-ReLU layers and a 2x2x2 max pool (strides 2 to 16), about
0.1 M parameters, so a 16 x 32 x 32 volume trains in seconds on a CPU. BatchNorm momentum
0.9 for the same reason as simple_cnn's: few steps, statistics must catch up.
"""

from __future__ import annotations

from zoo._lazy import keras
from zoo.models import adapt
from zoo.models.registry import register_model

WIDTHS = (8, 16, 32, 48)


def _features(model):
    return {2 ** (i + 1): f"stage{i + 1}_pool" for i in range(len(WIDTHS))}


@register_model(
    "simple_cnn3d",
    family="zoo",
    default_size=(16, 32, 32),
    min_size=16,
    preprocess="tf",
    spatial_dims=3,
    feature_layers=_features,
    description="4-stage 3D CNN (conv-BN-ReLU x2 + max pool per stage), about 0.1 M parameters; input (D, H, W, C)",
)
def build_simple_cnn3d(x, *, include_top, num_classes, classifier_activation, widths=WIDTHS):
    for stage, width in enumerate(widths, start=1):
        for conv in (1, 2):
            x = keras.layers.Conv3D(width, 3, padding="same", use_bias=False, name=f"stage{stage}_conv{conv}")(x)
            x = keras.layers.BatchNormalization(momentum=0.9, name=f"stage{stage}_bn{conv}")(x)
            x = keras.layers.ReLU(name=f"stage{stage}_relu{conv}")(x)
        x = keras.layers.MaxPooling3D(2, name=f"stage{stage}_pool")(x)
    if include_top:
        x = adapt.classifier_head(x, num_classes, pooling="max", activation=classifier_activation)
    return x
