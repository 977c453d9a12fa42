"""Analytic receptive field and total stride of any zoo convolutional model.

Exact dependency windows, not the usual closed-form recurrence: for one output position the
interval of input positions it depends on is propagated backwards through the layer graph,
per spatial axis (convolutions, pooling, padding, cropping, up-sampling, transposed
convolutions, branches merged by their union, nested models such as a U-Net's encoder).
The receptive field is the largest window over a few neighbouring output positions (phases
of up-sampling differ); the stride is how far the window moves per output step. Padding is
counted as input positions, so the field does not depend on where the pixel is.
Normalisation statistics (instance/group norm, BatchNorm in training) are treated as
per-position, as is usual; their global dependence is not a receptive field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from zoo._keras_compat import layer_inputs, nodes_by_depth, producing_layer
from zoo._lazy import keras
from zoo.errors import InvalidArgumentError, UnsupportedLayerError

POINTWISE = {
    "Activation",
    "ReLU",
    "PReLU",
    "LeakyReLU",
    "ELU",
    "Softmax",
    "BatchNormalization",
    "GroupNormalization",
    "LayerNormalization",
    "Normalize",
    "LocalResponseNormalization",
    "Add",
    "Subtract",
    "Multiply",
    "Average",
    "Maximum",
    "Minimum",
    "Concatenate",
    "Dropout",
    "SpatialDropout2D",
    "SpatialDropout3D",
    "Identity",
    "InputLayer",
    "Rescaling",
    "Dense",
    "GaussianNoise",
    "StraightThroughRound",  # SDNet's anatomy factor: round per value
}
NON_SPATIAL = {"AdaptiveAveragePooling2D", "Permute", "Reshape", "Flatten"}


@dataclass(frozen=True)
class ReceptiveField:
    """``size`` and ``stride`` per spatial axis, at the output of layer ``layer``."""

    size: tuple[int, ...]
    stride: tuple
    layer: str


def _tuple(value, n):
    return tuple(value) if isinstance(value, list | tuple) else (value,) * n


def _same_left(n, k, s):
    """TF's 'same' padding before the data along one axis (input size n, effective kernel k)."""
    if n is None:
        return max(k - s, 0) // 2
    return max((math.ceil(n / s) - 1) * s + k - n, 0) // 2


def _window(layer, intervals, in_shape):
    """Input intervals [(lo, hi) per axis] that output intervals ``intervals`` depend on."""
    kind = type(layer).__name__
    dims = len(intervals)
    sizes = in_shape[1:1 + dims]
    if kind in POINTWISE:
        return intervals
    if kind == "CentralSlice":  # a plane of the volume: the sliced axis is its central index
        return [
            *intervals[: layer.axis],
            ((in_shape[1 + layer.axis] or 0) // 2,) * 2,
            *intervals[layer.axis :],
        ]
    if kind.startswith(("Conv", "MaxPooling", "AveragePooling", "DepthwiseConv", "SeparableConv")):
        return _conv_window(layer, kind, intervals, sizes)
    if kind == "LinearUpsampling" or kind.startswith("UpSampling"):
        return _upsampling_window(layer, kind, intervals)
    if kind.startswith("ZeroPadding") or kind == "SpatialPadding":
        return [(a - p[0], b - p[0]) for (a, b), p in zip(intervals, layer.padding)]
    if kind.startswith("Cropping"):
        return [(a + c[0], b + c[0]) for (a, b), c in zip(intervals, layer.cropping)]
    if kind == "CentralCrop":
        return [
            (a + (n - layer.size) // 2, b + (n - layer.size) // 2)
            for (a, b), n in zip(intervals, sizes)
        ]
    if kind == "CeilMaxPooling2D":
        return [(a * layer.strides, b * layer.strides + layer.pool_size - 1) for a, b in intervals]
    raise UnsupportedLayerError(
        f"receptive_field: layer {layer.name!r} ({kind}) has no rule; the analysis covers "
        "convolutions, pooling, padding, cropping, up-sampling, central planes and point-wise "
        "layers. Pass layer= to stop before it."
    )


def _conv_window(layer, kind, intervals, sizes):
    """Convolutions and poolings (transposed ones too): kernel, stride, dilation and padding."""
    dims = len(intervals)
    k = _tuple(getattr(layer, "kernel_size", None) or layer.pool_size, dims)
    s = _tuple(layer.strides, dims)
    d = _tuple(getattr(layer, "dilation_rate", 1), dims)
    if "Transpose" in kind:
        out = []
        for (a, b), ki, si in zip(intervals, k, s):
            pl = max(ki - si, 0) // 2 if layer.padding == "same" else 0
            out.append((-(-(a + pl - ki + 1) // si), (b + pl) // si))
        return out
    out = []
    for (a, b), ki, si, di, n in zip(intervals, k, s, d, sizes):
        keff = di * (ki - 1) + 1
        pl = _same_left(n, keff, si) if layer.padding == "same" else 0
        out.append((a * si - pl, b * si - pl + keff - 1))
    return out


def _upsampling_window(layer, kind, intervals):
    """Up-sampling: nearest reads one input cell, (bi)linear also reads the next one."""
    dims = len(intervals)
    # UpSampling3D is nearest only and has no ``interpolation``
    if kind == "LinearUpsampling" or getattr(layer, "interpolation", "nearest") == "bilinear":
        # half-pixel linear by u: output o reads floor((o + 1/2) / u - 1/2) and the next input
        u = _tuple(getattr(layer, "size", 2), dims)
        return [
            (
                math.floor(Fraction(2 * a + 1, 2 * ui) - Fraction(1, 2)),
                math.floor(Fraction(2 * b + 1, 2 * ui) - Fraction(1, 2)) + 1,
            )
            for (a, b), ui in zip(intervals, u)
        ]
    u = _tuple(layer.size, dims)
    return [(a // ui, b // ui) for (a, b), ui in zip(intervals, u)]


def _union(a, b):
    return b if a is None else [(min(x[0], y[0]), max(x[1], y[1])) for x, y in zip(a, b)]


def _propagate(model, seeds: dict[int, list]) -> dict[int, list]:
    """Intervals of the tensors reached back from ``seeds`` (id(tensor) -> intervals)."""
    found = dict(seeds)
    for node in nodes_by_depth(model):
        outs = [found.get(id(t)) for t in node.outputs]
        if all(o is None for o in outs) or not node.inputs:
            continue
        op = node.operation
        if isinstance(op, keras.Model):
            inner = {id(t): o for t, o in zip(op.outputs, outs) if o is not None}
            inner = _propagate(op, inner)
            ins = [inner.get(id(t)) for t in op.inputs]
        else:
            merged = None
            for o in outs:
                merged = _union(merged, o) if o is not None else merged
            window = _window(op, merged, node.inputs[0].shape)
            ins = [window] * len(node.inputs)
        for t, w in zip(node.inputs, ins):
            if w is not None and len(t.shape) - 2 == len(w):
                found[id(t)] = _union(found.get(id(t)), w)
    return found


def _spatial_tensor(model, layer):
    if layer is not None:
        return model.get_layer(layer).output
    tensor = model.outputs[0]
    while True:
        op = producing_layer(tensor)
        if (
            len(tensor.shape) >= 3
            and type(op).__name__ not in NON_SPATIAL
            and not isinstance(op, keras.Model)
        ):
            return tensor
        inputs = layer_inputs(tensor)
        if not inputs:
            raise InvalidArgumentError(
                f"model {model.name!r} has no spatial feature map to analyse."
            )
        tensor = inputs[0]


def input_window(model, position, layer=None) -> list[tuple[int, int]]:
    """Input positions (lo, hi per axis, inclusive; may reach padding) read by ``position``."""
    tensor = _spatial_tensor(model, layer)
    seeds = {id(tensor): [(p, p) for p in position]}
    found = _propagate(model, seeds)
    image = model.inputs[0]
    if id(image) not in found:
        raise InvalidArgumentError(
            f"layer {producing_layer(tensor).name!r} does not depend on input {image.name!r} "
            "through spatial layers."
        )
    return found[id(image)]


def receptive_field(model, layer=None) -> ReceptiveField:
    """Receptive field size and total stride (input pixels per output step) of ``model``.

    Args:
        model: a Functional Keras model (nested models are followed).
        layer: the layer (or its name) whose output is analysed; default the model's output or,
            for a classifier, its last spatial feature map before global pooling / flattening.

    Returns:
        A ``ReceptiveField``: per-axis ``size`` and ``stride``, and the ``layer`` analysed.

    Raises:
        UnsupportedLayerError: a layer whose spatial effect the analysis does not know.
        InvalidArgumentError: no such layer, or an output without spatial axes.
    """
    tensor = _spatial_tensor(model, layer)
    name = producing_layer(tensor).name
    centre = [(n or 0) // 2 for n in tensor.shape[1:-1]]
    windows = [input_window(model, [c + j for c in centre], layer=name) for j in range(8)]
    sizes = tuple(max(hi - lo + 1 for lo, hi in axis) for axis in zip(*windows))
    far = input_window(model, [c + 64 for c in centre], layer=name)
    stride = tuple(_plain(Fraction(f[0] - w[0], 64)) for f, w in zip(far, windows[0]))
    return ReceptiveField(size=sizes, stride=stride, layer=name)


def _plain(f: Fraction):
    return int(f) if f.denominator == 1 else f
