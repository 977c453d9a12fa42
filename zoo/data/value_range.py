"""One check that images lie in a model's input range, shared by the trainers (pretrain, finetune).

The zoo's models take raw grey values (the card's ``input_range``, [0, 255] for every shipped
card) and normalise inside the model. Two mistakes pass silently otherwise: images already
scaled to [0, 1] (the model then sees a nearly black image) and raw CT Hounsfield units
(negative values, thousands).
"""

from __future__ import annotations

import numpy as np

from zoo.errors import DataError


def check_value_range(array, input_range=(0.0, 255.0), what: str = "data") -> None:
    """A DataError (``what``, the values, the fix) when ``array`` is outside ``input_range``."""
    a = np.asarray(array)
    if a.size == 0:
        return
    lo, hi = (float(v) for v in input_range)
    low, high = float(a.min()), float(a.max())
    tolerance = 1e-3 * (hi - lo)
    if low < lo - tolerance or high > hi + tolerance:
        hint = (
            " (raw CT Hounsfield units? window them first, e.g. zoo.data.windows)"
            if low < -100
            else ""
        )
        raise DataError(
            f"{what} values span [{low:.3g}, {high:.3g}]; the zoo's input range is [{lo:g}, "
            f"{hi:g}]{hint}: window CT to grey values first, or rescale the images into that range."
        )
    if hi - lo > 2 and high <= lo + 1.0:
        raise DataError(
            f"{what} values all lie in [{lo:g}, {lo + 1:g}]; the zoo's input range is [{lo:g}, "
            f"{hi:g}]: multiply by {hi - lo:g}."
        )
