"""Gradient saliency (Simonyan et al. 2014): d class score / d input pixel.

The usual post-processing (absolute value, max over channels, scaling to [0, 1]; tf-keras-vis
does all three by default) is optional, so the raw gradient can be checked exactly. Images
(B, H, W, C) and volumes (B, D, H, W, C) alike.
"""

from __future__ import annotations

import numpy as np

from zoo.errors import InvalidArgumentError
from zoo.explain.attribution import Scorer, postprocess
from zoo.explain.inputs import check_images

REDUCE = (None, "max", "mean")  # no "sum": a sum of |gradient| over channels means little


def saliency(model, images, class_index=None, output=None, logits=True, absolute=True,
             channel_reduce="max", normalize=True) -> np.ndarray:
    """Input gradients of the class score: (B, H, W) with ``channel_reduce``, else (B, H, W, C)."""
    if channel_reduce not in REDUCE:
        raise InvalidArgumentError(f"channel_reduce={channel_reduce!r}: use None, 'max' or 'mean'.")
    x = check_images(model, images, "saliency", spatial=False)
    scorer = Scorer(model, output, logits)
    g = scorer.gradient(x, scorer.classes(x, class_index))
    return postprocess(g, absolute, channel_reduce, normalize)
