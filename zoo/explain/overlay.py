"""Heat-map overlays written as PNG with zlib alone (PIL is not a dependency of the zoo)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

from zoo.errors import DataError

COLOR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> PNG colour type (grey, grey+alpha, RGB, RGBA)


def write_png(path, array) -> Path:
    """Write an (H, W) or (H, W, 1|2|3|4) uint8 array as an 8-bit PNG."""
    a = np.asarray(array)
    if a.ndim == 2:
        a = a[..., None]
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[-1] not in COLOR_TYPES:
        raise DataError(f"write_png: got {a.dtype} {a.shape}; give uint8 (H, W) or (H, W, 1-4).")
    h, w, c = a.shape
    rows = np.concatenate([np.zeros((h, 1), np.uint8), a.reshape(h, w * c)], axis=1)  # filter 0 per row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, 8, COLOR_TYPES[c], 0, 0, 0)
    path = Path(path)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)) + chunk(b"IEND", b""))
    return path


def _unit(x):
    x = np.asarray(x, np.float32)
    lo, hi = float(np.min(x)), float(np.max(x))
    return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)


def jet(values) -> np.ndarray:
    """The 'jet' colour map of values in [0, 1] -> float RGB in [0, 1] (blue low, red high)."""
    v = np.clip(np.asarray(values, np.float32), 0.0, 1.0)[..., None]
    return np.clip(1.5 - np.abs(4.0 * v - np.array([3.0, 2.0, 1.0], np.float32)), 0.0, 1.0)


def overlay(image, heat, alpha: float = 0.45) -> np.ndarray:
    """uint8 RGB: the image (scaled to its own range, grey or RGB) blended with the jet-coloured heat map."""
    image, heat = np.asarray(image, np.float32), np.asarray(heat, np.float32)
    if image.ndim == 3 and image.shape[-1] in (1, 3, 4):
        image = image[..., :3]
    elif image.ndim != 2:
        raise DataError(f"overlay: image of shape {image.shape}; give (H, W) or (H, W, 1|3|4).")
    if heat.shape != image.shape[:2]:
        raise DataError(f"overlay: heat map {heat.shape} and image {image.shape[:2]} differ; upsample the map first.")
    if not 0.0 <= alpha <= 1.0:
        raise DataError(f"overlay: alpha={alpha} must be in [0, 1].")
    base = _unit(image)
    base = np.repeat(base[..., None], 3, -1) if base.ndim == 2 else np.broadcast_to(base, (*base.shape[:2], 3))
    mixed = (1.0 - alpha) * base + alpha * jet(_unit(heat))
    return np.round(mixed * 255.0).astype(np.uint8)


def save_overlay(path, image, heat, alpha: float = 0.45) -> Path:
    """Write ``overlay(image, heat, alpha)`` as a PNG at ``path``."""
    return write_png(path, overlay(image, heat, alpha))
