"""CT windowing as a Keras layer, so a saved model takes Hounsfield units directly."""

from __future__ import annotations

import keras
from keras import ops

from zoo.errors import InvalidArgumentError
from zoo.layers.windowing import apply_window, resolve_windows, window_affine


@keras.saving.register_keras_serializable(package="zoo")
class WindowStack(keras.layers.Layer):
    """``(..., 1)`` HU -> ``(..., len(windows))``, one DICOM linear window per channel.

    Each channel is in ``output_range`` (default [0, 1]; [0, 255] feeds an ImageNet card).
    The formula is ``zoo.layers.windowing``'s, as in ``zoo.data.windows.window``.
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
        scale, offset = (ops.convert_to_tensor(v, self.compute_dtype)
                         for v in window_affine(self.windows))
        y = apply_window(x, scale, offset, ops)
        lo, hi = self.output_range
        return y * (hi - lo) + lo

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], len(self.windows))

    def get_config(self):
        return {**super().get_config(), "windows": [list(w) for w in self.windows],
                "output_range": list(self.output_range)}
