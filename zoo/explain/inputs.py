"""What an explanation is given: a batch of images (B, H, W, C) or volumes (B, D, H, W, C)
that fits the model's one input, checked before any gradient so that a wrong shape is a
ZooError naming the input, the cause and the fix, not a TensorFlow traceback."""

from __future__ import annotations

import numpy as np

from zoo.errors import DataError, InputShapeError, InvalidArgumentError


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


def _match_channels(array: np.ndarray, chans: int, what: str) -> np.ndarray:
    """``array`` (channels last) with ``chans`` channels: grey repeated, colour averaged to grey,
    RGBA's alpha dropped; any other mismatch is a DataError naming ``what``."""
    if array.shape[-1] == 4 and chans != 4:
        array = array[..., :3]
    if array.shape[-1] == chans:
        return array
    if array.shape[-1] == 1:
        return np.repeat(array, chans, axis=-1)
    if chans == 1:
        return array.mean(axis=-1, keepdims=True)
    raise DataError(f"{what} has {array.shape[-1]} channels and the model takes {chans}; "
                    f"give a grey image or one with {chans}.")


def fit_image(image: np.ndarray, shape, what: str = "the image") -> np.ndarray:
    """An (H, W, C) image with the channels and (fixed) size of a 2D model's input ``shape``.

    Args:
        image: (H, W, C) pixel values.
        shape: the model's input shape without the batch axis, (H or None, W or None, C).
        what: the image's name for messages.

    Returns:
        (H, W, C) float32, resized bilinearly where the model fixes a size.

    Raises:
        DataError: the channel counts cannot be matched.
    """
    from keras import ops

    h, w, chans = shape
    image = _match_channels(image, chans, what)
    size = (h or image.shape[0], w or image.shape[1])
    if image.shape[:2] != size:
        image = ops.convert_to_numpy(ops.image.resize(image, size, interpolation="bilinear"))
    return image.astype(np.float32)


def fit_volume(volume: np.ndarray, shape, what: str = "the volume") -> np.ndarray:
    """A (D, H, W, C) volume with the channels and (fixed) size of a 3D model's input ``shape``.

    Resized with the maps' mirrored trilinear sampling (zoo.explain.cam.upsample_volume), so a
    volume and its heat map are sampled alike.

    Args:
        volume: (D, H, W, C) values.
        shape: the model's input shape without the batch axis, (D, H, W, C) with None for free.
        what: the volume's name for messages.

    Returns:
        (D, H, W, C) float32.

    Raises:
        DataError: the channel counts cannot be matched.
    """
    from zoo.explain.cam import upsample_volume

    *size, chans = shape
    volume = _match_channels(volume, chans, what)
    size = tuple(s or n for s, n in zip(size, volume.shape[:3], strict=True))
    if volume.shape[:3] != size:
        volume = np.moveaxis(upsample_volume(np.moveaxis(volume, -1, 0), size), 0, -1)
    return volume.astype(np.float32)


def fit_to_model(image, model, path="IMAGE") -> np.ndarray:
    """``image`` (H, W, C) or volume (D, H, W, C) fitted to ``model``'s input, batch of one.

    Args:
        image: the pixel values, channels last.
        model: the 2D or 3D model to explain.
        path: the file the image came from, for messages.

    Returns:
        (1, *spatial, C) float32 at the model's input size and channels.
    """
    shape = tuple(model.inputs[0].shape[1:])
    fit = fit_volume if len(shape) == 4 else fit_image
    return fit(image, shape, f"{str(path)!r}")[None]
