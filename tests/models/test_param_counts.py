"""Parameter counts equal the reference implementations (torchvision; the U-Net paper by hand)."""

from __future__ import annotations

import zoo


def trainable(model) -> int:
    """Keras counts BatchNorm moving statistics as (non-trainable) weights; torch keeps them as buffers."""
    return sum(int(w.numpy().size) for w in model.trainable_weights)


def test_alexnet_is_torchvision_count():
    """torchvision's classifier (6x6 adaptive pool, 4096-4096-1000): zoo.load's include_top=True."""
    model = zoo.load("alexnet", include_top=True, classifier_activation=None)
    features = 2_469_696  # torchvision's features: 11*11*3*64+64 + 5*5*64*192+192 + 3*3*192*384+384 + ...
    assert features + 9216 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 * 1000 + 1000 == 61_100_840
    assert model.count_params() == 61_100_840
    assert sum(layer.count_params() for layer in model.layers if layer.name.startswith("features_")) == features


def test_googlenet_is_torchvision_count():
    plain = zoo.load("googlenet", include_top=True, classifier_activation=None)
    aux = zoo.load("googlenet", include_top=True, classifier_activation=None, aux_logits=True)
    assert plain.count_params() == trainable(plain) + 2 * sum(  # BatchNorm moving statistics
        int(layer.moving_mean.shape[0]) for layer in plain.layers if hasattr(layer, "moving_mean"))
    assert trainable(plain) == 6_624_904
    assert trainable(aux) == 13_004_888


def test_alexnet_2012_count_by_hand():
    """96-256-384-384-256 with two towers (groups=2 halves conv2, conv4, conv5's inputs)."""
    model = zoo.load("alexnet", variant="2012", num_classes=0)
    convs = [(11, 3, 96, 1), (5, 96, 256, 2), (3, 256, 384, 1), (3, 384, 384, 2), (3, 384, 256, 2)]
    assert model.count_params() == sum(k * k * cin // g * cout + cout for k, cin, cout, g in convs)


def test_unet_paper_configuration_by_hand():
    """Ronneberger et al. 2015, Fig. 1: 572x572x1 -> 388x388x2, valid 3x3 convs, 2x2 up-convs, no normalisation."""
    model = zoo.load("unet", input_shape=(572, 572), in_chans=1, num_classes=2, padding="valid", norm="none",
                     base_filters=64, depth=4)
    assert model.output.shape == (None, 388, 388, 2)

    def conv(k, cin, cout):
        return k * k * cin * cout + cout

    widths = [64, 128, 256, 512, 1024]
    total, cin = 0, 1
    for w in widths:  # contracting path and bottom: two 3x3 convs per level
        total += conv(3, cin, w) + conv(3, w, w)
        cin = w
    for w in reversed(widths[:-1]):  # expanding path: 2x2 up-conv halving the width, then two 3x3 convs
        total += conv(2, 2 * w, w) + conv(3, 2 * w, w) + conv(3, w, w)
    total += conv(1, 64, 2)
    assert total == 31_030_658  # 1 input channel, 2 classes
    assert model.count_params() == total
