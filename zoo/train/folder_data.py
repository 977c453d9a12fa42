"""A labelled image folder for ``zoo finetune --data``: images (.npy or .png) and a labels CSV.

``labels.csv`` is the zoo's one labels format, ``path,label[,patient]``, read by
``zoo.data.labels.read_labels``: ``path`` relative to the folder, ``label`` an integer class or
a class name (names are numbered in sorted order). The old ``file`` column still reads, with a
FutureWarning.
Pixel values are kept as stored (PNG 8 or 16 bit, any .npy number type) as float32, since
the zoo's models take raw values and normalise inside.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zoo.data.labels import read_labels
from zoo.errors import DataError

SUFFIXES = (".npy", ".png")


def _read_image(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataError(
            f"{path}: listed in the labels CSV but not found; fix the CSV or add the file."
        )
    if path.suffix == ".npy":
        image = np.load(path, allow_pickle=False)
    elif path.suffix == ".png":
        import tensorflow as tf

        try:
            image = tf.io.decode_png(
                path.read_bytes(), dtype=tf.uint16 if _png_bit_depth(path) == 16 else tf.uint8
            ).numpy()
        except tf.errors.InvalidArgumentError as e:
            raise DataError(f"{path}: not a readable PNG ({e.message.splitlines()[0]}).") from None
    else:
        raise DataError(
            f"{path}: unsupported image type {path.suffix!r}; use {' or '.join(SUFFIXES)}."
        )
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or not np.issubdtype(image.dtype, np.number):
        raise DataError(
            f"{path}: an image must be a (H, W) or (H, W, C) numeric array, got {image.shape} "
            f"{image.dtype}."
        )
    return image.astype(np.float32)


def _png_bit_depth(path: Path) -> int:
    header = path.read_bytes()[:25]
    return header[24] if len(header) == 25 and header[:8] == b"\x89PNG\r\n\x1a\n" else 8


def read_folder_labels(folder, labels_csv: str = "labels.csv", classes=None):
    """The labels CSV of a data folder, read by ``zoo.data.labels.read_labels`` and checked for
    fine-tuning: the CSV exists, every listed path exists and the labels are classes.

    Shared by the image folders here and the DICOM folders of ``zoo.train.dicom_folder``.

    Args:
        folder: the data folder.
        labels_csv: the CSV's name inside ``folder``.
        classes: the class names by index (e.g. the training folder's, for a validation folder).

    Returns:
        The ``zoo.data.labels.Labels`` of the CSV (paths resolved against ``folder``).

    Raises:
        DataError: no CSV, a listed path missing (``LabelsError`` naming it), or fractional labels.
    """
    table = Path(folder) / labels_csv
    if not table.is_file():
        raise DataError(f"{table} not found: a data folder needs a labels CSV with the header "
                        "path,label "
                        "(paths relative to the folder).")
    labels = read_labels(table, classes=classes)
    if labels.classes is None:
        raise DataError(f"{table}: the labels are fractional numbers; fine-tuning takes "
                        "classes (integers "
                        ">= 0 or class names).")
    return labels


def load_labelled_folder(folder, labels_csv: str = "labels.csv",
                         classes=None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(images (N, H, W, C) float32, labels (N,) int32, class names) from ``folder``.

    classes: the class names by index (e.g. the training folder's, for a validation folder).
    """
    folder = Path(folder)
    labels = read_folder_labels(folder, labels_csv, classes)
    images = [_read_image(path) for path in labels.paths]
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise DataError(
            f"{folder}: images of several shapes {sorted(shapes)[:4]}; resize them to one size "
            "first."
        )
    return np.stack(images), labels.labels, list(labels.classes)
