"""CT windows: the presets and the one formula, for numpy arrays and Keras tensors alike.

The mapping is DICOM's linear VOI function (PS3.3 C.11.2.1.2.1), rescaled to [0, 1]:
``x <= c - 0.5 - (w - 1) / 2`` gives 0, ``x > c - 0.5 + (w - 1) / 2`` gives 1, and in between
``(x - (c - 0.5)) / (w - 1) + 0.5``. Written once here as ``clip(x * scale + offset, 0, 1)``
(``window_affine``), it serves the numpy functions of ``zoo.data.windows``, the PNG writer of
``zoo dicom``, the tf.data pipeline and the ``WindowStack`` layer. This module imports no
TensorFlow, so the data layer and the CLI can read the presets cheaply.
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
        raise InvalidArgumentError(
            f"window {spec!r}: give a preset name or a (center, width) pair of numbers."
        ) from None
    if not (np.isfinite(center) and np.isfinite(width)) or width <= 1:
        raise InvalidArgumentError(
            f"window {spec!r}: need a finite center and a width > 1 HU (DICOM's linear "
            "window divides by width - 1).")
    return center, width


def resolve_windows(specs) -> list[tuple[float, float]]:
    """One window spec or a list of them -> a non-empty list of validated (center, width)."""
    if isinstance(specs, str) or (isinstance(specs, Sequence) and len(specs) == 2 and
                                  all(isinstance(v, int | float) for v in specs)):
        specs = [specs]
    out = [resolve_window(s) for s in specs]
    if not out:
        raise InvalidArgumentError("windows=[]: give at least one window.")
    return out


def window_affine(windows) -> tuple[list[float], list[float]]:
    """(scale, offset), one per window: the window is ``clip(x * scale + offset, 0, 1)``."""
    wins = resolve_windows(windows)
    scale = [1.0 / (w - 1.0) for _, w in wins]
    offset = [0.5 - (c - 0.5) / (w - 1.0) for c, w in wins]
    return scale, offset


def apply_window(x, scale, offset, xp=np):
    """The window formula on ``x`` (broadcast against ``scale``/``offset``); ``xp`` is numpy or
    ``keras.ops``, so the same line runs in numpy and inside a model."""
    return xp.clip(x * scale + offset, 0.0, 1.0)
