"""CT windows: Hounsfield units -> [0, 1] by a (center, width) pair, presets, and channel stacks.

The mapping is DICOM's linear VOI function (PS3.3 C.11.2.1.2.1), rescaled to [0, 1]:
``x <= c - 0.5 - (w - 1) / 2`` gives 0, ``x > c - 0.5 + (w - 1) / 2`` gives 1, and in between
``(x - (c - 0.5)) / (w - 1) + 0.5``. Stacking three windows as channels is the usual way to
feed CT to an ImageNet model; ``with_hu_input`` puts the same stack inside a Keras model so an
exported model takes Hounsfield units directly (layers in ``zoo.layers.window``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from zoo.errors import InvalidArgumentError
from zoo.registry import Registry

# (center, width) in HU; common radiology presets (Radiopaedia "Windowing (CT)").
PRESETS: Registry = Registry("CT window preset", {
    "brain": (40.0, 80.0),
    "subdural": (75.0, 215.0),
    "stroke": (40.0, 40.0),
    "temporal_bone": (600.0, 2800.0),
    "head_soft_tissue": (40.0, 375.0),
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "abdomen_soft_tissue": (50.0, 400.0),
    "liver": (30.0, 150.0),
    "bone": (400.0, 1800.0),
    "spine_soft_tissue": (50.0, 250.0),
    "pe_angiography": (100.0, 700.0),
}, argument="window", hint="Or give a (center, width) pair in HU.")

DEFAULT_CT_STACK = ("abdomen_soft_tissue", "lung", "bone")
"""Three windows that together cover soft tissue, air and bone, for a 3-channel model."""


def resolve_window(spec) -> tuple[float, float]:
    """A preset name or a (center, width) pair -> (center, width), validated."""
    if isinstance(spec, str):
        return PRESETS.get(spec)  # UnknownNameError (an InvalidArgumentError) with suggestions
    try:
        center, width = (float(v) for v in spec)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"window {spec!r}: give a preset name or a (center, width) pair of numbers.") from None
    if not (np.isfinite(center) and np.isfinite(width)) or width <= 1:
        raise InvalidArgumentError(f"window {spec!r}: need a finite center and a width > 1 HU (DICOM's linear "
                                   "window divides by width - 1).")
    return center, width


def resolve_windows(specs) -> list[tuple[float, float]]:
    if isinstance(specs, str) or (isinstance(specs, Sequence) and len(specs) == 2 and
                                  all(isinstance(v, int | float) for v in specs)):
        specs = [specs]
    out = [resolve_window(s) for s in specs]
    if not out:
        raise InvalidArgumentError("windows=[]: give at least one window.")
    return out


def window(x, center: float | str, width: float | None = None) -> np.ndarray:
    """``x`` (HU) through the window ``(center, width)`` (or a preset name) -> float32 in [0, 1]."""
    c, w = resolve_window(center if width is None else (center, width))
    x = np.asarray(x, np.float32)
    return np.clip((x - (c - 0.5)) / (w - 1.0) + 0.5, 0.0, 1.0).astype(np.float32)


def stack_windows(x, windows=DEFAULT_CT_STACK) -> np.ndarray:
    """One channel per window, last axis: ``(..., 1)`` or ``(...)`` HU -> ``(..., len(windows))``."""
    x = np.asarray(x, np.float32)
    if x.ndim and x.shape[-1] == 1:
        x = x[..., 0]
    return np.stack([window(x, c, w) for c, w in resolve_windows(windows)], axis=-1)


def with_hu_input(model, windows=DEFAULT_CT_STACK, name: str | None = None):
    """Wrap a zoo model so it takes one-channel HU: windows inside the graph, scaled to its input range.

    The model's contract (``zoo.input_contract``) gives the channel count and the value range it
    expects (ImageNet cards: [0, 255]); the number of windows must equal the channel count, or
    be one window that is repeated. The result saves to ``.keras`` and loads in safe mode.
    """
    import keras

    from zoo.layers.window import WindowStack
    from zoo.models.factory import input_contract

    contract = input_contract(model)
    chans = int(contract["in_chans"])
    wins = resolve_windows(windows)
    if len(wins) == 1 and chans > 1:
        wins = wins * chans
    if len(wins) != chans:
        raise InvalidArgumentError(f"{len(wins)} windows for a model with {chans} input channels; give {chans} "
                                   "windows (or one, repeated).")
    shape = contract["input_shape"][:-1]
    inputs = keras.Input(shape=(*shape, 1), name="hu")
    x = WindowStack(wins, output_range=contract["input_range"], name="hu_windows")(inputs)
    return keras.Model(inputs, model(x), name=name or f"{model.name}_hu")
