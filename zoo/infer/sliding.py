"""Sliding-window inference of dense (per-pixel / per-voxel) models on images and volumes larger
than their window, in 2D and 3D, with overlapping windows blended by a Gaussian or constant weight.

Windows start at 0 and step by ``roi * (1 - overlap)`` (rounded down to a multiple of ``align``);
the last window along each axis ends at the border. Each output pixel is the weighted mean of
the windows covering it.

Exact stitching. A window's outputs within the network's receptive-field radius of the window's
edge see the window's zero padding, not the image, so they differ from a whole-image pass.
``margin`` gives those pixels weight zero (except on sides where the window touches the image
border, whose padding the whole-image pass shares), and ``align`` keeps window positions on
the network's grid (a U-Net of depth d is shift-equivariant only by multiples of 2**d). With
``margin`` >= the receptive-field radius (``zoo.receptive_field(model)``), ``align`` = the
network's divisor and ``overlap`` large enough that the trusted centres tile the image, the
stitched output equals the whole-image forward pass to float round-off.
"""

from __future__ import annotations

import itertools

import numpy as np

from zoo.errors import InputShapeError, InvalidArgumentError
from zoo.registry import Registry

BLENDS = Registry("blend", ("gaussian", "constant"), argument="blend")
SIGMA_SCALE = 0.125  # Gaussian sigma as a fraction of the window (MONAI's default)


def _per_axis(value, dims: int, what: str) -> tuple[int, ...]:
    values = tuple(value) if isinstance(value, list | tuple) else (value,) * dims
    if len(values) != dims or any(
        not isinstance(v, int | np.integer) or isinstance(v, bool) for v in values
    ):
        raise InvalidArgumentError(
            f"{what}={value!r}: give an integer or {dims} integers (one per spatial axis)."
        )
    return tuple(int(v) for v in values)


def _positions(size: int, roi: int, step: int, align: int, axis: int) -> list[int]:
    if (size - roi) % align:
        raise InputShapeError(
            f"axis {axis}: image size {size} minus window {roi} is not a multiple of "
            f"align={align}, "
            f"so the last window would leave the network's grid; pad or crop the image to "
            f"{roi + (size - roi) // align * align} or {roi + ((size - roi) // align + 1) * align}."
        )
    starts = list(range(0, size - roi + 1, step))
    if starts[-1] != size - roi:
        starts.append(size - roi)
    return starts


def _base_weight(roi: int, blend: str) -> np.ndarray:
    if blend == "constant":
        return np.ones(roi, np.float64)
    centre, sigma = (roi - 1) / 2, SIGMA_SCALE * roi
    w = np.exp(-0.5 * ((np.arange(roi) - centre) / sigma) ** 2)
    return np.maximum(w / w.max(), 1e-3)  # no pixel of an image may end up with zero total weight


def _call(model, x: np.ndarray) -> list:
    from zoo.infer.predictor import Predictor, _as_list

    if isinstance(model, Predictor):
        return _as_list(model.predict(x))
    if hasattr(model, "get_weights"):  # a Keras model: called directly, not through predict
        return _as_list(model(x, training=False))
    return _as_list(model(x))


def sliding_window(
    model,
    x,
    roi=None,
    overlap: float = 0.25,
    blend: str = "gaussian",
    *,
    margin=0,
    align=1,
    batch: int = 8,
):
    """Run the dense ``model`` over ``x`` window by window and stitch the outputs.

    Args:
        model: a Keras model (called directly), a ``zoo.compile_for_inference`` predictor, or any
            function from a batch of windows to dense outputs of the windows' spatial size.
        x: numpy array (N, H, W, C) or (N, D, H, W, C), raw values as the model takes them.
        roi: window size, an int or one per spatial axis; default the model's static input size.
        overlap: fraction of the window shared by neighbours, in [0, 1).
        blend: ``"gaussian"`` (centre-weighted) or ``"constant"`` (plain mean).
        margin: pixels at each window edge given no weight (see the module docstring).
        align: window positions are multiples of this (the network's divisor).
        batch: windows per model call.

    Returns:
        The stitched output(s), float32 (N, *spatial, K); a list for a model with several outputs.
    """
    BLENDS.check(blend)
    x = np.asarray(x, np.float32)
    roi = _resolve_roi(model, x, roi)
    dims, spatial = x.ndim - 2, x.shape[1:-1]
    margin, align = _per_axis(margin, dims, "margin"), _per_axis(align, dims, "align")
    _check_options(overlap, batch)
    starts = [
        _axis_starts(axis, spatial, r, m, a, overlap, roi)
        for axis, (r, m, a) in enumerate(zip(roi, margin, align, strict=True))
    ]
    base = [_base_weight(r, blend) for r in roi]

    def weight(axis: int, start: int) -> np.ndarray:
        w = base[axis].copy()
        m = margin[axis]
        if m and start > 0:
            w[:m] = 0.0
        if m and start + roi[axis] < spatial[axis]:
            w[roi[axis] - m :] = 0.0
        return w

    windows = [(n, pos) for n in range(len(x)) for pos in itertools.product(*starts)]
    sums, norm = None, np.zeros((len(x), *spatial, 1), np.float64)
    for first in range(0, len(windows), batch):
        chunk = windows[first : first + batch]
        slices = [
            (n, tuple(slice(p, p + r) for p, r in zip(pos, roi, strict=True))) for n, pos in chunk
        ]
        outs = _call(model, np.stack([x[(n, *sl)] for n, sl in slices]))
        if sums is None:
            sums = _output_sums(outs, roi, len(x), spatial)
        for k, ((n, sl), (_, pos)) in enumerate(zip(slices, chunk, strict=True)):
            w = weight(0, pos[0])
            for axis in range(1, dims):
                w = np.multiply.outer(w, weight(axis, pos[axis]))
            w = w[..., None]
            norm[(n, *sl)] += w
            for total, o in zip(sums, outs, strict=True):
                total[(n, *sl)] += w * o[k]
    results = [(s / norm).astype(np.float32) for s in sums]
    return results[0] if len(results) == 1 else results


def _resolve_roi(model, x: np.ndarray, roi) -> tuple[int, ...]:
    """The window size per spatial axis, checked against ``x``'s rank and the model's input."""
    if x.ndim not in (4, 5):
        raise InputShapeError(
            f"sliding_window: x has shape {x.shape}; give (N, H, W, C) images or (N, D, H, W, C) "
            "volumes (add the batch axis with x[None])."
        )
    dims, spatial = x.ndim - 2, x.shape[1:-1]
    model_shape = tuple(model.inputs[0].shape[1:-1]) if hasattr(model, "inputs") else (None,) * dims
    if len(model_shape) != dims:
        raise InputShapeError(
            f"sliding_window: x has {dims} spatial axes {spatial}; the model takes "
            f"{len(model_shape)}."
        )
    if roi is None:
        if None in model_shape:
            raise InvalidArgumentError(
                "sliding_window: the model takes any size, so give roi= (the window size, "
                "e.g. the training patch size)."
            )
        roi = model_shape
    roi = _per_axis(roi, dims, "roi")
    if any(s is not None and s != r for s, r in zip(model_shape, roi, strict=True)):
        raise InputShapeError(
            f"sliding_window: roi={roi} but the model takes windows of {model_shape} only; "
            f"use roi={model_shape} or build the model with input_shape={roi}."
        )
    return roi


def _check_options(overlap, batch) -> None:
    """InvalidArgumentError for an overlap outside [0, 1) or a batch that is not a count."""
    if not (0 <= overlap < 1):
        raise InvalidArgumentError(f"overlap={overlap!r}: give a fraction in [0, 1), e.g. 0.25.")
    if not isinstance(batch, int) or batch < 1:
        raise InvalidArgumentError(f"batch={batch!r}: give a positive integer.")


def _axis_starts(axis, spatial, r, m, a, overlap, roi) -> list[int]:
    """Window starts along one axis, after checking that the trusted centres cover the image."""
    size = spatial[axis]
    if r < 1 or r > size:
        raise InputShapeError(
            f"roi={roi}: the window ({r}) is larger than the image ({size}) along spatial axis "
            f"{axis}; give a roi no larger than {tuple(spatial)}, or pad the image first "
            "(np.pad) to at least the window."
        )
    if a < 1 or m < 0 or 2 * m >= r:
        raise InvalidArgumentError(
            f"align={a}, margin={m} on axis {axis}: need align >= 1 and 0 <= 2*margin < roi "
            f"({r})."
        )
    step = max(a, int(r * (1 - overlap)) // a * a)
    if step > r - 2 * m and size > r:
        need = (r - (r - 2 * m) // a * a) / r
        raise InvalidArgumentError(
            f"overlap={overlap} on axis {axis}: windows of {r} step by {step}, more than "
            f"the {r - 2 * m} pixels left inside margin={m}, so some pixels would get no "
            f"trusted output; use overlap >= {need:.3f} or a smaller margin."
        )
    return _positions(size, r, step, a, axis)


def _output_sums(outs, roi, n: int, spatial) -> list[np.ndarray]:
    """Zeroed accumulators per model output, once the first call shows the outputs are dense."""
    for o in outs:
        if o.shape[1:-1] != roi:
            raise InputShapeError(
                f"sliding_window: the model maps a {roi} window to {o.shape[1:]}; it "
                "stitches dense outputs the size of the window (segmentation, "
                "per-pixel maps) only."
            )
    return [np.zeros((n, *spatial, o.shape[-1]), np.float64) for o in outs]
