"""Class activation maps (Zhou et al. 2016), upsampled to the input.

For a MIL head the map is its ``instance_maps`` output. For a classifier ending in global
average pooling and a Dense layer, CAM_c = sum_k w_kc A_k, so that the spatial mean of the
CAM plus the bias is exactly the class logit.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from zoo.errors import InvalidArgumentError
from zoo.explain.targets import output_names, pick_class

PASS_THROUGH = (keras.layers.Dropout, keras.layers.Identity, keras.layers.Activation)


def upsample(maps, size, method: str = "bilinear") -> np.ndarray:
    """(B, h, w) or (B, h, w, C) maps resized to ``size`` (H, W), same rank back."""
    maps = np.asarray(maps, np.float32)
    if maps.ndim not in (3, 4):
        raise InvalidArgumentError(f"upsample: maps of shape {maps.shape}; give (B, h, w) or (B, h, w, C).")
    x = maps[..., None] if maps.ndim == 3 else maps
    out = ops.convert_to_numpy(ops.image.resize(x, tuple(size), interpolation=method))
    return out[..., 0] if maps.ndim == 3 else out


def gap_classifier(model):
    """(feature map tensor, Dense layer) of a conv -> GlobalAveragePooling2D -> Dense classifier."""
    for layer in reversed(model.layers):
        if not isinstance(layer, keras.layers.Dense):
            continue
        source = layer.input._keras_history.operation
        while isinstance(source, PASS_THROUGH):
            source = source.input._keras_history.operation
        if isinstance(source, keras.layers.GlobalAveragePooling2D) and not source.keepdims:
            return source.input, layer
    raise InvalidArgumentError(
        f"model {model.name!r} has neither an 'instance_maps' output (a zoo MIL head) nor a global-average-"
        "pooling + Dense classifier, so it has no class activation map. Use zoo.explain.gradcam.grad_cam, "
        "which works for any convolutional model."
    )


def class_activation_maps(model, images, class_index=None, upsample_to_input: bool = True):
    """(B, H, W) CAMs for ``class_index`` (default: each image's top class)."""
    images = np.asarray(images, np.float32)
    if "instance_maps" in output_names(model):
        out = model.predict(images, verbose=0)
        maps, scores = np.asarray(out["instance_maps"]), np.asarray(out["bag"])
    else:
        features, dense = gap_classifier(model)
        a, scores = keras.Model(model.inputs, [features, dense.output]).predict(images, verbose=0)
        maps = np.einsum("bhwk,kc->bhwc", a, ops.convert_to_numpy(dense.kernel))
    _, index = pick_class(scores, class_index)
    cam = np.take_along_axis(maps, index.reshape(-1, 1, 1, 1), axis=-1)[..., 0]
    return upsample(cam, images.shape[1:3]) if upsample_to_input else cam
