"""Shared pieces of every builder: input validation, channel adaptation, heads, features.

One validation helper and one head builder for all families, so model files hold only
what is particular to their architecture.
"""

from __future__ import annotations

import numpy as np

from zoo._lazy import keras
from zoo.errors import InputShapeError, InvalidArgumentError
from zoo.layers import dims as D
from zoo.weights.copying import adapt_first_conv  # noqa: F401  (its home is zoo.weights)


class Default(str):
    """A string default that can be told apart from the same string given explicitly (``is``)."""

    __slots__ = ()


POOLING = Default("avg")  # zoo.load's global pooling; with head="mil" only the default is allowed
# zoo.load's classifier activation; a MIL bag keeps logits unless asked
ACTIVATION = Default("softmax")
# tasks whose backbone takes a fresh classifier head (num_classes=...): a GAN discriminator's
# feature map is an encoder like a classifier's (the few-label use of a trained discriminator)
HEAD_TASKS = ("classification", "discriminator")


def check_in_chans(in_chans) -> int:
    if isinstance(in_chans, bool) or not isinstance(in_chans, int | np.integer) or in_chans < 1:
        raise InvalidArgumentError(
            f"in_chans={in_chans!r}: the number of input channels must be a positive integer "
            "(1 for grey-scale CT/MR/X-ray, 3 for RGB)."
        )
    return int(in_chans)


def check_input_shape(input_shape, entry, in_chans: int) -> tuple[int, ...]:
    """Validate ``input_shape`` ((H, W), (H, W, C), or with D first for 3D) for ``entry``.

    Returns the full shape with channels last. Spatial sizes must be at least the
    architecture's minimum (divisibility is the builder's check: U-Net's depth decides it).
    """
    dims = entry.spatial_dims
    shape = tuple(entry.default_size) if input_shape is None else tuple(input_shape)
    if len(shape) == dims + 1:
        if shape[-1] is not None and shape[-1] != in_chans:
            raise InputShapeError(
                f"input_shape={tuple(input_shape)} has {shape[-1]} channels but "
                f"in_chans={in_chans}; make them agree (or give input_shape without channels)."
            )
        shape = shape[:-1]
    if len(shape) != dims:
        raise InputShapeError(
            f"input_shape={input_shape}: {entry.name} is a {dims}D network and takes "
            f"{dims} spatial sizes (plus optional channels), e.g. {tuple(entry.default_size)}."
        )
    for s in shape:
        if s is None:
            continue
        if not isinstance(s, int | np.integer) or s < entry.min_size:
            raise InputShapeError(
                f"input_shape={input_shape}: {entry.name} needs every spatial size >= "
                f"{entry.min_size} (got {s}); resize or pad the images, or pick a smaller network."
            )
    return (*shape, in_chans)


def global_pool(x, pooling: str | None, name: str):
    if pooling is None or len(x.shape) == 2:  # a vector already (patch CNNs end in dense layers)
        return x
    if pooling not in ("avg", "max"):
        raise InvalidArgumentError(f"pooling={pooling!r}: use 'avg', 'max' or None.")
    return D.global_pool(pooling, D.spatial_dims_of(x))(name=name)(x)


def classifier_head(x, num_classes: int, pooling: str | None = "avg", dropout: float = 0.0,
                    activation: str | None = "softmax"):
    """The zoo's one classifier head: global pooling, dropout, a named Dense layer."""
    if not 0.0 <= dropout < 1.0:
        raise InvalidArgumentError(f"dropout={dropout}: must be in [0, 1).")
    x = global_pool(x, pooling or "avg", name="head_pool")
    if dropout:
        x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    return keras.layers.Dense(num_classes, activation=activation, name="head_fc", dtype="float32")(
        x
    )


def feature_outputs(model, entry, strides=None) -> list:
    """The multi-scale feature maps of a built backbone, renamed ``features_strideN``."""
    if entry.feature_layers is None:
        raise InvalidArgumentError(f"{entry.name} does not define multi-scale features.")
    by_stride = entry.feature_layers(model)
    wanted = sorted(by_stride) if strides in (None, True) else list(strides)
    unknown = [s for s in wanted if s not in by_stride]
    if unknown:
        raise InvalidArgumentError(
            f"features={strides}: {entry.name} has feature maps at strides {sorted(by_stride)}, "
            f"not {unknown}."
        )
    return [
        keras.layers.Identity(name=f"features_stride{s}")(model.get_layer(by_stride[s]).output)
        for s in wanted
    ]


def check_batch(model, batch) -> None:
    """A batch ``model`` takes: rank (2D batch to a 3D network: the common slip), channels."""
    want = tuple(model.inputs[0].shape)
    got = tuple(np.shape(batch))
    dims = len(want) - 2
    if len(got) != len(want):
        hint = (" Add the depth axis (a single slice is depth 1) or load the 2D model."
                if len(got) == len(want) - 1 else "")
        raise InputShapeError(
            f"batch of shape {got}: {model.name} is a {dims}D network and takes a {len(want)}D "
            f"batch (N, {', '.join(['D', 'H', 'W'][-dims:])}, C) such as {(2, *want[1:])}.{hint}"
        )
    if want[-1] is not None and got[-1] != want[-1]:
        raise InputShapeError(
            f"batch of shape {got}: {model.name} takes {want[-1]} channels (the last axis), not "
            f"{got[-1]}."
        )
