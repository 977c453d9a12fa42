"""Heat-map overlays as PNG figures: a thin front to ``zoo.figures.explanation_figure``.

Kept so ``zoo.explain.overlay.save_overlay`` (used by the MIL demo and the notebook) stays
the one call for "write this map over this image"; ``zoo explain`` calls the figure directly
to report the panel boxes.
"""

from __future__ import annotations

from pathlib import Path


def save_overlay(path, image, heat, alpha: float = 0.5, **labels) -> Path:
    """Write the original ``image`` beside ``heat`` over it, with a colour bar, as a PNG at
    ``path``.

    ``labels``: ``mask`` (lesion outline), ``method``, ``layer``, ``class_name``, ``score``,
    ``cmap``, ``title``; see ``zoo.figures.explanation_figure``. Returns the path.
    """
    from zoo.figures import explanation_figure

    return explanation_figure(path, image, heat, alpha=alpha, **labels).path
