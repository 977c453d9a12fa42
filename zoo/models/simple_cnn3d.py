"""A small 3D CNN: the volumetric twin of simple_cnn, for Models Genesis 3D and volume tasks.

Four stages of two 3x3x3 conv-BN-ReLU layers and a 2x2x2 max pool (strides 2 to 16), about
0.1 M parameters, so a 16 x 32 x 32 volume trains in seconds on a CPU. BatchNorm momentum
0.9 for the same reason as simple_cnn's: few steps, statistics must catch up.
"""

from __future__ import annotations

from zoo.models import adapt
from zoo.models.registry import register_model
from zoo.models.simple_cnn import stage_features, vgg_stages

WIDTHS = (8, 16, 32, 48)


@register_model(
    "simple_cnn3d",
    family="zoo",
    default_size=(16, 32, 32),
    min_size=16,
    preprocess="tf",
    spatial_dims=3,
    feature_layers=stage_features,
    description="4-stage 3D CNN (conv-BN-ReLU x2 + max pool per stage), about 0.1 M parameters; "
    "input (D, H, W, C)",
)
def build_simple_cnn3d(x, *, include_top, num_classes, classifier_activation, widths=WIDTHS):
    x = vgg_stages(x, widths, dims=3)
    if include_top:
        x = adapt.classifier_head(x, num_classes, pooling="max", activation=classifier_activation)
    return x
