"""Feature caching: with the backbone frozen, compute its features once and train the head on them.

The model is cut in two at the start of its *head*: the longest chain of single-input layers
ending at the output that holds no frozen weights, moved forward past every weightless
deterministic layer (activations, pooling, global pooling, flatten) so the cache holds small
pooled vectors. The head starts at the first layer with weights or randomness (a dropout
layer, which owns a SeedGenerator), and reuses the model's own layer objects, so training it
trains the model.

Same result rule: the frozen backbone runs in inference mode both ways (frozen BatchNorm
does so in Keras 3), so the cached and the uncached stage 1 reach the same head weights for
the same seed and data order -- provided the inputs are not randomly augmented (a cache
holds one view of each image; stage 1 with a cache trains without augmentation) and the
frozen part holds no dropout.
"""

from __future__ import annotations

import numpy as np

from zoo._keras_compat import layer_inputs, producing_layer
from zoo.errors import InvalidArgumentError


def _fixed(layer) -> bool:
    """A layer without weights and without a random seed: its output can be cached."""
    import keras

    return not layer.weights and not any(
        isinstance(v, keras.random.SeedGenerator) for v in vars(layer).values()
    )


def _single_input_layer(tensor):
    """The layer that produced ``tensor`` and its one input tensor (None when it has several)."""
    inputs = layer_inputs(tensor)
    return producing_layer(tensor), (inputs[0] if len(inputs) == 1 else None)


def split_head(model):
    """(backbone, head): backbone maps the model input to the cached features, head maps them to the
    output.

    Raises InvalidArgumentError when nothing is frozen, when the model has several outputs,
    or when a trainable weight lies before the head (then there is nothing fixed to cache).
    """
    import keras

    if len(model.outputs) != 1:
        raise InvalidArgumentError(
            f"feature caching needs a one-output model; {model.name!r} has {len(model.outputs)}."
        )
    chain, tensor = [], model.outputs[0]
    while True:
        layer, parent = _single_input_layer(tensor)
        if (
            parent is None
            or isinstance(layer, keras.layers.InputLayer)
            or layer.non_trainable_weights
            or not layer.trainable
            and layer.weights
        ):
            break
        chain.append(layer)
        tensor = parent
    chain.reverse()
    while chain and _fixed(chain[0]):
        tensor = chain.pop(0).output
    if not chain:
        raise InvalidArgumentError(
            f"model {model.name!r} has no trainable head after a frozen backbone; freeze the "
            "backbone first (zoo.train.transfer.freeze) or train without a feature cache."
        )
    backbone = keras.Model(model.inputs, tensor, name=f"{model.name}_cached_part")
    if backbone.trainable_weights:
        first = next(
            layer.name for layer in backbone.layers if layer.trainable and layer.trainable_weights
        )
        raise InvalidArgumentError(
            f"layer {first!r} of {model.name!r} is trainable but lies before the head; a feature "
            "cache would hold it fixed. Freeze the backbone (zoo.train.transfer.freeze) or pass "
            "cache_features=False."
        )
    features = keras.Input(shape=tuple(tensor.shape[1:]), dtype="float32", name="features")
    x = features
    for layer in chain:
        x = layer(x)
    return backbone, keras.Model(features, x, name=f"{model.name}_head")


def compute_features(backbone, x: np.ndarray, batch_size: int = 64, strategy=None) -> np.ndarray:
    """The backbone's inference-mode output for every input, as one float32 array."""
    import tensorflow as tf

    fn = tf.function(
        lambda batch: tf.cast(backbone(batch, training=False), tf.float32), reduce_retracing=True
    )
    scope = strategy.scope() if strategy is not None else tf.distribute.get_strategy().scope()
    with scope:
        parts = [fn(tf.constant(x[i:i + batch_size])).numpy() for i in range(0, len(x), batch_size)]
    return np.concatenate(parts, axis=0)
