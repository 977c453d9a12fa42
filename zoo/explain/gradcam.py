"""Grad-CAM (Selvaraju et al. 2017) for any zoo model, 2D or 3D, and a helper naming valid layers.

alpha_k = mean over space of d score / d A_k; map = relu(sum_k alpha_k A_k). On a
conv -> GAP -> Dense model this is relu(CAM) / (H W). On a volume the mean runs over
depth too: for an inflated model (zoo.models.inflate3d) and a depth-constant volume, each
slice of the 3D map is the 2D map of the slice divided by the layer's depth.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from zoo.errors import InvalidArgumentError, did_you_mean
from zoo.explain.cam import upsample_to
from zoo.explain.inputs import check_images, is_volume_model
from zoo.explain.targets import pick_class, score_head


def _spatial_rank(model) -> int:
    """4 for a model of images (B, H, W, C), 5 for volumes (B, D, H, W, C); else the input rank."""
    return len(model.inputs[0].shape) if len(model.inputs) == 1 else 4


def _map_shape(model) -> str:
    return "(B, D, H, W, C)" if _spatial_rank(model) == 5 else "(B, H, W, C)"


def conv_layers(model) -> list[str]:
    """Names of the layers giving a spatial map of the input's rank ((B, H, W, C), or
    (B, D, H, W, C) for a volume model), in graph order (the input excluded)."""
    rank = _spatial_rank(model)
    names = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        try:
            shape = layer.output.shape
        except (AttributeError, ValueError):  # a layer used at several places has no single output
            continue
        if len(shape) == rank:
            names.append(layer.name)
    return names


MIN_CELLS = 7  # Grad-CAM's usual map: 7 x 7, the last conv block of a ResNet or VGG at 224 px


def default_layer(model) -> str:
    """The deepest spatial layer whose map has at least MIN_CELLS positions a side (else the
    finest map there is).

    Not simply the last spatial layer: on a small input that map is a few cells (2 x 2 for
    simple_cnn at 64 px, each cell a quarter of the image), too coarse to point at a lesion.
    At 224 px a ResNet or VGG keeps its usual last block (7 x 7 / 14 x 14).
    """
    valid = conv_layers(model)
    sizes = {}
    for name in valid:  # an open (None) size comes from an open input: count it as fine enough
        spatial = model.get_layer(name).output.shape[1:-1]
        sizes[name] = min(MIN_CELLS if d is None else d for d in spatial)
    fine = [name for name in valid if sizes[name] >= MIN_CELLS]
    return fine[-1] if fine else max(valid, key=lambda n: sizes[n])


def find_conv_layer(model, layer_name: str | None = None):
    """The layer ``layer_name`` (default: ``default_layer``), or a ZooError listing valid names."""
    valid = conv_layers(model)
    if not valid:
        raise InvalidArgumentError(
            f"model {model.name!r} has no layer with a {_map_shape(model)} output; Grad-CAM needs "
            "a convolutional model. Use method='saliency' or 'occlusion', which explain any model.")
    if layer_name is None:
        return model.get_layer(default_layer(model))
    if layer_name not in valid:
        known = layer_name in [la.name for la in model.layers]
        what = f"is not a spatial {_map_shape(model)} layer of" if known else "is not in"
        tail = ", ".join(valid[-8:])
        raise InvalidArgumentError(
            f"layer_name={layer_name!r} {what} model "
            f"{model.name!r}.{did_you_mean(layer_name, valid)} Valid layers ({len(valid)}; "
            f"zoo.explain.gradcam.conv_layers(model) lists all) end with: {tail}."
        )
    return model.get_layer(layer_name)


def grad_cam(model, images, layer_name=None, class_index=None, output=None, logits=True, relu=True,
             upsample_to_input=True) -> np.ndarray:
    """(B, H, W) Grad-CAM maps of ``class_index`` (default: each image's top class).

    output: which output to explain (default "bag" for MIL heads, else the only one).
    logits: differentiate the score before the output's softmax / sigmoid.
    relu / upsample_to_input: switch off for the exact map at the layer's resolution.
    """
    rank = len(model.inputs[0].shape) if len(model.inputs) == 1 else 0
    if rank not in (4, 5) or (rank == 5 and not is_volume_model(model)):
        raise InvalidArgumentError(
            f"model {model.name!r} takes {[tuple(i.shape) for i in model.inputs]}; Grad-CAM "
            "explains a model of one image input (B, H, W, C) or volume input (B, D, H, W, C). "
            "For a tiled bag model read its 'attention' / 'instance_maps' outputs, or run "
            "grad_cam on its tile encoder."
        )
    x = tf.convert_to_tensor(check_images(model, images, "grad_cam"))
    layer = find_conv_layer(model, layer_name)
    tensor, head = score_head(model, output, logits)
    graph = keras.Model(model.inputs, [layer.output, tensor])
    with tf.GradientTape() as tape:
        maps, values = graph([x], training=False)  # a list: the input structure, no warning
        score, _ = pick_class(head(values), class_index)
        total = tf.reduce_sum(score)
    grads = tape.gradient(total, maps)
    alpha = tf.reduce_mean(grads, axis=tuple(range(1, len(maps.shape) - 1)), keepdims=True)
    cam = tf.reduce_sum(alpha * maps, axis=-1)
    if relu:
        cam = tf.nn.relu(cam)
    cam = cam.numpy()
    return upsample_to(cam, x.shape[1:-1]) if upsample_to_input else cam
