"""What an explanation differentiates: one class score of one model output, before its activation.

Shared by Grad-CAM and saliency. A zoo classifier ends in a Dense layer with softmax, a MIL
head in an ``Activation`` named "bag"; with ``logits=True`` the score is taken before that
non-linearity (Selvaraju et al. use the pre-softmax score), recomputed from the layer's input.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from zoo._keras_compat import producing_layer
from zoo.errors import InvalidArgumentError, did_you_mean


def output_names(model) -> list[str]:
    return list(model.output_names)


def select_output(model, output=None):
    """The output tensor named ``output``; default "bag" for MIL heads, else the only output."""
    names = output_names(model)
    if output is None:
        if "bag" in names:
            output = "bag"
        elif len(names) == 1:
            output = names[0]
        else:
            raise InvalidArgumentError(
                f"model {model.name!r} has outputs {names}; pass output=<one of them>."
            )
    if output not in names:
        raise InvalidArgumentError(
            f"output={output!r}: model {model.name!r} has outputs "
            f"{names}.{did_you_mean(str(output), names)}"
        )
    return model.outputs[names.index(output)]


def score_head(model, output=None, logits=True):
    """(tensor, head): ``head(tensor_value)`` gives the class scores of the chosen output.

    With ``logits`` and an output made by a Dense layer with an activation, ``tensor`` is the
    Dense input and ``head`` re-applies its kernel and bias without the activation; after an
    ``Activation`` layer, ``tensor`` is that layer's input. Otherwise the output itself.
    """
    tensor = select_output(model, output)
    layer = producing_layer(tensor)
    if logits and isinstance(layer, keras.layers.Activation):
        return layer.input, lambda v: v
    if (
        logits
        and isinstance(layer, keras.layers.Dense)
        and layer.activation is not keras.activations.linear
    ):
        return (
            layer.input,
            lambda v: ops.matmul(v, layer.kernel) + (layer.bias if layer.use_bias else 0.0),
        )
    return tensor, lambda v: v


def pick_class(scores, class_index=None):
    """(scores (B,), class indices (B,)) from (B,) or (B, C) scores; default the top class."""
    scores = ops.reshape(scores, (ops.shape(scores)[0], -1))
    num = scores.shape[-1]
    if class_index is None:
        index = np.argmax(ops.convert_to_numpy(scores), axis=-1)
    else:
        index = np.broadcast_to(np.asarray(class_index), (ops.shape(scores)[0],))
        if index.min() < 0 or index.max() >= num:
            raise InvalidArgumentError(
                f"class_index={class_index!r}: the output has {num} classes (0..{num - 1})."
            )
    chosen = ops.take_along_axis(
        scores, ops.convert_to_tensor(index.reshape(-1, 1).astype("int32")), axis=1
    )
    return ops.squeeze(chosen, -1), index
