"""The ImageNet backbones of keras.applications, registered as zoo models.

Built by keras.applications itself (``input_tensor`` = the zoo's preprocessed input), so
the layer graph, and hence the legacy ``.h5`` weight order, is exactly Keras' own.
"""

from __future__ import annotations

from functools import partial

from zoo._lazy import keras
from zoo.models.registry import register_model


def _build(x, *, include_top, num_classes, classifier_activation, app, **options):
    if options:
        raise TypeError(f"unexpected options for keras.applications.{app}: {sorted(options)}")
    return getattr(keras.applications, app)(
        include_top=include_top,
        weights=None,
        input_tensor=x,
        classes=num_classes or 1000,
        classifier_activation=classifier_activation,
    )


def _named(names: dict[int, str]):
    return lambda model: dict(names)


def _inception_features(model) -> dict[int, str]:
    """InceptionV3 auto-names its stem layers, so find the stride-4 map by position."""
    pools = [
        i for i, layer in enumerate(model.layers) if isinstance(layer, keras.layers.MaxPooling2D)
    ]
    return {
        4: model.layers[pools[1] - 1].name,  # the stem's last activation before its second pool
        8: "mixed2",
        16: "mixed7",
        32: "mixed10",
    }


def _resnet(blocks3: int, blocks4: int):
    return _named({2: "conv1_relu", 4: "conv2_block3_out", 8: f"conv3_block{blocks3}_out",
                   16: f"conv4_block{blocks4}_out", 32: "conv5_block3_out"})


def _vgg(convs: int):
    return _named({2: "block2_conv2", 4: f"block3_conv{convs}", 8: f"block4_conv{convs}",
                   16: f"block5_conv{convs}", 32: "block5_pool"})


_DENSENET = _named(
    {2: "conv1_relu", 4: "pool2_relu", 8: "pool3_relu", 16: "pool4_relu", 32: "relu"}
)

# name: (keras.applications function, preprocess mode, default size, min size, features, paper)
_APPS = {
    "inception_v3": (
        "InceptionV3",
        "tf",
        299,
        75,
        _inception_features,
        "Szegedy et al. 2016, arXiv:1512.00567",
    ),
    "resnet50": ("ResNet50", "caffe", 224, 32, _resnet(4, 6), "He et al. 2016, arXiv:1512.03385"),
    "resnet101": (
        "ResNet101",
        "caffe",
        224,
        32,
        _resnet(4, 23),
        "He et al. 2016, arXiv:1512.03385",
    ),
    "resnet152": (
        "ResNet152",
        "caffe",
        224,
        32,
        _resnet(8, 36),
        "He et al. 2016, arXiv:1512.03385",
    ),
    "densenet121": (
        "DenseNet121",
        "torch",
        224,
        32,
        _DENSENET,
        "Huang et al. 2017, arXiv:1608.06993",
    ),
    "densenet169": (
        "DenseNet169",
        "torch",
        224,
        32,
        _DENSENET,
        "Huang et al. 2017, arXiv:1608.06993",
    ),
    "densenet201": (
        "DenseNet201",
        "torch",
        224,
        32,
        _DENSENET,
        "Huang et al. 2017, arXiv:1608.06993",
    ),
    "vgg16": ("VGG16", "caffe", 224, 32, _vgg(3), "Simonyan & Zisserman 2015, arXiv:1409.1556"),
    "vgg19": ("VGG19", "caffe", 224, 32, _vgg(4), "Simonyan & Zisserman 2015, arXiv:1409.1556"),
}

for _name, (_app, _mode, _size, _min, _features, _paper) in _APPS.items():
    register_model(
        _name,
        family="keras_applications",
        default_size=(_size, _size),
        min_size=_min,
        preprocess=_mode,
        feature_layers=_features,
        description=f"keras.applications.{_app}",
        paper=_paper,
    )(partial(_build, app=_app))
