"""A small VGG-style CNN: the zoo's own demo backbone, quick to train on a CPU.

BatchNorm momentum is 0.9 (not 0.99): on the few hundred steps of a small medical dataset
the moving statistics must catch up with the weights, or inference-mode accuracy collapses.

Five stages of two 3x3 conv-BN-ReLU layers and a 2x2 max pool, so its feature maps sit
at strides 2 to 32 like the big backbones'.
"""

from __future__ import annotations

from zoo._lazy import keras
from zoo.layers import dims as D
from zoo.models import adapt
from zoo.models.registry import register_model

WIDTHS = (16, 32, 48, 64, 64)


def stage_features(model):
    """Stride -> pool layer of each stage, found by name (so any ``widths`` works)."""
    pools = [
        layer.name
        for layer in model.layers
        if layer.name.startswith("stage") and layer.name.endswith("_pool")
    ]
    return {2 ** (i + 1): name for i, name in enumerate(pools)}


def vgg_stages(x, widths, dims: int = 2):
    """Stages of two 3x3 conv-BN-ReLU and a 2x max pool; shared by simple_cnn and simple_cnn3d."""
    conv, pool = D.conv(dims), D.pool("max", dims)
    for stage, width in enumerate(widths, start=1):
        for i in (1, 2):
            x = conv(width, 3, padding="same", use_bias=False, name=f"stage{stage}_conv{i}")(x)
            x = keras.layers.BatchNormalization(momentum=0.9, name=f"stage{stage}_bn{i}")(x)
            x = keras.layers.ReLU(name=f"stage{stage}_relu{i}")(x)
        x = pool(2, name=f"stage{stage}_pool")(x)
    return x


@register_model(
    "simple_cnn",
    family="zoo",
    default_size=(64, 64),
    min_size=32,
    preprocess="tf",
    feature_layers=stage_features,
    description="5-stage VGG-style CNN (conv-BN-ReLU x2 + max pool per stage), about 0.2 M "
    "parameters; its own top pools by max",
)
def build_simple_cnn(x, *, include_top, num_classes, classifier_activation, widths=WIDTHS):
    x = vgg_stages(x, widths)
    if include_top:  # max pooling: a lesion of a few percent of the image is not averaged away
        x = adapt.classifier_head(x, num_classes, pooling="max", activation=classifier_activation)
    return x
