"""Freeze and unfreeze parts of a model for fine-tuning.

In Keras 3 a BatchNormalization layer with ``trainable = False`` also runs in inference
mode (it uses and keeps its moving statistics), which is what fine-tuning a pretrained
backbone on a small dataset needs; the tests check it.
"""

from __future__ import annotations

import keras

from zoo.errors import InvalidArgumentError, did_you_mean

HEAD_PREFIX = "head_"


def layer_index(model, where) -> int:
    """Index in ``model.layers`` of a layer given by index, exact name or block prefix.

    A block prefix ("conv4", "mixed7", "block3") means the block's last layer.
    """
    layers = model.layers
    if isinstance(where, int) and not isinstance(where, bool):
        if not -len(layers) <= where < len(layers):
            raise InvalidArgumentError(f"layer index {where} is outside 0..{len(layers) - 1} of model {model.name!r}.")
        return where % len(layers)
    if isinstance(where, str):
        names = [layer.name for layer in layers]
        if where in names:
            return names.index(where)
        block = [i for i, n in enumerate(names) if n.startswith(where + "_")]
        if block:
            return block[-1]
        raise InvalidArgumentError(
            f"no layer or block named {where!r} in model {model.name!r}.{did_you_mean(where, names)} "
            "List the names with [l.name for l in model.layers]."
        )
    raise InvalidArgumentError(f"{where!r}: give a layer index, a layer name or a block prefix.")


def _backbone_end(model) -> int:
    heads = [i for i, layer in enumerate(model.layers) if layer.name.startswith(HEAD_PREFIX)]
    return (heads[0] if heads else len(model.layers)) - 1


def freeze(model, upto=None):
    """Freeze every layer up to and including ``upto`` (default: the whole backbone, not ``head_*``)."""
    end = _backbone_end(model) if upto is None else layer_index(model, upto)
    for i, layer in enumerate(model.layers):
        layer.trainable = i > end
    return model


def unfreeze(model, start=None, batchnorm: bool = False):
    """Make layers from ``start`` (index, name or block; default the first) on trainable.

    BatchNormalization layers stay frozen (inference mode, fixed statistics) unless
    ``batchnorm=True``: re-estimating statistics from the small batches of a small dataset
    is what usually ruins a fine-tuned model (the Keras transfer-learning guide's advice).
    """
    begin = 0 if start is None else layer_index(model, start)
    for i, layer in enumerate(model.layers):
        if i >= begin and (batchnorm or not isinstance(layer, keras.layers.BatchNormalization)):
            layer.trainable = True
    return model


def trainable_summary(model) -> dict:
    """Counts of trainable and frozen parameters and layers, and the first trainable layer."""
    count = lambda ws: int(sum(int(w.numpy().size) for w in ws))  # noqa: E731
    trainable = [layer for layer in model.layers if layer.trainable and layer.weights]
    frozen = [layer for layer in model.layers if not layer.trainable and layer.weights]
    return {
        "trainable_params": count(model.trainable_weights),
        "frozen_params": count(model.non_trainable_weights),
        "trainable_layers": len(trainable),
        "frozen_layers": len(frozen),
        "first_trainable": trainable[0].name if trainable else None,
    }
