"""GoogLeNet (Inception v1) as torchvision builds it, with the paper's optional auxiliary heads.

torchvision's layout: BatchNorm after every convolution (eps 1e-3), ceil-mode max pooling,
and a 3x3 (not 5x5) convolution in the "5x5" branch; 6,624,904 parameters for 1000 classes,
13,004,888 with both auxiliary classifiers. Its ImageNet checkpoint was trained on inputs in
[-1, 1] (``transform_input``), which is the "tf" preprocessing here. Layer names are the
state-dict names with dots as underscores.
"""

from __future__ import annotations

from zoo._lazy import keras
from zoo.errors import InvalidArgumentError
from zoo.models.registry import register_model

# name: (1x1, 3x3 reduce, 3x3, "5x5" reduce, "5x5", pool projection)
INCEPTION = {
    "inception3a": (64, 96, 128, 16, 32, 32), "inception3b": (128, 128, 192, 32, 96, 64),
    "inception4a": (192, 96, 208, 16, 48, 64), "inception4b": (160, 112, 224, 24, 64, 64),
    "inception4c": (128, 128, 256, 24, 64, 64), "inception4d": (112, 144, 288, 32, 64, 64),
    "inception4e": (256, 160, 320, 32, 128, 128), "inception5a": (256, 160, 320, 32, 128, 128),
    "inception5b": (384, 192, 384, 48, 128, 128),
}


def basic_conv(x, filters, kernel, name, strides=1, padding=0):
    """torchvision's BasicConv2d: conv (no bias) -> BatchNorm(eps 1e-3) -> ReLU."""
    if padding:
        x = keras.layers.ZeroPadding2D(padding, name=f"{name}_pad")(x)
    x = keras.layers.Conv2D(filters, kernel, strides=strides, use_bias=False, name=f"{name}_conv")(
        x
    )
    x = keras.layers.BatchNormalization(epsilon=1e-3, name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def inception(x, name, widths):
    c1, r3, c3, r5, c5, proj = widths
    b1 = basic_conv(x, c1, 1, f"{name}_branch1")
    b2 = basic_conv(
        basic_conv(x, r3, 1, f"{name}_branch2_0"), c3, 3, f"{name}_branch2_1", padding=1
    )
    b3 = basic_conv(
        basic_conv(x, r5, 1, f"{name}_branch3_0"), c5, 3, f"{name}_branch3_1", padding=1
    )
    b4 = keras.layers.MaxPooling2D(3, strides=1, padding="same", name=f"{name}_branch4_pool")(x)
    b4 = basic_conv(b4, proj, 1, f"{name}_branch4_1")
    return keras.layers.Concatenate(name=name)([b1, b2, b3, b4])


def aux_head(x, name, num_classes, activation):
    """Auxiliary classifier (torchvision's InceptionAux): 4x4 pool, 1x1 conv, FC 1024, drop .7."""
    from zoo.layers.pooling import AdaptiveAveragePooling2D

    x = AdaptiveAveragePooling2D((4, 4), name=f"{name}_pool")(x)
    x = basic_conv(x, 128, 1, f"{name}_conv")
    x = keras.layers.Permute((3, 1, 2), name=f"{name}_chw")(x)  # torch flattens channels first
    x = keras.layers.Flatten(name=f"{name}_flatten")(x)
    x = keras.layers.Dense(1024, activation="relu", name=f"{name}_fc1")(x)
    x = keras.layers.Dropout(0.7, name=f"{name}_dropout")(x)
    return keras.layers.Dense(
        num_classes, activation=activation, name=f"{name}_fc2", dtype="float32"
    )(x)


def _features(model):
    return {4: "maxpool1", 8: "maxpool2", 16: "inception4e", 32: "inception5b"}


@register_model(
    "googlenet",
    family="zoo",
    default_size=(224, 224),
    min_size=32,
    preprocess="tf",
    feature_layers=_features,
    description="GoogLeNet / Inception v1 as in torchvision (6.6 M parameters); aux_logits=True "
    "adds the two auxiliary heads",
    paper="Szegedy et al. 2015, arXiv:1409.4842",
)
def build_googlenet(
    x, *, include_top, num_classes, classifier_activation, aux_logits=False, dropout=0.2
):
    from zoo.layers.pooling import CeilMaxPooling2D

    if aux_logits and not num_classes:
        raise InvalidArgumentError(
            "aux_logits=True needs num_classes (the auxiliary heads classify too)."
        )
    x = basic_conv(x, 64, 7, "conv1", strides=2, padding=3)
    x = CeilMaxPooling2D(3, 2, name="maxpool1")(x)
    x = basic_conv(x, 64, 1, "conv2")
    x = basic_conv(x, 192, 3, "conv3", padding=1)
    x = CeilMaxPooling2D(3, 2, name="maxpool2")(x)
    x = inception(x, "inception3a", INCEPTION["inception3a"])
    x = inception(x, "inception3b", INCEPTION["inception3b"])
    x = CeilMaxPooling2D(3, 2, name="maxpool3")(x)
    aux = []
    for name in ("inception4a", "inception4b", "inception4c", "inception4d", "inception4e"):
        if name in ("inception4b", "inception4e") and aux_logits:  # aux1 reads 4a, aux2 reads 4d
            aux.append(aux_head(x, f"aux{len(aux) + 1}", num_classes, classifier_activation))
        x = inception(x, name, INCEPTION[name])
    x = CeilMaxPooling2D(2, 2, name="maxpool4")(x)
    x = inception(x, "inception5a", INCEPTION["inception5a"])
    x = inception(x, "inception5b", INCEPTION["inception5b"])
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avgpool")(x)
        x = keras.layers.Dropout(dropout, name="dropout")(x)
        x = keras.layers.Dense(
            num_classes, activation=classifier_activation, name="fc", dtype="float32"
        )(x)
    return [x, *aux] if aux else x
