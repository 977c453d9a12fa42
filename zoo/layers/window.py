"""CT windowing as a Keras layer, so a saved model takes Hounsfield units directly."""

from __future__ import annotations

import keras
from keras import ops

from zoo.data.windows import resolve_windows
from zoo.errors import InvalidArgumentError


@keras.saving.register_keras_serializable(package="zoo")
class WindowStack(keras.layers.Layer):
    """``(..., 1)`` HU -> ``(..., len(windows))``, one DICOM linear window per channel.

    Each channel is in ``output_range`` (default [0, 1]; [0, 255] feeds an ImageNet card).
    Same formula as ``zoo.data.windows.window``.
    """

    def __init__(self, windows, output_range=(0.0, 1.0), **kwargs):
        super().__init__(**kwargs)
        self.windows = [tuple(float(v) for v in w) for w in resolve_windows(windows)]
        lo, hi = (float(v) for v in output_range)
        if not hi > lo:
            raise InvalidArgumentError(f"output_range={output_range}: need low < high.")
        self.output_range = (lo, hi)

    def call(self, x):
        if x.shape[-1] != 1:
            raise InvalidArgumentError(f"WindowStack takes one channel of HU, got shape {x.shape}.")
        x = ops.cast(x, self.compute_dtype)
        centers = ops.convert_to_tensor([c - 0.5 for c, _ in self.windows], self.compute_dtype)
        widths = ops.convert_to_tensor([w - 1.0 for _, w in self.windows], self.compute_dtype)
        y = ops.clip((x - centers) / widths + 0.5, 0.0, 1.0)
        lo, hi = self.output_range
        return y * (hi - lo) + lo

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], len(self.windows))

    def get_config(self):
        return {**super().get_config(), "windows": [list(w) for w in self.windows],
                "output_range": list(self.output_range)}
