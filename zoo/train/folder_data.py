"""A labelled image folder for ``zoo finetune --data``: images (.npy or .png) and a labels CSV.

``labels.csv`` has a header with ``file`` and ``label`` columns; ``file`` is relative to the
folder, ``label`` an integer class or a class name (names are numbered in sorted order).
Pixel values are kept as stored (PNG 8 or 16 bit, any .npy number type) as float32, since
the zoo's models take raw values and normalise inside.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from zoo.errors import DataError

SUFFIXES = (".npy", ".png")


def _read_image(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"{path}: listed in the labels CSV but not found; fix the CSV or add the file.")
    if path.suffix == ".npy":
        image = np.load(path, allow_pickle=False)
    elif path.suffix == ".png":
        import tensorflow as tf

        try:
            image = tf.io.decode_png(path.read_bytes(), dtype=tf.uint16 if _png_bit_depth(path) == 16 else tf.uint8).numpy()
        except tf.errors.InvalidArgumentError as e:
            raise DataError(f"{path}: not a readable PNG ({e.message.splitlines()[0]}).") from None
    else:
        raise DataError(f"{path}: unsupported image type {path.suffix!r}; use {' or '.join(SUFFIXES)}.")
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or not np.issubdtype(image.dtype, np.number):
        raise DataError(f"{path}: an image must be a (H, W) or (H, W, C) numeric array, got {image.shape} {image.dtype}.")
    return image.astype(np.float32)


def _png_bit_depth(path: Path) -> int:
    header = path.read_bytes()[:25]
    return header[24] if len(header) == 25 and header[:8] == b"\x89PNG\r\n\x1a\n" else 8


def load_labelled_folder(folder, labels_csv: str = "labels.csv") -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(images (N, H, W, C) float32, labels (N,) int32, class names) from ``folder``."""
    folder = Path(folder)
    table = folder / labels_csv
    if not table.is_file():
        raise DataError(f"{table} not found: a data folder needs a CSV with 'file' and 'label' columns.")
    with open(table, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"file", "label"} <= set(rows[0]):
        raise DataError(f"{table}: needs a header with 'file' and 'label' columns and at least one row.")
    raw = [r["label"].strip() for r in rows]
    if all(v.lstrip("-").isdigit() for v in raw):
        labels = np.array([int(v) for v in raw], np.int32)
        if labels.min() < 0:
            raise DataError(f"{table}: integer labels must be >= 0.")
        names = [str(i) for i in range(labels.max() + 1)]
    else:
        names = sorted(set(raw))
        labels = np.array([names.index(v) for v in raw], np.int32)
    images = [_read_image(folder / r["file"].strip()) for r in rows]
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise DataError(f"{folder}: images of several shapes {sorted(shapes)[:4]}; resize them to one size first.")
    return np.stack(images), labels, names
