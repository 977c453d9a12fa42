"""What an explanation is given: a batch of images (B, H, W, C) or volumes (B, D, H, W, C)
that fits the model's one input, checked before any gradient so that a wrong shape is a
ZooError naming the input, the cause and the fix, not a TensorFlow traceback."""

from __future__ import annotations

import numpy as np

from zoo.errors import InputShapeError, InvalidArgumentError


def is_volume_model(model) -> bool:
    """A model of volumes (B, D, H, W, C), not of bags of tiles: a tiled bag model also takes
    rank-5 input, (B, N, H, W, C), and folds its tiles into the batch (FoldTiles) or maps a 2D
    encoder over them (TimeDistributed)."""
    bag = ("FoldTiles", "TimeDistributed")
    return (
        len(model.inputs) == 1
        and len(model.inputs[0].shape) == 5
        and not any(type(layer).__name__ in bag for layer in model.layers)
    )


def check_images(model, images, method: str = "explain", spatial: bool = True) -> np.ndarray:
    """``images`` as float32 after checking them against the model's one input, else a ZooError.

    A batch is (B, H, W, C) for a 2D model and (B, D, H, W, C) for a 3D one, with the model's
    channel count and, where the model fixes them, its spatial sizes. ``spatial=False`` (the
    gradient methods) also accepts a model of any other input rank, such as vectors (B, F).
    """
    expected, kind = _model_input(model, method, spatial)
    rank = len(expected)
    try:
        x = np.asarray(images, np.float32)
    except (TypeError, ValueError) as e:
        raise InputShapeError(
            f"{method}: images could not be read as a float array ({e}); give a numpy "
            f"array of shape {expected}."
        ) from None
    if x.ndim != rank:
        fix = _rank_fix(rank, x.ndim, kind)
        raise InputShapeError(
            f"{method}: images of shape {x.shape} for model {model.name!r}, which takes "
            f"{kind} of shape {expected}: {fix}."
        )
    if len(x) == 0:
        raise InputShapeError(f"{method}: an empty batch {x.shape}; give at least one image.")
    wrong = [i for i in range(1, rank) if expected[i] is not None and expected[i] != x.shape[i]]
    if wrong:
        fix = (
            "convert the channels (grey: repeat to 3 or average to 1)"
            if wrong == [rank - 1]
            else "resize them to the model's input size, or load the model with input_shape=..."
        )
        raise InputShapeError(
            f"{method}: images of shape {x.shape} do not fit model {model.name!r}, which "
            f"takes {expected} (axes {wrong} differ); {fix}."
        )
    if not np.isfinite(x).all():
        raise InputShapeError(
            f"{method}: the images hold NaN or infinite values; clean the input first."
        )
    return x


def _model_input(model, method: str, spatial: bool) -> tuple[tuple, str]:
    """(input shape, what it takes in words) of a model the explanation methods can explain."""
    if len(model.inputs) != 1:
        raise InvalidArgumentError(
            f"{method}: model {model.name!r} has {len(model.inputs)} inputs; the explanation "
            "methods explain a model of one image or volume input. Explain the encoder that takes "
            "one input instead."
        )
    expected = tuple(model.inputs[0].shape)
    rank = len(expected)
    kind = {4: "2D images (B, H, W, C)", 5: "3D volumes (B, D, H, W, C)"}.get(rank)
    if rank == 5 and spatial and not is_volume_model(model):
        raise InvalidArgumentError(
            f"{method}: model {model.name!r} takes {expected}: a bag of 2D tiles, not a volume. "
            "Read its 'attention' / 'instance_maps' outputs, or explain its tile encoder."
        )
    if kind is None and not spatial:
        kind = "inputs " + str(("B", *expected[1:]))
    elif kind is None:
        raise InvalidArgumentError(
            f"{method}: model {model.name!r} takes inputs of shape {expected}; the explanation "
            "methods explain 2D images (B, H, W, C) or 3D volumes (B, D, H, W, C)."
        )
    return expected, kind


def _rank_fix(rank: int, ndim: int, kind: str) -> str:
    """The fix for a batch of ``ndim`` axes given to a model taking ``rank``: the common slips."""
    if rank == 4 and ndim == 5:
        fix = (
            "a batch of 3D volumes was given to a 2D model; explain one slice at a time "
            "(volume[:, d]) or use a 3D model such as zoo.load('simple_cnn3d') or 'resnet50_3d'"
        )
    elif rank == 5 and ndim == 4:
        fix = (
            "a batch of 2D images was given to a 3D model; give volumes (B, D, H, W, C), or add a "
            "batch axis (volume[None]) to a single volume"
        )
    elif ndim == rank - 1:
        fix = "add a batch axis: images[None]"
    else:
        fix = f"give {kind}"
    return fix
