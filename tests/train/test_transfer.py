"""Freezing: a training step changes exactly the unfrozen weights; frozen BatchNorm keeps its statistics."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import zoo
from zoo.errors import InvalidArgumentError
from zoo.train.engine import Engine, GradualUnfreezing
from zoo.train.tasks import Classification
from zoo.train.transfer import freeze, layer_index, trainable_summary, unfreeze


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return rng.uniform(0, 255, (8, 32, 32, 1)).astype("float32"), rng.integers(0, 2, 8)


def _snapshot(model):
    return {v.path: v.numpy().copy() for v in model.weights}


def test_step_changes_exactly_the_unfrozen_weights(data):
    model = zoo.load("resnet50", input_shape=(32, 32), in_chans=1, num_classes=2)
    freeze(model, upto="conv4")
    first = layer_index(model, "conv5_block1_1_conv")
    assert trainable_summary(model)["first_trainable"] == "conv5_block1_1_conv"
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    before = _snapshot(model)
    model.fit(*data, batch_size=8, epochs=1, verbose=0)
    after = _snapshot(model)
    for i, layer in enumerate(model.layers):
        for v in layer.weights:
            changed = not np.array_equal(before[v.path], after[v.path])
            if i < first or not layer.trainable:
                assert not changed, f"frozen {v.path} changed"
            elif v.trainable:
                assert changed, f"trainable {v.path} did not change"
    bn = model.get_layer("conv5_block1_1_bn")  # trainable BN updates its moving statistics
    assert not np.array_equal(before[bn.moving_mean.path], after[bn.moving_mean.path])


def test_freeze_defaults_to_backbone_and_unfreeze_from_block(data):
    model = zoo.load("vgg16", input_shape=(32, 32), in_chans=1, num_classes=3)
    freeze(model)
    summary = trainable_summary(model)
    assert summary["first_trainable"] == "head_fc" and summary["trainable_params"] == 512 * 3 + 3
    unfreeze(model, "block5")
    assert not model.get_layer("block5_conv3").trainable  # 'block5' ends at block5_pool
    unfreeze(model, "block5_conv1")
    assert model.get_layer("block5_conv3").trainable and not model.get_layer("block4_conv3").trainable
    bn_model = zoo.load("resnet50", input_shape=(32, 32), num_classes=2)
    freeze(bn_model)
    unfreeze(bn_model, "conv5")
    unfreeze(bn_model, "conv5_block3_1_conv")
    assert bn_model.get_layer("conv5_block3_1_conv").trainable and not bn_model.get_layer("conv5_block3_1_bn").trainable
    unfreeze(bn_model, "conv5_block3_1_conv", batchnorm=True)
    assert bn_model.get_layer("conv5_block3_1_bn").trainable


def test_gradual_unfreezing_trains_newly_unfrozen_layers(data):
    """The engine hook: at epoch 1 block 5 becomes trainable, with a rebuilt optimizer at 0.1x the rate."""
    import tensorflow as tf

    model = zoo.load("vgg16", input_shape=(32, 32), in_chans=1, num_classes=2)
    freeze(model)
    before = model.get_layer("block5_conv3").get_weights()[0].copy()
    engine = Engine(Classification(model), keras.optimizers.Adam(1e-3),
                    hooks=[GradualUnfreezing({1: "block5_conv1"}, lr_factor=0.1)])
    engine.fit(tf.data.Dataset.from_tensor_slices(data).batch(8), epochs=2)
    assert not np.array_equal(before, model.get_layer("block5_conv3").get_weights()[0])
    assert np.isclose(float(engine.optimizers["main"].learning_rate), 1e-4)


def test_bad_layer_names_suggest():
    model = zoo.load("vgg16", input_shape=(32, 32), num_classes=2)
    with pytest.raises(InvalidArgumentError, match="block5_conv1"):
        freeze(model, "block5_conv")
    with pytest.raises(InvalidArgumentError, match="outside"):
        freeze(model, 999)


def test_freeze_follows_the_graph_so_auxiliary_heads_below_the_cut_freeze_too():
    """Only what depends on the cut stays trainable; GoogLeNet's aux heads read inception4a/4d,
    below a cut at inception5a, so they freeze too (by layer position they stayed trainable)."""
    keras.utils.set_random_seed(0)
    model = zoo.load("googlenet", input_shape=(32, 32), in_chans=1, num_classes=2, aux_logits=True)
    freeze(model, upto="inception5a")
    trainable = {w.path.split("/")[0] for w in model.trainable_weights}
    above = {layer.name for layer in model.layers
             if layer.weights and layer.name.startswith(("inception5b_", "head_"))}
    assert trainable == above and not any(n.startswith("aux") for n in trainable)

    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    before = {layer.name: layer.moving_mean.numpy().copy() for layer in bns}
    model(np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 1)).astype("float32"), training=True)
    moved = {la.name for la in bns if not np.array_equal(before[la.name], la.moving_mean.numpy())}
    assert moved == {n for n in before if n.startswith("inception5b_")}  # frozen BN: inference mode

    unfreeze(model, "inception4e")  # the concat of block 4e: aux2 reads 4d, below it
    trainable = {w.path.split("/")[0] for w in model.trainable_weights}
    assert "inception5a_branch1_conv" in trainable and "inception5a_branch1_bn" not in trainable
    assert not any(n.startswith(("aux", "inception4")) for n in trainable), trainable


def test_freeze_a_sequential_model_by_its_chain():
    """A Sequential model has no call graph to walk: each layer feeds the next in the list."""
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="a"),
                              keras.layers.BatchNormalization(name="bn"),
                              keras.layers.Dense(2, name="head_fc")])
    assert [layer.trainable for layer in freeze(model).layers] == [False, False, True]
    assert [layer.trainable for layer in freeze(model, "a").layers] == [False, True, True]
    assert [layer.trainable for layer in unfreeze(freeze(model), "a").layers] == [True, False, True]
