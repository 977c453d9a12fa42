"""Freeze and unfreeze parts of a model for fine-tuning.

Which layers a cut freezes follows the model's call graph, not the order of ``model.layers``:
a layer stays trainable only if its output depends on the cut's output. So everything the cut
depends on is frozen, and so are side branches that leave the network below the cut and never
come back (GoogLeNet's auxiliary heads), wherever Keras happens to list them.

In Keras 3 a BatchNormalization layer with ``trainable = False`` also runs in inference
mode (it uses and keeps its moving statistics), which is what fine-tuning a pretrained
backbone on a small dataset needs; the tests check it.
"""

from __future__ import annotations

import keras

from zoo._keras_compat import has_call_graph, nodes_by_depth, producing_layer
from zoo.errors import InvalidArgumentError, did_you_mean

HEAD_PREFIX = "head_"


def layer_index(model, where) -> int:
    """Index in ``model.layers`` of a layer given by index, exact name or block prefix.

    A block prefix ("conv4", "mixed7", "block3") means the block's last layer.
    """
    layers = model.layers
    if isinstance(where, int) and not isinstance(where, bool):
        if not -len(layers) <= where < len(layers):
            raise InvalidArgumentError(
                f"layer index {where} is outside 0..{len(layers) - 1} of model {model.name!r}."
            )
        return where % len(layers)
    if isinstance(where, str):
        names = [layer.name for layer in layers]
        if where in names:
            return names.index(where)
        block = [i for i, n in enumerate(names) if n.startswith(where + "_")]
        if block:
            return block[-1]
        raise InvalidArgumentError(
            f"no layer or block named {where!r} in model "
            f"{model.name!r}.{did_you_mean(where, names)} List the names with [l.name for l in "
            "model.layers]."
        )
    raise InvalidArgumentError(f"{where!r}: give a layer index, a layer name or a block prefix.")


def _downstream(model, starts) -> set[int]:
    """``id()`` of every layer of ``model`` whose output depends on one of ``starts`` (included).

    Walks the top-level call graph (a nested model is one layer) from each start to the layers
    called on its outputs; a Sequential or subclassed model has no graph to walk, so there each
    layer feeds the next one in ``model.layers`` (exact for Sequential).
    """
    if has_call_graph(model):
        consumers: dict[int, list] = {}
        for node in nodes_by_depth(model):
            for tensor in node.inputs:
                consumers.setdefault(id(producing_layer(tensor)), []).append(node.operation)
    else:
        consumers = {id(a): [b] for a, b in zip(model.layers, model.layers[1:])}
    seen: set[int] = set()
    todo = list(starts)
    while todo:
        layer = todo.pop()
        if id(layer) not in seen:
            seen.add(id(layer))
            todo.extend(consumers.get(id(layer), ()))
    return seen


def freeze(model, upto=None):
    """Freeze ``upto`` (index, name or block) and every layer whose output does not depend on it.

    Default: everything but the ``head_*`` layers and what is computed from them. The layers the
    cut depends on are frozen, and so are branches off the network below the cut (auxiliary
    heads), whatever their position in ``model.layers``.
    """
    if upto is None:
        heads = [layer for layer in model.layers if layer.name.startswith(HEAD_PREFIX)]
        keep = _downstream(model, heads)
    else:
        cut = model.layers[layer_index(model, upto)]
        keep = _downstream(model, [cut]) - {id(cut)}
    for layer in model.layers:
        layer.trainable = id(layer) in keep
    return model


def unfreeze(model, start=None, batchnorm: bool = False):
    """Make ``start`` (index, name or block; default: all) and what is computed from it trainable.

    BatchNormalization layers stay frozen (inference mode, fixed statistics) unless
    ``batchnorm=True``: re-estimating statistics from the small batches of a small dataset
    is what usually ruins a fine-tuned model (the Keras transfer-learning guide's advice).
    """
    if start is None:
        layers = model.layers
    else:
        keep = _downstream(model, [model.layers[layer_index(model, start)]])
        layers = [layer for layer in model.layers if id(layer) in keep]
    for layer in layers:
        if batchnorm or not isinstance(layer, keras.layers.BatchNormalization):
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
