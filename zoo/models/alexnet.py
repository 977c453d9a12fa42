"""AlexNet: torchvision's single-tower variant (the default) and the 2012 original.

torchvision (Krizhevsky 2014 "one weird trick"): 64-192-384-256-256 filters, no LRN, an
adaptive 6x6 average pool before the classifier: 61,100,840 parameters for 1000 classes.
``variant="2012"``: the NIPS 2012 network, 96-256-384-384-256 filters, the two-GPU towers as
grouped convolutions (conv2, conv4, conv5), local response normalisation after conv1 and conv2.
Layer names follow torchvision's state-dict indices so the converter maps them one to one.
"""

from __future__ import annotations

from zoo._lazy import keras
from zoo.errors import InvalidArgumentError
from zoo.models.registry import register_model

# variant: [(name, filters, kernel, stride, padding, groups, lrn after, pool after)]
_CONVS = {
    "torchvision": [
        ("features_0", 64, 11, 4, 2, 1, False, True),
        ("features_3", 192, 5, 1, 2, 1, False, True),
        ("features_6", 384, 3, 1, 1, 1, False, False),
        ("features_8", 256, 3, 1, 1, 1, False, False),
        ("features_10", 256, 3, 1, 1, 1, False, True),
    ],
    "2012": [
        ("conv1", 96, 11, 4, 2, 1, True, True),
        ("conv2", 256, 5, 1, 2, 2, True, True),
        ("conv3", 384, 3, 1, 1, 1, False, False),
        ("conv4", 384, 3, 1, 1, 2, False, False),
        ("conv5", 256, 3, 1, 1, 2, False, True),
    ],
}


def _features(model):
    # conv1 has stride 4, each max pool doubles it ('valid' pools: sizes a little below H / stride)
    return {8: "pool1", 16: "pool2", 32: "pool5"}


@register_model(
    "alexnet",
    family="zoo",
    default_size=(224, 224),
    min_size=63,
    preprocess="torch",
    feature_layers=_features,
    description="AlexNet, torchvision's single-tower variant (61.1 M parameters); variant='2012' "
    "is the LRN original",
    paper="Krizhevsky et al. 2012 (NIPS); Krizhevsky 2014, arXiv:1404.5997",
)
def build_alexnet(
    x, *, include_top, num_classes, classifier_activation, variant="torchvision", dropout=0.5
):
    from zoo.layers.lrn import LocalResponseNormalization
    from zoo.layers.pooling import AdaptiveAveragePooling2D

    if variant not in _CONVS:
        raise InvalidArgumentError(f"variant={variant!r}: AlexNet variants are {sorted(_CONVS)}.")
    pools = 0
    for name, filters, kernel, stride, pad, groups, lrn, pool in _CONVS[variant]:
        x = keras.layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
        x = keras.layers.Conv2D(filters, kernel, strides=stride, groups=groups, name=name)(x)
        x = keras.layers.ReLU(name=f"{name}_relu")(x)
        if lrn:
            x = LocalResponseNormalization(name=f"{name}_lrn")(x)
        if pool:
            pools += 1
            x = keras.layers.MaxPooling2D(3, strides=2, name=f"pool{5 if pools == 3 else pools}")(x)
    if not include_top:
        return x
    x = AdaptiveAveragePooling2D((6, 6), name="avgpool")(x)
    x = keras.layers.Permute((3, 1, 2), name="chw")(x)  # torch flattens channels first
    x = keras.layers.Flatten(name="flatten")(x)
    for i, units in ((1, 4096), (4, 4096)):
        x = keras.layers.Dropout(dropout, name=f"classifier_{i - 1}")(x)
        x = keras.layers.Dense(units, name=f"classifier_{i}")(x)
        x = keras.layers.ReLU(name=f"classifier_{i + 1}")(x)
    return keras.layers.Dense(
        num_classes, activation=classifier_activation, name="classifier_6", dtype="float32"
    )(x)
