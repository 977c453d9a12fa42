"""Class activation maps (Zhou et al. 2016), upsampled to the input.

For a MIL head the map is its ``instance_maps`` output. For a classifier ending in global
average pooling and a Dense layer, CAM_c = sum_k w_kc A_k, so that the spatial mean of the
CAM plus the bias is exactly the class logit.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from zoo._keras_compat import producing_layer
from zoo.errors import InvalidArgumentError
from zoo.explain.targets import output_names, pick_class

PASS_THROUGH = (keras.layers.Dropout, keras.layers.Identity, keras.layers.Activation)


def _mirror_coords(n_out: int, n_in: int):
    """Source index pairs and weights of half-pixel bilinear sampling, mirrored at the border."""
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * n_in / n_out - 0.5
    if n_in > 1:
        src = np.where(src < 0, -src, src)
        src = np.where(src > n_in - 1, 2 * (n_in - 1) - src, src)
    else:
        src = np.zeros_like(src)
    i0 = np.floor(src).astype(int)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (src - i0).astype(np.float32)


def upsample(maps, size, method: str = "bilinear") -> np.ndarray:
    """(B, h, w) or (B, h, w, C) maps resized to ``size`` (H, W), same rank back.

    "bilinear" samples at half-pixel centres (cell i of a stride-s map is centred on input
    pixel s i + (s - 1) / 2, as for a 'same' conv or a 2x2 pool) and mirrors at the border
    cells instead of clamping. Clamping makes each border cell a flat plateau reaching the
    image corner, so the map's argmax (the pointing game's peak) fell in the corner, off the
    cell it belongs to; mirrored, a peak stays at its cell's centre. "nearest" repeats cells.
    """
    maps = np.asarray(maps, np.float32)
    if maps.ndim not in (3, 4):
        raise InvalidArgumentError(
            f"upsample: maps of shape {maps.shape}; give (B, h, w) or (B, h, w, C)."
        )
    if method not in ("bilinear", "nearest"):
        raise InvalidArgumentError(f"upsample: method={method!r}; use 'bilinear' or 'nearest'.")
    x = maps[..., None] if maps.ndim == 3 else maps
    (h, w), (out_h, out_w) = x.shape[1:3], tuple(int(s) for s in size)
    if method == "nearest":
        rows = np.minimum((np.arange(out_h) * h) // out_h, h - 1)
        cols = np.minimum((np.arange(out_w) * w) // out_w, w - 1)
        out = x[:, rows][:, :, cols]
    else:
        r0, r1, fr = _mirror_coords(out_h, h)
        c0, c1, fc = _mirror_coords(out_w, w)
        rows = x[:, r0] * (1 - fr)[None, :, None, None] + x[:, r1] * fr[None, :, None, None]
        out = (
            rows[:, :, c0] * (1 - fc)[None, None, :, None]
            + rows[:, :, c1] * fc[None, None, :, None]
        )
    return out[..., 0] if maps.ndim == 3 else out


def upsample_volume(maps, size) -> np.ndarray:
    """(B, d, h, w) maps resized to ``size`` (D, H, W): ``upsample``'s mirrored half-pixel linear
    sampling along each axis in turn (trilinear), so a map constant along depth stays constant."""
    maps = np.asarray(maps, np.float32)
    if maps.ndim != 4:
        raise InvalidArgumentError(
            f"upsample_volume: maps of shape {maps.shape}; give (B, d, h, w).")
    out = maps
    for axis, n_out in enumerate((int(s) for s in size), start=1):
        i0, i1, f = _mirror_coords(n_out, out.shape[axis])
        shape = [1] * out.ndim
        shape[axis] = n_out
        f = f.reshape(shape)
        out = np.take(out, i0, axis=axis) * (1 - f) + np.take(out, i1, axis=axis) * f
    return out


def upsample_to(maps, size) -> np.ndarray:
    """(B, *spatial) maps of a 2D or 3D layer resized to the input's spatial ``size``."""
    return upsample(maps, size) if len(size) == 2 else upsample_volume(maps, size)


def gap_classifier(model):
    """(feature map tensor, Dense layer) of a conv -> GlobalAveragePooling2D -> Dense classifier."""
    for layer in reversed(model.layers):
        if not isinstance(layer, keras.layers.Dense):
            continue
        source = producing_layer(layer.input)
        while isinstance(source, PASS_THROUGH):
            source = producing_layer(source.input)
        if isinstance(source, keras.layers.GlobalAveragePooling2D) and not source.keepdims:
            return source.input, layer
    raise InvalidArgumentError(
        f"model {model.name!r} has neither an 'instance_maps' output (a zoo MIL head) nor a "
        "global-average-pooling + Dense classifier, so it has no class activation map. Use "
        "zoo.explain.gradcam.grad_cam, which works for any convolutional model."
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
