"""Spatial padding with zeros in-plane and edge replication along chosen axes.

The inflated 3D backbones pad depth by replicating the edge slice: a volume constant
along depth then stays constant through every layer, so the inflated network gives the
2D network's features exactly (zero padding would darken the first and last slices).
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="zoo")
class SpatialPadding(keras.layers.Layer):
    """Pad spatial axis i by ``padding[i] = (before, after)``; ``edge_axes`` replicate the edge."""

    def __init__(self, padding, edge_axes=(), **kwargs):
        super().__init__(**kwargs)
        self.padding = tuple((int(a), int(b)) for a, b in padding)
        self.edge_axes = tuple(int(a) for a in edge_axes)

    def call(self, x):
        zero = (
            [(0, 0)]
            + [(0, 0) if i in self.edge_axes else p for i, p in enumerate(self.padding)]
            + [(0, 0)]
        )
        if any(a or b for a, b in zero):
            x = ops.pad(x, zero)
        for i in self.edge_axes:
            before, after = self.padding[i]
            axis = i + 1
            parts = []
            first, last = [slice(None)] * len(x.shape), [slice(None)] * len(x.shape)
            first[axis], last[axis] = slice(0, 1), slice(-1, None)
            if before:
                parts.append(ops.repeat(x[tuple(first)], before, axis=axis))
            parts.append(x)
            if after:
                parts.append(ops.repeat(x[tuple(last)], after, axis=axis))
            if len(parts) > 1:
                x = ops.concatenate(parts, axis=axis)
        return x

    def compute_output_shape(self, input_shape):
        spatial = [
            None if n is None else n + a + b for n, (a, b) in zip(input_shape[1:-1], self.padding)
        ]
        return (input_shape[0], *spatial, input_shape[-1])

    def get_config(self):
        return {
            **super().get_config(),
            "padding": [list(p) for p in self.padding],
            "edge_axes": list(self.edge_axes),
        }
