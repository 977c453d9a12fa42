"""Bad input to the new architectures raises a ZooError that names the input, the cause and the fix."""

from __future__ import annotations

import pytest

import zoo
from zoo.errors import InputShapeError, InvalidArgumentError, UnknownModelError, ZooError


def test_unet_size_not_divisible_by_two_to_the_depth():
    with pytest.raises(InputShapeError, match=r"divisible by 2\*\*3 = 8; pad or crop to 96 or 104"):
        zoo.load("unet", input_shape=(100, 96), depth=3, base_filters=2)
    with pytest.raises(InputShapeError, match="572"):
        zoo.load("unet", input_shape=(570, 570), padding="valid", base_filters=1)


def test_unet_with_an_encoder_needs_its_stride():
    with pytest.raises(InputShapeError, match="divisible by 32"):
        zoo.load("unet", input_shape=(48, 48), encoder="simple_cnn")


def test_unknown_encoder_suggests_names():
    with pytest.raises(UnknownModelError, match="Did you mean 'resnet50'"):
        zoo.load("unet", input_shape=(64, 64), encoder="resnet05")
    with pytest.raises(InvalidArgumentError, match="3D U-Net encoder"):
        zoo.load("unet3d", input_shape=(32, 32, 32), encoder="resnet50")
    with pytest.raises(InvalidArgumentError, match="cannot be a 2D U-Net encoder"):
        zoo.load("unet", input_shape=(64, 64), encoder="dilated_cnn")


def test_three_d_models_refuse_two_d_shapes():
    for arch in ("unet3d", "triplanar_cnn", "vgg16_3d"):
        with pytest.raises(InputShapeError, match="3D network"):
            zoo.load(arch, input_shape=(64, 64))


@pytest.mark.parametrize("arch, options, match", [
    ("unet", {"norm": "layer"}, "norm='layer'"),
    ("unet", {"upsampling": "nearest"}, "upsampling='nearest'"),
    ("unet", {"depth": 0}, "depth=0"),
    ("alexnet", {"variant": "2014"}, "variant='2014'"),
    ("dilated_cnn", {"dilations": (1, 0)}, "dilations"),
    ("patch_cnn29", {"n_scalars": -1}, "n_scalars=-1"),
    ("multiscale_patch_cnn", {"scales": (1, 4)}, "fit the input"),
    ("googlenet", {"aux_logits": True}, "needs num_classes"),
])
def test_bad_options(arch, options, match):
    size = zoo.model_info(arch)["default_size"]
    with pytest.raises(ZooError, match=match):
        zoo.load(arch, input_shape=[min(s, 64) for s in size] if arch != "multiscale_patch_cnn" else size,
                 num_classes=0, **options)
