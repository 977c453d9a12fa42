"""3D ResNet-50, DenseNet-121, VGG-16 and simple_cnn whose weights are 2D ones, inflated.

Every layer carries the keras.applications layer name, so a 2D checkpoint maps one to one:
a k x k kernel becomes k x k x k, repeated along depth and divided by k (Carreira &
Zisserman's I3D inflation). Depth is padded by replicating the edge slice (in-plane padding
stays zero), so a volume that is constant along depth passes through every layer constant
along depth and the 3D features equal the 2D features of one slice, to float32 round-off.
Depth, height and width are all strided as in-plane; every spatial size must be >= 32.
The inflation of the weights is the ``inflated-2d`` format's loader (zoo/weights/inflated.py).

``simple_cnn_3d`` is the zoo's own ``simple_cnn`` inflated the same way (its widths, layer names
and BatchNorm settings), so the shipped ``simple_cnn.phantom`` checkpoint can serve as a 3D
encoder (``simple_cnn_3d.phantom_inflated``, e.g. for ``unet3d``); ``simple_cnn3d`` is a
different, narrower 3D network trained from scratch.
"""

from __future__ import annotations

from functools import partial

from zoo._lazy import keras
from zoo.models import adapt, keras_apps, simple_cnn
from zoo.models.registry import register_model

EPS = 1.001e-5  # keras.applications' BatchNorm epsilon for ResNet and DenseNet


def _pad(x, p: int, name: str):
    from zoo.layers.padding import SpatialPadding

    return SpatialPadding([(p, p)] * 3, edge_axes=(0,), name=name)(x) if p else x


def _conv(x, filters, k, name, strides=1, use_bias=True, activation=None, pad_name=None):
    """A 'same' (k odd, stride 1) or explicitly padded convolution; depth edge-replicated."""
    x = _pad(x, (k - 1) // 2 if strides == 1 else 0, pad_name or f"{name}_pad")
    return keras.layers.Conv3D(
        filters, k, strides=strides, use_bias=use_bias, activation=activation, name=name
    )(x)


def _bn(x, name):
    return keras.layers.BatchNormalization(epsilon=EPS, name=name)(x)


def _relu(x, name):
    return keras.layers.Activation("relu", name=name)(x)


def _stem(x, use_bias):
    x = _pad(x, 3, "conv1_pad")
    x = keras.layers.Conv3D(64, 7, strides=2, use_bias=use_bias, name="conv1_conv")(x)
    x = _relu(_bn(x, "conv1_bn"), "conv1_relu")
    x = _pad(x, 1, "pool1_pad")
    return keras.layers.MaxPooling3D(3, strides=2, name="pool1_pool" if use_bias else "pool1")(x)


def _resnet_block(x, filters, name, stride=1, shortcut_conv=True):
    shortcut = x
    if shortcut_conv:
        shortcut = _bn(_conv(x, 4 * filters, 1, f"{name}_0_conv", strides=stride), f"{name}_0_bn")
    x = _relu(
        _bn(_conv(x, filters, 1, f"{name}_1_conv", strides=stride), f"{name}_1_bn"),
        f"{name}_1_relu",
    )
    x = _relu(_bn(_conv(x, filters, 3, f"{name}_2_conv"), f"{name}_2_bn"), f"{name}_2_relu")
    x = _bn(_conv(x, 4 * filters, 1, f"{name}_3_conv"), f"{name}_3_bn")
    return _relu(keras.layers.Add(name=f"{name}_add")([shortcut, x]), f"{name}_out")


def resnet50_3d(x):
    x = _stem(x, use_bias=True)
    for stage, (filters, blocks, stride) in enumerate(
        ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)), start=2
    ):
        x = _resnet_block(x, filters, f"conv{stage}_block1", stride=stride)
        for b in range(2, blocks + 1):
            x = _resnet_block(x, filters, f"conv{stage}_block{b}", shortcut_conv=False)
    return x


def densenet121_3d(x, blocks=(6, 12, 24, 16)):
    x = _stem(x, use_bias=False)
    for stage, n in enumerate(blocks, start=2):
        for b in range(1, n + 1):
            name = f"conv{stage}_block{b}"
            y = _relu(_bn(x, f"{name}_0_bn"), f"{name}_0_relu")
            y = _relu(
                _bn(_conv(y, 128, 1, f"{name}_1_conv", use_bias=False), f"{name}_1_bn"),
                f"{name}_1_relu",
            )
            y = _conv(y, 32, 3, f"{name}_2_conv", use_bias=False)
            x = keras.layers.Concatenate(name=f"{name}_concat")([x, y])
        if stage < 5:
            name = f"pool{stage}"
            x = _relu(_bn(x, f"{name}_bn"), f"{name}_relu")
            x = _conv(x, int(x.shape[-1]) // 2, 1, f"{name}_conv", use_bias=False)
            x = keras.layers.AveragePooling3D(2, strides=2, name=f"{name}_pool")(x)
    return _relu(_bn(x, "bn"), "relu")


def vgg16_3d(x):
    for block, (filters, convs) in enumerate(
        ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)), start=1
    ):
        for c in range(1, convs + 1):
            x = _conv(x, filters, 3, f"block{block}_conv{c}", activation="relu")
        x = keras.layers.MaxPooling3D(2, strides=2, name=f"block{block}_pool")(x)
    return x


def _build(x, *, include_top, num_classes, classifier_activation, body):
    """Backbone only: a 2D ImageNet classifier has no 3D meaning; zoo.load adds heads."""
    return body(x)


# name: (3D body, the 2D architecture whose cards and feature layers it shares)
_NETS = {
    "resnet50_3d": (resnet50_3d, "resnet50"),
    "densenet121_3d": (densenet121_3d, "densenet121"),
    "vgg16_3d": (vgg16_3d, "vgg16"),
}

for _name, (_body, _arch2d) in _NETS.items():
    register_model(
        _name,
        family="inflated_3d",
        default_size=(64, 224, 224),
        min_size=32,
        preprocess=keras_apps._APPS[_arch2d][1],
        spatial_dims=3,
        feature_layers=keras_apps._APPS[_arch2d][4],
        description=f"3D {_arch2d} with depth-edge padding; tag imagenet_inflated inflates its 2D "
        "ImageNet weights",
        paper=f"{keras_apps._APPS[_arch2d][5]}; inflation: Carreira & Zisserman 2017, "
        "arXiv:1705.07750",
    )(partial(_build, body=_body))


@register_model(
    "simple_cnn_3d",
    family="zoo",
    default_size=(32, 64, 64),
    min_size=32,
    preprocess="tf",
    spatial_dims=3,
    feature_layers=simple_cnn.stage_features,
    description="simple_cnn inflated to 3D (its widths and layer names, depth edge-padded); tag "
    "phantom_inflated inflates the shipped simple_cnn.phantom, e.g. as a unet3d encoder",
    paper="inflation: Carreira & Zisserman 2017, arXiv:1705.07750",
)
def build_simple_cnn_3d(x, *, include_top, num_classes, classifier_activation,
                        widths=simple_cnn.WIDTHS):
    """simple_cnn's stages (two 3x3 conv-BN-ReLU and a 2x max pool each) as 3x3x3 / 2x2x2; fewer
    ``widths`` build the first stages only (the inflation fills the layers that exist)."""
    for stage, width in enumerate(widths, start=1):
        for i in (1, 2):
            x = _conv(x, width, 3, f"stage{stage}_conv{i}", use_bias=False)
            x = keras.layers.BatchNormalization(momentum=0.9, name=f"stage{stage}_bn{i}")(x)
            x = keras.layers.ReLU(name=f"stage{stage}_relu{i}")(x)
        x = keras.layers.MaxPooling3D(2, name=f"stage{stage}_pool")(x)
    if include_top:
        x = adapt.classifier_head(x, num_classes, pooling="max", activation=classifier_activation)
    return x
