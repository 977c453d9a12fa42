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
            raise InvalidArgumentError(f"model {model.name!r} has outputs {names}; pass output=<one of them>.")
    if output not in names:
        raise InvalidArgumentError(
            f"output={output!r}: model {model.name!r} has outputs {names}.{did_you_mean(str(output), names)}")
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
    if logits and isinstance(layer, keras.layers.Dense) and layer.activation is not keras.activations.linear:
        return layer.input, lambda v: ops.matmul(v, layer.kernel) + (layer.bias if layer.use_bias else 0.0)
    return tensor, lambda v: v


def pick_class(scores, class_index=None):
    """(selected scores (B,), class indices (B,)) from (B,) or (B, C) scores; default the top class."""
    scores = ops.reshape(scores, (ops.shape(scores)[0], -1))
    num = scores.shape[-1]
    if class_index is None:
        index = np.argmax(ops.convert_to_numpy(scores), axis=-1)
    else:
        index = np.broadcast_to(np.asarray(class_index), (ops.shape(scores)[0],))
        if index.min() < 0 or index.max() >= num:
            raise InvalidArgumentError(f"class_index={class_index!r}: the output has {num} classes (0..{num - 1}).")
    chosen = ops.take_along_axis(scores, ops.convert_to_tensor(index.reshape(-1, 1).astype("int32")), axis=1)
    return ops.squeeze(chosen, -1), index


def is_volume_model(model) -> bool:
    """A model of volumes (B, D, H, W, C), not of bags of tiles: a tiled bag model also takes
    rank-5 input, (B, N, H, W, C), and folds its tiles into the batch (FoldTiles) or maps a 2D
    encoder over them (TimeDistributed)."""
    bag = ("FoldTiles", "TimeDistributed")
    return len(model.inputs) == 1 and len(model.inputs[0].shape) == 5 and not any(
        type(layer).__name__ in bag for layer in model.layers)


def check_images(model, images, method: str = "explain", spatial: bool = True) -> np.ndarray:
    """``images`` as float32 after checking them against the model's one input, else a ZooError.

    A batch is (B, H, W, C) for a 2D model and (B, D, H, W, C) for a 3D one, with the model's
    channel count and, where the model fixes them, its spatial sizes. ``spatial=False`` (the
    gradient methods) also accepts a model of any other input rank, such as vectors (B, F).
    """
    from zoo.errors import InputShapeError

    if len(model.inputs) != 1:
        raise InvalidArgumentError(
            f"{method}: model {model.name!r} has {len(model.inputs)} inputs; the explanation methods explain a "
            "model of one image or volume input. Explain the encoder that takes one input instead.")
    expected = tuple(model.inputs[0].shape)
    rank = len(expected)
    kind = {4: "2D images (B, H, W, C)", 5: "3D volumes (B, D, H, W, C)"}.get(rank)
    if rank == 5 and spatial and not is_volume_model(model):
        raise InvalidArgumentError(
            f"{method}: model {model.name!r} takes {expected}: a bag of 2D tiles, not a "
            "volume. Read its 'attention' / 'instance_maps' outputs, or explain its tile encoder.")
    if kind is None and not spatial:
        kind = "inputs " + str(("B", *expected[1:]))
    elif kind is None:
        raise InvalidArgumentError(
            f"{method}: model {model.name!r} takes inputs of shape {expected}; the explanation methods explain "
            "2D images (B, H, W, C) or 3D volumes (B, D, H, W, C).")
    try:
        x = np.asarray(images, np.float32)
    except (TypeError, ValueError) as e:
        raise InputShapeError(f"{method}: images could not be read as a float array ({e}); give a numpy "
                              f"array of shape {expected}.") from None
    if x.ndim != rank:
        if rank == 4 and x.ndim == 5:
            fix = ("a batch of 3D volumes was given to a 2D model; explain one slice at a time "
                   "(volume[:, d]) or use a 3D model such as zoo.load('simple_cnn3d') or 'resnet50_3d'")
        elif rank == 5 and x.ndim == 4:
            fix = ("a batch of 2D images was given to a 3D model; give volumes (B, D, H, W, C), or add a "
                   "batch axis (volume[None]) to a single volume")
        elif x.ndim == rank - 1:
            fix = "add a batch axis: images[None]"
        else:
            fix = f"give {kind}"
        raise InputShapeError(f"{method}: images of shape {x.shape} for model {model.name!r}, which takes "
                              f"{kind} of shape {expected}: {fix}.")
    if len(x) == 0:
        raise InputShapeError(f"{method}: an empty batch {x.shape}; give at least one image.")
    wrong = [i for i in range(1, rank) if expected[i] is not None and expected[i] != x.shape[i]]
    if wrong:
        fix = ("convert the channels (grey: repeat to 3 or average to 1)" if wrong == [rank - 1]
               else "resize them to the model's input size, or load the model with input_shape=...")
        raise InputShapeError(f"{method}: images of shape {x.shape} do not fit model {model.name!r}, which "
                              f"takes {expected} (axes {wrong} differ); {fix}.")
    if not np.isfinite(x).all():
        raise InputShapeError(f"{method}: the images hold NaN or infinite values; clean the input first.")
    return x
