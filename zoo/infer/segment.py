"""Whole-image and whole-volume segmentation: sliding windows, test-time flips, and
largest-connected-component post-processing.

``segment`` runs ``zoo.infer.sliding.sliding_window`` (the one stitching implementation) once
per flip combination and turns the averaged probabilities into a label map.

Test-time flips. ``tta_flips=True`` flips over every spatial axis, a tuple flips over the given
spatial axes (0 = the first spatial axis: z of a (D, H, W) volume, y of an (H, W) image). Every
one of the 2**k combinations of the k axes is used, the unflipped input included (nnU-Net's
mirroring: 8 passes in 3D, 4 in 2D): each pass flips the input, predicts, flips the prediction
back, and the probabilities are averaged with equal weights.

Largest connected component. Per foreground class, voxels outside that class's largest
connected component are set to background (0; for multi-label masks the channel is cleared),
as MONAI's ``KeepLargestConnectedComponent`` does. Connectivity is full by default (8
neighbours in 2D, 26 in 3D: voxels touching at a corner are connected); ``connectivity=1``
counts face neighbours only (4 / 6). Between components of equal size the first in raster order
is kept. Probabilities are returned as the model gave them; only the labels are cleaned.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import numpy as np

from zoo.errors import InputShapeError, InvalidArgumentError
from zoo.infer.sliding import sliding_window
from zoo.registry import Registry


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # no overflow for large |x|


ACTIVATIONS = Registry(
    "output activation", {"softmax": _softmax, "sigmoid": _sigmoid}, argument="activation",
    hint="Give activation=None when the model already ends in a softmax or sigmoid.",
)


class Segmentation(NamedTuple):
    """A segmentation: ``labels`` (*spatial) ints, or (*spatial, K) 0/1 for multi-label
    thresholds; ``probabilities`` (*spatial, K) float32, averaged over the flips."""

    labels: np.ndarray
    probabilities: np.ndarray


def flip_sets(tta_flips, dims: int) -> list[tuple[int, ...]]:
    """The flip combinations of ``tta_flips`` over ``dims`` spatial axes (module docstring).

    Args:
        tta_flips: False/None (no flips), True (all spatial axes), an axis or a tuple of axes.
        dims: the number of spatial axes (2 or 3).

    Returns:
        The combinations, the empty tuple (no flip) first: 2**k of them.

    Raises:
        InvalidArgumentError: an axis that is not one of 0..dims-1, or given twice.
    """
    if tta_flips is None or tta_flips is False:
        return [()]
    if tta_flips is True:
        axes: tuple = tuple(range(dims))
    else:
        axes = (tta_flips,) if isinstance(tta_flips, int) else tuple(tta_flips)
    if len(set(axes)) != len(axes) or not all(
        isinstance(a, int | np.integer) and not isinstance(a, bool) and 0 <= a < dims for a in axes
    ):
        raise InvalidArgumentError(
            f"tta_flips={tta_flips!r}: give True (every axis) or distinct spatial axes in "
            f"0..{dims - 1} (0 is the first spatial axis, z of a volume)."
        )
    axes = tuple(int(a) for a in axes)
    return [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]


def keep_largest_component(mask, connectivity: int | None = None) -> np.ndarray:
    """The largest connected component of a binary mask (all of it when it has at most one).

    Args:
        mask: boolean or 0/1 array, 2D or 3D.
        connectivity: 1 (face neighbours) up to the rank (full, the default).

    Returns:
        A boolean array of the mask's shape.

    Raises:
        InvalidArgumentError: a connectivity outside 1..rank.
    """
    from scipy.ndimage import generate_binary_structure, label

    m = np.asarray(mask, bool)
    structure = generate_binary_structure(m.ndim, _connectivity(connectivity, m.ndim))
    components, n = label(m, structure)
    if n <= 1:
        return m
    sizes = np.bincount(components.ravel())[1:]
    return components == int(np.argmax(sizes)) + 1


def _connectivity(connectivity, dims: int) -> int:
    if connectivity is None:
        return dims
    if isinstance(connectivity, bool) or connectivity not in range(1, dims + 1):
        raise InvalidArgumentError(
            f"connectivity={connectivity!r}: give 1 (face neighbours) up to {dims} (full, "
            f"{3 ** dims - 1} neighbours) for {dims}D labels."
        )
    return int(connectivity)


def _as_batch(model, volume) -> np.ndarray:
    """(1, *spatial, C) from one image/volume, with or without its channel axis."""
    x = np.asarray(volume, np.float32)
    inputs = getattr(model, "inputs", None)
    if inputs:
        dims = len(inputs[0].shape) - 2
        if x.ndim == dims:
            x = x[..., None]
        if x.ndim != dims + 1:
            raise InputShapeError(
                f"segment: an input of shape {x.shape} for a {dims}D model; give one "
                f"{'volume (D, H, W[, C])' if dims == 3 else 'image (H, W[, C])'} without a "
                "batch axis."
            )
    elif x.ndim not in (3, 4):
        raise InputShapeError(
            f"segment: an input of shape {x.shape}; give one image (H, W, C) or volume "
            "(D, H, W, C) with its channel axis (the model does not say its rank)."
        )
    return x[None]


def _labels(probs: np.ndarray, threshold) -> tuple[np.ndarray, list[int], bool]:
    """(labels, foreground classes, multi-label?) from (*spatial, K) probabilities."""
    k = probs.shape[-1]
    if k == 1:
        t = 0.5 if threshold is None else threshold
        return (probs[..., 0] >= t).astype(np.uint8), [1], False
    if threshold is None:
        return probs.argmax(axis=-1).astype(np.uint8 if k <= 256 else np.int32), list(
            range(1, k)
        ), False
    return (probs >= threshold).astype(np.uint8), list(range(k)), True


def _postprocess(labels, classes, multilabel, largest_component, connectivity) -> np.ndarray:
    """Largest connected component per chosen foreground class (module docstring)."""
    if largest_component is False or largest_component is None:
        return labels
    if largest_component is True:
        chosen = classes
    else:
        single = isinstance(largest_component, int | np.integer)
        chosen = [largest_component] if single else list(largest_component)
    if not all(c in classes and not isinstance(c, bool) for c in chosen):
        raise InvalidArgumentError(
            f"largest_component={largest_component!r}: give True or foreground "
            f"{'channels' if multilabel else 'classes'} among {classes}."
        )
    out = labels.copy()
    for c in chosen:
        if multilabel:
            out[..., c] = keep_largest_component(labels[..., c], connectivity)
        else:
            mask = labels == c
            out[mask & ~keep_largest_component(mask, connectivity)] = 0
    return out


def _check_probabilities(probs: np.ndarray) -> None:
    low, high = float(probs.min()), float(probs.max())
    if low < -1e-4 or high > 1 + 1e-4:
        raise InvalidArgumentError(
            f"segment: the model's outputs range over [{low:.3g}, {high:.3g}], not probabilities; "
            "it ends without an activation, so give activation='softmax' (one class per voxel) "
            "or 'sigmoid' (independent channels)."
        )


def segment(
    model,
    volume,
    roi=None,
    overlap: float = 0.5,
    blend: str = "gaussian",
    *,
    tta_flips=False,
    largest_component=False,
    threshold: float | None = None,
    activation: str | None = None,
    connectivity: int | None = None,
    margin=0,
    align=1,
    batch: int = 8,
) -> Segmentation:
    """Segment one image or volume: sliding windows, optional flips, optional LCC.

    Args:
        model: a dense Keras model, a ``zoo.compile_for_inference`` predictor, or a function
            from a batch of windows to per-voxel outputs (then give the channel axis).
        volume: one image (H, W[, C]) or volume (D, H, W[, C]), without a batch axis.
        roi: window size, an int or one per spatial axis; default the model's input size.
        overlap: fraction of the window shared by neighbours, in [0, 1).
        blend: ``"gaussian"`` or ``"constant"`` weighting of overlapping windows.
        tta_flips: False, True (every spatial axis) or the spatial axes to flip; all 2**k
            combinations are averaged (module docstring).
        largest_component: False, True (every foreground class) or the classes (label values;
            channels for multi-label thresholds) to reduce to their largest component.
        threshold: one output channel: foreground where p >= threshold (default 0.5); several
            channels: None takes the argmax, a number gives multi-label (*spatial, K) masks.
        activation: None when the model outputs probabilities; ``"softmax"`` or
            ``"sigmoid"`` for logits, applied to each pass before averaging.
        connectivity: for ``largest_component``: 1 (faces) up to the rank (full, default).
        margin: window-edge pixels given no weight (``sliding_window``).
        align: window positions are multiples of this (``sliding_window``).
        batch: windows per model call.

    Returns:
        ``Segmentation(labels, probabilities)``. A model with several outputs is read at its
        first (full-resolution) output.

    Raises:
        InputShapeError: an input of the wrong rank, or smaller than the window.
        InvalidArgumentError: bad flips, classes, connectivity, or outputs that are not
            probabilities while ``activation`` is None.
        UnknownNameError: an unknown ``blend`` or ``activation``.
    """
    act = None if activation is None else ACTIVATIONS.get(activation)
    x = _as_batch(model, volume)
    dims = x.ndim - 2
    flips = flip_sets(tta_flips, dims)
    _connectivity(connectivity, dims)
    total = None
    for axes in flips:
        spatial = tuple(a + 1 for a in axes)
        out = sliding_window(model, np.flip(x, spatial) if axes else x, roi, overlap, blend,
                             margin=margin, align=align, batch=batch)
        out = np.asarray(out[0] if isinstance(out, list) else out, np.float64)
        out = act(out) if act is not None else out
        out = np.flip(out, spatial) if axes else out
        total = out if total is None else total + out
    probs = (total / len(flips))[0]
    if act is None:
        _check_probabilities(probs)
    labels, classes, multilabel = _labels(probs, threshold)
    labels = _postprocess(labels, classes, multilabel, largest_component, connectivity)
    return Segmentation(labels, probs.astype(np.float32))
