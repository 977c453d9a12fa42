"""Read a zoo figure PNG back and check what a reader sees: the original, the map, the colour bar.

Shared by the figure, explain-CLI, MIL-demo and notebook tests; matplotlib.image reads the PNG
(an independent decoder path from the writer's), and the panel boxes come from
zoo.figures.explanation_layout, a pure function of the image shape.
"""

from __future__ import annotations

import numpy as np


def read_png(path) -> np.ndarray:
    """(H, W, 3) float RGB in [0, 1]."""
    import matplotlib.image

    return matplotlib.image.imread(str(path))[..., :3].astype(np.float64)


def panel(png, box, inset: int = 2) -> np.ndarray:
    """The pixels of ``box`` (x0, y0, x1, y1), ``inset`` pixels in from each edge."""
    x0, y0, x1, y1 = box
    return png[y0 + inset:y1 - inset, x0 + inset:x1 - inset]


def original_correlation(png, box, image, inset: int = 2) -> float:
    """Pearson correlation of the panel's grey level with ``image`` (H, W[, C]) magnified to the box."""
    image = np.asarray(image, np.float64)
    image = image[..., :3].mean(-1) if image.ndim == 3 else image  # RGB is drawn as RGB: compare its mean
    x0, y0, x1, y1 = box
    scale = (y1 - y0) // image.shape[0]
    assert (x1 - x0, y1 - y0) == (image.shape[1] * scale, image.shape[0] * scale), "panel is not the image magnified"
    big = np.repeat(np.repeat(image, scale, 0), scale, 1)[inset:-inset, inset:-inset]
    grey = panel(png, box, inset).mean(-1)
    return float(np.corrcoef(grey.ravel(), big.ravel())[0, 1])


def colorbar_levels(png, box, cmap: str) -> np.ndarray:
    """Index (0-255) in ``cmap`` of each row of the colour bar's middle column, bottom to top."""
    import matplotlib

    x0, y0, x1, y1 = box
    column = png[y0 + 2:y1 - 2, (x0 + x1) // 2][::-1]
    lut = matplotlib.colormaps[cmap](np.linspace(0.0, 1.0, 256))[:, :3]
    distance = ((column[:, None, :] - lut[None]) ** 2).sum(-1)
    assert distance.min(axis=1).max() < 1e-3, "the colour bar holds colours that are not in the colour map"
    return distance.argmin(axis=1)


def assert_readable(path, image, cmap: str = "inferno") -> np.ndarray:
    """The figure at ``path`` is >= 256 px wide, shows ``image`` beside the map and a monotone
    colour bar in ``cmap``'s order. Returns the decoded PNG."""
    from zoo.figures import explanation_layout

    layout = explanation_layout(np.shape(image))
    png = read_png(path)
    assert png.shape[:2] == (layout["height"], layout["width"]) and png.shape[1] >= 256
    boxes = layout["boxes"]
    assert min(boxes["image"][2] - boxes["image"][0], boxes["image"][3] - boxes["image"][1]) >= 256
    assert original_correlation(png, boxes["image"], image) > 0.99
    assert np.abs(panel(png, boxes["map"]) - panel(png, boxes["image"])).mean() > 0.02  # the map is drawn over it
    levels = colorbar_levels(png, boxes["colorbar"], cmap)
    assert np.all(np.diff(levels) >= 0) and levels[0] <= 5 and levels[-1] >= 250
    return png
