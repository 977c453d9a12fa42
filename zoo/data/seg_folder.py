"""A segmentation folder: ``images/`` and ``masks/``, one file per case under the same name.

The layout ``zoo evaluate`` scores a segmenter on and ``zoo finetune --task segmentation``
trains one from::

    DATA/images/<name>.npy | .nii.gz | .nii     one image or volume per case ((D, H, W[, C]) or
                                                (H, W[, C])), in the model's input range
    DATA/masks/<name>.<same or other suffix>    its integer label map (spatial shape only)

Cases pair by name (the file name without its suffix). ``.npy`` arrays carry no geometry; NIfTI
images are read by ``zoo.data.nifti.read_nifti`` and a NIfTI mask onto its image's grid by
``zoo.data.masks.read_mask``, so a mask drawn on another grid is refused.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zoo.errors import DataError

SUFFIXES = (".nii.gz", ".nii", ".npy")


def _stem(path: Path) -> str | None:
    for suffix in SUFFIXES:
        if path.name.endswith(suffix) and len(path.name) > len(suffix):
            return path.name[: -len(suffix)]
    return None


def _by_name(folder: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        name = _stem(path)
        if name is None or not path.is_file():
            continue
        if name in out:
            raise DataError(
                f"{folder}: {out[name].name} and {path.name} are both case {name!r}; keep one "
                "file per case."
            )
        out[name] = path
    return out


def is_segmentation_folder(data) -> bool:
    """Whether ``data`` has the ``images/`` + ``masks/`` layout (module docstring).

    Args:
        data: a folder path.

    Returns:
        True when both sub-folders exist.
    """
    data = Path(data)
    return (data / "images").is_dir() and (data / "masks").is_dir()


def segmentation_cases(data) -> list[tuple[str, Path, Path]]:
    """(name, image path, mask path) of every case of a segmentation folder, sorted by name.

    Args:
        data: a folder with ``images/`` and ``masks/`` (module docstring).

    Returns:
        One triple per case.

    Raises:
        DataError: a missing sub-folder, no cases, or an image without a mask (or the reverse).
    """
    data = Path(data)
    if not is_segmentation_folder(data):
        raise DataError(
            f"{data}: a segmentation set needs images/ and masks/ sub-folders with one file per "
            f"case ({', '.join(SUFFIXES)}) under the same name."
        )
    images, masks = _by_name(data / "images"), _by_name(data / "masks")
    unpaired = sorted(set(images) ^ set(masks))
    if unpaired:
        raise DataError(
            f"{data}: cases {unpaired[:5]} have an image without a mask or a mask without an "
            "image; give both, under the same name, in images/ and masks/."
        )
    if not images:
        raise DataError(f"{data}: images/ holds no {', '.join(SUFFIXES)} files.")
    return [(n, images[n], masks[n]) for n in sorted(images)]


def read_case(path, reference=None):
    """(array, spacing in mm or None, volume or None) of one image or mask file.

    ``.npy`` files have no geometry (spacing None). NIfTI images are read by
    ``zoo.data.nifti.read_nifti`` ((z, y, x) order); a NIfTI mask given the image's volume as
    ``reference`` is read by ``zoo.data.masks.read_mask`` onto that image's grid, so a mask drawn
    on another grid is refused instead of scored against the wrong voxels.

    Args:
        path: a ``.npy``, ``.nii`` or ``.nii.gz`` file.
        reference: the image's volume, for a NIfTI mask (None: read as an image).

    Returns:
        The array, its voxel size per axis (or None) and the NIfTI volume (or None).

    Raises:
        DataError: an unreadable file, or a mask not on its image's grid.
    """
    path = Path(path)
    if path.name.endswith(".npy"):
        try:
            return np.load(path, allow_pickle=False), None, None
        except (OSError, ValueError) as e:
            raise DataError(
                f"{path}: not a readable .npy array ({e}); save it with np.save."
            ) from None
    if reference is not None:
        from zoo.data.masks import read_mask

        mask = read_mask(path, reference)
        return mask.array, tuple(float(s) for s in reference.spacing), None
    from zoo.data.nifti import read_nifti

    volume = read_nifti(path)
    return volume.array, tuple(float(s) for s in volume.spacing), volume


def _training_pair(name: str, image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(image with a channel axis, float32; integer label map) of one case, checked."""
    if mask.ndim == image.ndim and mask.shape[-1] == 1 and mask.shape[:-1] == image.shape[:-1]:
        mask = mask[..., 0]  # a label map saved with a channel axis, beside a channelled image
    if image.shape == mask.shape:
        image = image[..., None]
    if image.ndim != mask.ndim + 1 or image.shape[:-1] != mask.shape or mask.ndim not in (2, 3):
        raise DataError(
            f"case {name!r}: image of shape {image.shape} and mask of shape {mask.shape}; give a "
            "2D or 3D image (channels last, optional) and a label map of its spatial shape."
        )
    if not np.issubdtype(mask.dtype, np.integer) and not np.array_equal(mask, np.round(mask)):
        raise DataError(
            f"case {name!r}: the mask holds fractional values; give integer class labels "
            "(0 = background)."
        )
    return image.astype(np.float32), mask.astype(np.int32)


def load_segmentation_folder(folder) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Every case of a segmentation folder in memory, for training.

    Args:
        folder: a folder with ``images/`` and ``masks/`` (module docstring).

    Returns:
        (images (N, *spatial, C) float32, label maps (N, *spatial) int32, case names), sorted
        by name.

    Raises:
        DataError: a bad folder or file, an image and mask that do not match, a fractional mask,
            or cases of different shapes.
    """
    images, masks, names = [], [], []
    for name, image_path, mask_path in segmentation_cases(folder):
        image, _, volume = read_case(image_path)
        mask, _, _ = read_case(mask_path, reference=volume)
        image, mask = _training_pair(name, np.asarray(image), np.asarray(mask))
        images.append(image)
        masks.append(mask)
        names.append(name)
    shapes = sorted({im.shape for im in images})
    if len(shapes) > 1:
        raise DataError(
            f"{folder}: cases of several shapes {shapes[:4]}; training in memory takes one shape: "
            "crop or pad them to one size (or cut patches with "
            "zoo.data.seg_dataset.segmentation_dataset)."
        )
    return np.stack(images), np.stack(masks), names
