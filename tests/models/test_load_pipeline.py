"""zoo.load as small steps (resolve -> plan -> build -> load weights -> adapt), and what they fixed:
include_top, in_chans from input_shape, the weights' origin in the config, the MIL head's own
argument and activation."""

from __future__ import annotations

import hashlib
from pathlib import Path

import keras
import numpy as np
import pytest

import zoo
from zoo.errors import InputShapeError, InvalidArgumentError
from zoo.models import factory
from zoo.models.registry import ModelEntry, get_entry

RNG = np.random.default_rng(0)


def test_resolve_and_plan_alone_build_nothing(tmp_path):
    """The first two steps decide everything from the name, the card and the arguments."""
    r = factory.resolve("simple_cnn.phantom")
    assert (r.entry.name, r.card.name, r.path) == ("simple_cnn", "simple_cnn.phantom", None)
    p = factory.plan(r)
    assert (p.shape, p.in_chans, p.use_top, p.top_classes, p.fmt) == (
        (64, 64, 1),
        1,
        True,
        2,
        "keras-weights-h5",
    )
    fresh = factory.plan(r, num_classes=5)
    assert (fresh.use_top, fresh.top_classes) == (False, 5)
    grey = factory.plan(factory.resolve("unet"), input_shape=(64, 64, 1))
    assert (grey.in_chans, grey.shape) == (1, (64, 64, 1))  # in_chans read from the given shape
    with pytest.raises(InputShapeError, match="2 channels but in_chans=1"):
        factory.plan(factory.resolve("unet"), input_shape=(64, 64, 2), in_chans=1)
    assert not hasattr(ModelEntry, "options") and get_entry("unet").takes_encoder


def test_build_then_load_weights_step_by_step():
    """build gives random weights and never fetches; load_weights fills them from the card's file,
    through a twin at the file's channels copied by layer name (the first kernel adapted)."""
    from zoo.weights.copying import adapt_first_conv

    reference = zoo.load("simple_cnn.phantom")
    p = factory.plan(factory.resolve("simple_cnn.phantom"), in_chans=2)
    model = factory.build(p)
    assert p.path is None and factory.weights_origin(model) is None
    p = factory.fetch_weights(p)
    factory.load_weights(model, p)
    kernel = reference.get_layer("stage1_conv1").kernel.numpy()
    np.testing.assert_array_equal(
        model.get_layer("stage1_conv1").kernel.numpy(), adapt_first_conv(kernel, 2)
    )
    np.testing.assert_array_equal(
        model.get_layer("head_fc").kernel.numpy(), reference.get_layer("head_fc").kernel.numpy()
    )


def test_unet_takes_the_channels_of_its_input_shape():
    model = zoo.load("unet", input_shape=(64, 64, 1), depth=2, base_filters=4)
    assert model.inputs[0].shape == (None, 64, 64, 1) and model.output.shape == (None, 64, 64, 2)


def test_the_unet_builder_wires_a_given_encoder_and_loads_nothing():
    """Builders never fetch: zoo.load builds the encoder; the builder takes the features model."""
    encoder = zoo.load("simple_cnn", in_chans=1, input_shape=(32, 32), features=True)
    x = keras.Input((32, 32, 1))
    out = get_entry("unet").builder(
        x,
        include_top=False,
        num_classes=2,
        classifier_activation=None,
        encoder=encoder,
        freeze_encoder=True,
        decoder_filters=(4,) * 5,
    )
    model = keras.Model(x, out)
    assert model.get_layer(encoder.name) is encoder and not encoder.trainable
    with pytest.raises(InvalidArgumentError, match="takes a features model"):
        get_entry("unet").builder(
            x, include_top=False, num_classes=2, classifier_activation=None, encoder="simple_cnn"
        )


@pytest.mark.parametrize("arch", ["inception_v3", "resnet50", "densenet121", "vgg16"])
def test_include_top_is_keras_applications_own_classifier(arch):
    """include_top=True, no weights: the parameter count of keras.applications with weights=None."""
    app = {
        "inception_v3": "InceptionV3",
        "resnet50": "ResNet50",
        "densenet121": "DenseNet121",
        "vgg16": "VGG16",
    }[arch]
    size = get_entry(arch).min_size
    ours = zoo.load(arch, include_top=True, input_shape=(size, size))
    theirs = getattr(keras.applications, app)(
        weights=None, include_top=True, input_shape=(size, size, 3)
    )
    assert ours.count_params() == theirs.count_params() and ours.output.shape == (None, 1000)
    assert [w.shape for w in ours.weights] == [w.shape for w in theirs.weights]


def test_include_top_errors_name_the_fix():
    with pytest.raises(InvalidArgumentError, match="features"):
        zoo.load("simple_cnn", include_top=True, features=True)
    with pytest.raises(InvalidArgumentError, match="own classifier of 2 classes"):
        zoo.load("simple_cnn.phantom", include_top=True, num_classes=3)
    with pytest.raises(InvalidArgumentError, match="no classifier top"):
        zoo.load("simple_cnn.ssl_simclr", include_top=True)
    assert zoo.load("simple_cnn.phantom", include_top=True).output.shape == (None, 2)


def test_weights_origin_survives_keras_files_and_new_heads(tmp_path):
    model = zoo.load("simple_cnn.phantom")
    card = zoo.get_card("simple_cnn.phantom")
    expected = {"card": card.name, "sha256": card.sha256}
    assert zoo.weights_origin(model) == expected and model.zoo_weights == card.name
    model.save(tmp_path / "m.keras")
    assert zoo.weights_origin(zoo.load_model(tmp_path / "m.keras")) == expected
    head = keras.layers.Dense(3, name="new_head")(model.get_layer("head_pool").output)
    assert zoo.weights_origin(keras.Model(model.inputs, head)) == expected
    assert zoo.weights_origin(zoo.load("simple_cnn.phantom", num_classes=4)) == expected
    assert zoo.weights_origin(zoo.load("simple_cnn", in_chans=1, input_shape=(32, 32))) is None


def test_weights_origin_of_a_file_is_its_path_and_sha256(tmp_path):
    path = tmp_path / "backbone.weights.h5"
    zoo.load("simple_cnn", in_chans=1, input_shape=(32, 32), num_classes=0).save_weights(path)
    model = zoo.load("simple_cnn", str(path), in_chans=1, input_shape=(32, 32), num_classes=0)
    assert zoo.weights_origin(model) == {
        "file": str(path),
        "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest(),
    }


def test_mil_head_has_its_own_pooling_argument_and_honours_the_activation():
    args = dict(in_chans=1, input_shape=(32, 32), head="mil", num_classes=2)
    logits = zoo.load("simple_cnn", **args)
    assert logits.name.endswith("_mil_lse")  # one default MIL pooling, build_mil_head's
    probs = zoo.load("simple_cnn", **args, classifier_activation="sigmoid")
    probs.set_weights(logits.get_weights())
    x = RNG.uniform(0, 255, (2, 32, 32, 1)).astype("float32")
    np.testing.assert_allclose(
        probs(x)["bag"], keras.ops.sigmoid(logits(x)["bag"]), rtol=1e-5, atol=1e-6
    )
    assert zoo.load("simple_cnn", **args, mil_pooling="max").name.endswith("_mil_max")
    with pytest.raises(InvalidArgumentError, match="mil_pooling='wildcat'"):
        zoo.load("simple_cnn", **args, pooling="wildcat")
