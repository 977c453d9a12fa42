"""Preprocessing inside the graph, so an exported model takes raw pixel values."""

from __future__ import annotations

import keras
from keras import ops

from zoo.errors import InvalidArgumentError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


def normalization_params(mode, in_chans, out_chans, mean=None, std=None):
    """(source_channels, scale, offset) so that out_c = in[source_c] * scale_c + offset_c.

    The modes are keras.applications' ``preprocess_input`` modes ("tf", "caffe", "torch"),
    "meanstd" (a card's own mean/std in input units) and "none". ``out_chans`` is the width
    the backbone expects: a grey input (``in_chans=1``) feeding a 3-channel backbone is
    broadcast to the three channels, each normalised as its RGB channel would be, so the
    pretrained first convolution is kept exactly. Any other channel count uses the mean of
    the per-channel statistics for every channel.
    """
    if mode == "tf":
        scale, offset = [1 / 127.5] * 3, [-1.0] * 3
    elif mode == "caffe":
        scale, offset = [1.0] * 3, [-m for m in CAFFE_MEAN_BGR]
    elif mode == "torch":
        scale = [1 / (255.0 * s) for s in IMAGENET_STD]
        offset = [-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]
    elif mode == "meanstd":
        if mean is None or std is None:
            raise InvalidArgumentError("preprocess='meanstd' needs mean and std lists.")
        scale = [1 / s for s in std]
        offset = [-m / s for m, s in zip(mean, std)]
    elif mode == "none":
        scale, offset = [1.0], [0.0]
    else:
        raise InvalidArgumentError(
            f"Unknown preprocess mode {mode!r}; use tf, caffe, torch, meanstd or none."
        )
    if len(scale) == out_chans:
        source = [2, 1, 0] if mode == "caffe" else list(range(out_chans))
        if in_chans == 1:
            source = [0] * out_chans
        return source, scale, offset
    n = len(scale)
    mean_scale, mean_offset = sum(scale) / n, sum(offset) / n
    return list(range(out_chans)), [mean_scale] * out_chans, [mean_offset] * out_chans


@keras.saving.register_keras_serializable(package="zoo")
class Normalize(keras.layers.Layer):
    """Per-channel affine map of (optionally reordered or broadcast) input channels.

    Records the model's input contract (``mode``, ``input_range``) in its config, so it is
    saved with the model and read back by ``input_contract``; and where the weights came from
    (``weights_origin``: card name or file path, and the file's sha256), so the origin survives
    ``.keras`` files and new heads (read by ``zoo.weights_origin``).
    """

    def __init__(self, source_channels, scale, offset, mode="none", input_range=(0.0, 255.0),
                 weights_origin=None, **kwargs):
        super().__init__(**kwargs)
        self.weights_origin = dict(weights_origin) if weights_origin else None
        self.source_channels = [int(c) for c in source_channels]
        self.scale = [float(s) for s in scale]
        self.offset = [float(o) for o in offset]
        self.mode = mode
        self.input_range = tuple(float(v) for v in input_range)

    def call(self, x):
        x = ops.cast(x, self.compute_dtype)
        if self.source_channels != list(range(x.shape[-1])):
            x = ops.take(x, self.source_channels, axis=-1)
        scale = ops.convert_to_tensor(self.scale, dtype=self.compute_dtype)
        offset = ops.convert_to_tensor(self.offset, dtype=self.compute_dtype)
        return x * scale + offset

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], len(self.source_channels))

    def get_config(self):
        return {
            **super().get_config(),
            "source_channels": self.source_channels,
            "scale": self.scale,
            "offset": self.offset,
            "mode": self.mode,
            "input_range": list(self.input_range),
            **({"weights_origin": dict(self.weights_origin)} if self.weights_origin else {}),
        }


def input_contract(model) -> dict:
    """What a zoo model expects (mode, value range, channels, shape): read from its ``preprocess``
    layer, so the data pipeline and export can ask without importing the loader."""
    try:
        layer = model.get_layer("preprocess")
    except ValueError:
        raise InvalidArgumentError(f"model {model.name!r} has no 'preprocess' layer; it was not "
                                   "built by zoo.load. Build it with zoo.load(...), or give the "
                                   "input shape and value range yourself.") from None
    return {"mode": layer.mode, "input_range": layer.input_range,
            "in_chans": model.inputs[0].shape[-1], "input_shape": tuple(model.inputs[0].shape[1:])}
