"""CT windows: Hounsfield units -> [0, 1] by a (center, width) pair, presets, and channel stacks.

The mapping is DICOM's linear VOI function (PS3.3 C.11.2.1.2.1), rescaled to [0, 1]:
``x <= c - 0.5 - (w - 1) / 2`` gives 0, ``x > c - 0.5 + (w - 1) / 2`` gives 1, and in between
``(x - (c - 0.5)) / (w - 1) + 0.5`` (written once, in ``zoo.layers.windowing``). Stacking three
windows as channels is the usual way to feed CT to an ImageNet model; ``with_hu_input`` puts the
same stack inside a Keras model so an exported model takes Hounsfield units directly (layers in
``zoo.layers.window``).
"""

from __future__ import annotations

import numpy as np

from zoo.errors import InvalidArgumentError
from zoo.layers.windowing import (  # noqa: F401  (re-exported: the data layer's public names)
    DEFAULT_CT_STACK,
    PRESETS,
    apply_window,
    resolve_window,
    resolve_windows,
    window_affine,
)


def window(x, center: float | str, width: float | None = None) -> np.ndarray:
    """``x`` (HU) through the window ``(center, width)`` (or a preset name) -> float32 in [0, 1]."""
    scale, offset = window_affine([resolve_window(center if width is None else (center, width))])
    return apply_window(np.asarray(x, np.float32), scale[0], offset[0]).astype(np.float32)


def stack_windows(x, windows=DEFAULT_CT_STACK) -> np.ndarray:
    """One channel per window, last axis: ``(..., 1)`` or ``(...)`` HU ->
    ``(..., len(windows))``."""
    x = np.asarray(x, np.float32)
    if x.ndim and x.shape[-1] == 1:
        x = x[..., 0]
    scale, offset = window_affine(windows)
    return apply_window(x[..., None], np.array(scale), np.array(offset)).astype(np.float32)


def with_hu_input(model, windows=DEFAULT_CT_STACK, name: str | None = None):
    """Wrap a zoo model so it takes one-channel HU: windows inside the graph, scaled to its input
    range.

    The model's contract (``zoo.input_contract``) gives the channel count and the value range it
    expects (ImageNet cards: [0, 255]); the number of windows must equal the channel count, or
    be one window that is repeated. The result saves to ``.keras`` and loads in safe mode.
    """
    import keras

    from zoo.layers.preprocess import input_contract
    from zoo.layers.window import WindowStack

    contract = input_contract(model)
    chans = int(contract["in_chans"])
    wins = resolve_windows(windows)
    if len(wins) == 1 and chans > 1:
        wins = wins * chans
    if len(wins) != chans:
        raise InvalidArgumentError(
            f"{len(wins)} windows for a model with {chans} input channels; give {chans} windows "
            "(or one, repeated)."
        )
    shape = contract["input_shape"][:-1]
    inputs = keras.Input(shape=(*shape, 1), name="hu")
    x = WindowStack(wins, output_range=contract["input_range"], name="hu_windows")(inputs)
    return keras.Model(inputs, model(x), name=name or f"{model.name}_hu")
