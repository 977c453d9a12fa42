"""Figures a person can read: explanation overlays, training curves and segmentation outlines,
drawn with matplotlib.

matplotlib is imported inside each function with the Agg backend (no display needed), so
``import zoo`` stays light. The explanation layout is fixed in pixels by ``explanation_layout``
(a pure function of the image shape), so a caller or a test can find each panel in the PNG.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zoo.errors import DataError

MIN_PANEL = 256  # pixels: the shorter side of a panel is never drawn smaller than this
DPI = 100
_LEFT, _GAP, _BAR_GAP, _BAR, _BAR_LABELS, _TOP, _BOTTOM = 16, 24, 16, 18, 64, 72, 16


@dataclass(frozen=True)
class Figure:
    """A written PNG: its path, size in pixels and the (x0, y0, x1, y1) box of each panel
    (pixel columns x0..x1-1, rows y0..y1-1, origin top left, as the PNG reads back)."""

    path: Path
    width: int
    height: int
    boxes: dict


def _mpl():
    """matplotlib with the Agg backend, or a one-line error naming the package."""
    try:
        import matplotlib
    except ImportError:
        from zoo.errors import OptionalDependencyError

        raise OptionalDependencyError(
            "zoo figures need matplotlib, which is not installed; install it with "
            "`pip install matplotlib` (a core dependency of medzoo; reinstall medzoo to get it)."
        ) from None
    matplotlib.use("Agg", force=False)  # a notebook's inline backend is kept
    from matplotlib.figure import Figure as MplFigure

    return matplotlib, MplFigure


def explanation_layout(shape) -> dict:
    """Pixel layout of ``explanation_figure`` for an image of ``shape`` (H, W[, C]).

    Each panel shows the image magnified by the integer factor ``scale`` (nearest neighbour),
    so its shorter side is at least MIN_PANEL pixels; the map panel sits to the right of the
    original and the colour bar to the right of the map.
    """
    h, w = int(shape[0]), int(shape[1])
    scale = max(1, math.ceil(MIN_PANEL / min(h, w)))
    ph, pw = h * scale, w * scale
    x_map = _LEFT + pw + _GAP
    x_bar = x_map + pw + _BAR_GAP
    width = x_bar + _BAR + _BAR_LABELS
    height = _TOP + ph + _BOTTOM
    box = lambda x0, wd: (x0, _TOP, x0 + wd, _TOP + ph)  # noqa: E731
    return {"scale": scale, "width": width, "height": height,
            "boxes": {"image": box(_LEFT, pw), "map": box(x_map, pw), "colorbar": box(x_bar, _BAR)}}


def _axes(fig, box, width, height):
    x0, y0, x1, y1 = box
    return fig.add_axes((x0 / width, 1.0 - y1 / height, (x1 - x0) / width, (y1 - y0) / height))


def _as_display(image):
    """(H, W) grey or (H, W, 3) RGB float in [0, 1], scaled to the image's own range."""
    image = np.asarray(image, np.float32)
    if image.ndim == 3 and image.shape[-1] in (1, 3, 4):
        image = image[..., 0] if image.shape[-1] == 1 else image[..., :3]
    elif image.ndim != 2:
        raise DataError(f"figure: image of shape {image.shape}; give (H, W) or (H, W, 1|3|4).")
    lo, hi = float(image.min()), float(image.max())
    return (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)


def _magnify(a, scale):
    return np.repeat(np.repeat(a, scale, axis=0), scale, axis=1)


def explanation_figure(
    path,
    image,
    heat,
    *,
    mask=None,
    method="heat map",
    class_name=None,
    score=None,
    layer=None,
    cmap="inferno",
    alpha=0.5,
    title=None,
) -> Figure:
    """Write a PNG: the original image, the map over it (with the lesion outline when ``mask``
    is given, and a cross at the map's peak) and a colour bar of the map's values.

    The title names ``method`` (and ``layer``), the class explained and its ``score``.
    ``heat`` is (H, W), already at the image's size (``zoo.explain.cam.upsample``).
    """
    matplotlib, MplFigure = _mpl()
    shown = _as_display(image)
    heat = np.asarray(heat, np.float32)
    if heat.shape != shown.shape[:2]:
        raise DataError(f"figure: heat map {heat.shape} and image {shown.shape[:2]} differ; "
                        "upsample the map to the image first (zoo.explain.cam.upsample).")
    if not np.isfinite(heat).all():
        raise DataError(
            "figure: the heat map holds NaN or infinite values; check the model's output."
        )
    if not 0.0 <= alpha <= 1.0:
        raise DataError(f"figure: alpha={alpha} must be in [0, 1].")
    if mask is not None and np.asarray(mask).shape != heat.shape:
        raise DataError(
            f"figure: mask {np.asarray(mask).shape} and heat map {heat.shape} differ; give one (H, "
            "W) mask."
        )
    layout = explanation_layout(heat.shape)
    s, width, height, boxes = layout["scale"], layout["width"], layout["height"], layout["boxes"]
    fig = MplFigure(figsize=(width / DPI, height / DPI), dpi=DPI, facecolor="white")
    norm = matplotlib.colors.Normalize(
        float(heat.min()), float(heat.max()) if heat.max() > heat.min() else float(heat.min()) + 1.0
    )
    colours = matplotlib.colormaps[cmap]
    grey = dict(cmap="gray", vmin=0.0, vmax=1.0) if shown.ndim == 2 else {}
    big = _magnify(shown, s)

    ax = _axes(fig, boxes["image"], width, height)
    ax.imshow(big, interpolation="nearest", aspect="auto", **grey)
    ax.set_axis_off()
    ax.set_title("original", fontsize=10)

    ax = _axes(fig, boxes["map"], width, height)
    ax.imshow(big, interpolation="nearest", aspect="auto", **grey)
    ax.imshow(
        _magnify(heat, s),
        cmap=colours,
        norm=norm,
        alpha=alpha,
        interpolation="nearest",
        aspect="auto",
    )
    if mask is not None and np.asarray(mask).any():
        ax.contour(
            _magnify(np.asarray(mask, np.float32), s), levels=[0.5], colors="cyan", linewidths=1.2
        )
    y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
    ax.plot(
        [(x + 0.5) * s - 0.5],
        [(y + 0.5) * s - 0.5],
        marker="+",
        color="white",
        markersize=12,
        mew=2,
    )
    ax.set_xlim(-0.5, big.shape[1] - 0.5)
    ax.set_ylim(big.shape[0] - 0.5, -0.5)
    ax.set_axis_off()
    legend = "map, lesion outline (cyan), peak (+)" if mask is not None else "map, peak (+)"
    ax.set_title(legend, fontsize=10)

    cax = _axes(fig, boxes["colorbar"], width, height)
    # opaque, unlike the overlay
    fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=colours), cax=cax)
    cax.tick_params(labelsize=8)

    if title is None:
        what = method + (f" of layer {layer}" if layer else "")
        if class_name is not None:
            what += f", class {class_name}"
        if score is not None:
            what += f", score {score:.3f}"
        title = what
    fig.suptitle(title, fontsize=11, y=1.0 - 8 / height, va="top")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, format="png", facecolor="white")
    return Figure(path, width, height, boxes)


def _history_rows(source) -> list[dict]:
    """Epoch rows from run.json (path or loaded dict), a FinetuneResult, a Keras History or a
    dict of per-epoch lists."""
    if isinstance(source, str | Path):
        path = Path(source)
        if path.is_dir():
            path = path / "run.json"
        if not path.is_file():
            raise DataError(
                f"training_curves: {str(path)!r}: no such file; give run.json or its folder."
            )
        try:
            source = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise DataError(
                f"training_curves: {str(path)!r} is not JSON ({e}); give the run.json a run wrote."
            ) from None
    if hasattr(source, "history"):  # a keras History or a zoo FinetuneResult
        source = source.history
    if isinstance(source, dict) and "history" in source:
        source = source["history"]
    if isinstance(source, dict):  # Keras style: {"loss": [...], "val_loss": [...]}
        n = max((len(v) for v in source.values() if isinstance(v, list | tuple)), default=0)
        source = [
            {
                "epoch": i + 1,
                **{
                    k: v[i] for k, v in source.items() if isinstance(v, list | tuple) and i < len(v)
                },
            }
            for i in range(n)
        ]
    rows = [dict(r) for r in source] if isinstance(source, list | tuple) else None
    if not rows or not all(isinstance(r, dict) for r in rows):
        raise DataError(
            "training_curves: no epochs to draw; give run.json (or its path), a FinetuneResult, a "
            "Keras History or a dict of per-epoch lists such as {'loss': [...], 'val_loss': "
            "[...]}."
        )
    return rows


def training_curves(history_or_run_json, path) -> Path:
    """A PNG of loss and accuracy per epoch (train and validation), stages shaded apart.

    ``history_or_run_json``: run.json (its path, its folder or its content), a FinetuneResult,
    a Keras History, or a dict of per-epoch lists. Returns the path written.
    """
    rows = _history_rows(history_or_run_json)
    _, MplFigure = _mpl()
    from matplotlib.ticker import MaxNLocator

    epochs = np.arange(1, len(rows) + 1)
    metrics = [m for m in ("loss", "accuracy") if any(m in r or f"val_{m}" in r for r in rows)]
    if not metrics:
        metrics = sorted(
            {
                k.removeprefix("val_")
                for r in rows
                for k, v in r.items()
                if isinstance(v, int | float) and k not in ("epoch", "learning_rate")
            }
        )[:2]
    if not metrics:
        raise DataError(f"training_curves: the epochs hold no metrics (keys {sorted(rows[0])}).")
    fig = MplFigure(
        figsize=(4.2 * len(metrics), 3.4), dpi=DPI, facecolor="white", layout="constrained"
    )
    stages = [r.get("stage") for r in rows]
    for i, metric in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), i + 1)
        for key, style in ((metric, "-o"), (f"val_{metric}", "--s")):
            values = np.array([r.get(key, np.nan) for r in rows], np.float64)
            if np.isfinite(values).any():
                ax.plot(
                    epochs,
                    values,
                    style,
                    markersize=3,
                    label="train" if key == metric else "validation",
                )
        if stages[0] is not None:
            ax.text(
                1.1, 0.98, str(stages[0]), transform=ax.get_xaxis_transform(), va="top", fontsize=8
            )
        for k in range(1, len(rows)):
            if stages[k] != stages[k - 1]:
                ax.axvline(k + 0.5, color="grey", lw=0.8, ls=":")
                ax.text(
                    k + 0.6,
                    0.98,
                    str(stages[k]),
                    transform=ax.get_xaxis_transform(),
                    va="top",
                    fontsize=8,
                )
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, format="png", facecolor="white")
    return path


def reliability_diagram(table: dict, path, *, title: str = "calibration") -> Path:
    """A PNG of observed frequency against predicted confidence per bin (zoo.metrics.calibration's
    table), with the diagonal of perfect calibration, bin counts as bars and the ECE in the
    title."""
    for key in ("edges", "confidence", "observed", "count", "ece"):
        if key not in table:
            raise DataError(
                f"reliability_diagram: the table has no {key!r}; give "
                "zoo.metrics.calibration(...)'s result."
            )
    _, MplFigure = _mpl()
    edges = np.asarray(table["edges"], np.float64)
    conf = np.asarray(table["confidence"], np.float64)
    observed = np.asarray(table["observed"], np.float64)
    counts = np.asarray(table["count"], np.float64)
    fig = MplFigure(figsize=(4.2, 4.2), dpi=DPI, facecolor="white", layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], ":", color="grey", lw=1, label="perfectly calibrated")
    shown = np.isfinite(conf)
    ax.plot(conf[shown], observed[shown], "-o", markersize=4, label="model")
    share = counts / max(counts.sum(), 1)
    ax.bar(
        edges[:-1],
        share,
        width=np.diff(edges),
        align="edge",
        alpha=0.25,
        color="C1",
        label="share of examples",
    )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("predicted probability (bin mean)")
    ax.set_ylabel("observed frequency")
    ax.set_title(f"{title}: ECE {float(table['ece']):.3f}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, format="png", facecolor="white")
    return path


def segmentation_figure(image, true_mask, predictions: dict, path, *, title: str = "") -> Path:
    """A PNG of one slice per prediction: the image in grey, the reference outline in green and
    the predicted outline in red, each panel titled with its name and the slice's Dice.

    Args:
        image: the slice (H, W) or (H, W, 1), any range (shown from its own min to max).
        true_mask: the reference mask of the slice (H, W), nonzero = foreground.
        predictions: name -> predicted mask (H, W), one panel each, in order.
        path: the PNG to write (its folder is created).
        title: a line above the panels.

    Returns:
        The path written.

    Raises:
        DataError: no predictions, or masks whose shape is not the image's.
    """
    shown = _as_display(image)
    truth = np.asarray(true_mask) != 0
    masks = {name: np.asarray(m) != 0 for name, m in predictions.items()}
    if not masks or any(m.shape != shown.shape for m in (truth, *masks.values())):
        raise DataError(
            f"segmentation_figure: image {shown.shape}, reference {truth.shape} and predictions "
            f"{[m.shape for m in masks.values()]}; give at least one prediction, every mask of the "
            "image's (H, W) shape."
        )
    _, MplFigure = _mpl()
    fig = MplFigure(figsize=(3.6 * len(masks), 3.9), dpi=DPI, facecolor="white",
                    layout="constrained")
    for i, (name, pred) in enumerate(masks.items()):
        ax = fig.add_subplot(1, len(masks), i + 1)
        ax.imshow(shown, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        for mask, colour in ((truth, "lime"), (pred, "red")):
            if mask.any():
                ax.contour(mask.astype(np.float32), levels=[0.5], colors=colour, linewidths=1.2)
        total = truth.sum() + pred.sum()
        dice = 2.0 * (truth & pred).sum() / total if total else 1.0
        ax.set_title(f"{name}\nslice Dice {dice:.3f} (green: reference, red: predicted)",
                     fontsize=8)
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, format="png", facecolor="white")
    return path


def image_grid(images, path, *, value_range=None, columns: int = 8) -> Path:
    """A PNG of grey-scale images (N, H, W[, 1]) tiled row by row, one pixel per pixel with a
    1-pixel gap (samples, translations, reconstructions). ``value_range`` (low, high) maps to
    black..white (default: the images' own min..max)."""
    images = np.asarray(images, np.float32)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim != 3 or not len(images):
        raise DataError(f"image_grid: images of shape {images.shape}; give (N, H, W) or "
                        "(N, H, W, 1) grey-scale images, N >= 1.")
    lo, hi = value_range if value_range is not None else (images.min(), images.max())
    n, h, w = images.shape
    cols = max(1, min(int(columns), n))
    rows = math.ceil(n / cols)
    canvas = np.ones(((h + 1) * rows - 1, (w + 1) * cols - 1), np.float32)
    scaled = np.clip((images - lo) / max(float(hi - lo), 1e-12), 0.0, 1.0)
    for i, image in enumerate(scaled):
        r, c = divmod(i, cols)
        canvas[r * (h + 1):r * (h + 1) + h, c * (w + 1):c * (w + 1) + w] = image
    _mpl()
    from matplotlib import image as mpl_image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mpl_image.imsave(path, canvas, cmap="gray", vmin=0.0, vmax=1.0, format="png")
    return path
