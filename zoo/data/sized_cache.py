"""The decode cache at the model's input: every 2D frame resized and windowed once, read back by
TensorFlow.

What the slice and 2.5D samplers do to a frame before augmentation does not depend on the epoch:
the physical values (HU for CT) resized with ``tf.image.resize(antialias=True)``, then the
window (or scaling) affine into the model's input range. Done per sample in every epoch it
capped a warm epoch at a few hundred slices per second on two cores (the resize, and TensorFlow's
element-wise kernels, which this build runs without AVX); done once here, a warm epoch is a file
read, augmentation and batching, all in TensorFlow's C++ (no Python per element), so it also runs
on tf.data service workers. Augmentation is never cached: it runs on every batch.

One file per frame: ``<cache_dir>/sized-v1/<item key>.<H>x<W>.<variant>.<frame>.f32``, raw
little-endian float32 ``(H, W, C)``; ``variant`` hashes what else decides the values (the
window affine, the output range, colour averaged for a grey model), so each window choice has
its own files. Files are written to a temporary name and renamed, frames in order, so a frame
file that exists is whole and an item whose last frame exists is complete.
"""

from __future__ import annotations

import hashlib
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SIZED_DIR = "sized-v1"  # bump the version when the resize (method, antialias) changes
CHUNK = 16  # frames resized per TensorFlow call: amortises the call, bounds the memory


class Writer:
    """Atomic file writes on one background thread, in order, so decoding does not wait for the
    disk.

    At most ``backlog`` writes wait (their data held in memory); ``close`` (or leaving the
    ``with`` block) waits for every write and re-raises the first error.
    """

    def __init__(self, backlog: int = 64):
        self._pool = ThreadPoolExecutor(max_workers=1)
        self._pending: deque[Future] = deque()
        self._backlog = backlog

    def submit(self, target: Path, write) -> None:
        """``write(temporary path)`` then rename onto ``target``."""
        while len(self._pending) >= self._backlog:
            self._pending.popleft().result()
        self._pending.append(self._pool.submit(write_atomic, Path(target), write))

    def close(self) -> None:
        try:
            while self._pending:
                self._pending.popleft().result()
        finally:
            self._pending.clear()
            self._pool.shutdown(wait=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def write_atomic(target: Path, write) -> None:
    """``write(temporary path)`` in the target's folder, then rename: never a half-written file."""
    tmp = target.with_name(f"{target.name}.{os.getpid()}.{id(write)}.tmp")
    write(tmp)
    os.replace(tmp, target)


@dataclass(frozen=True)
class Recipe:
    """What turns a cached item's frames into samples: output (H, W), colour averaged for a grey
    model, the (2, C) window affine ``clip(x * a + b, 0, 1)`` and the output range."""

    size: tuple[int, int]
    grey: bool
    affine: np.ndarray
    out_range: tuple[float, float]

    def variant(self) -> str:
        h = hashlib.sha256(np.asarray(self.affine, "<f4").tobytes())
        h.update(f"{self.grey}|{tuple(float(v) for v in self.out_range)}".encode())
        return h.hexdigest()[:12]


def frame_files(cache_dir: Path, key: str, frames: int, recipe: Recipe) -> list[str]:
    """The sized-cache file of each frame of the item cached under ``key``."""
    tag = f"{key}.{recipe.size[0]}x{recipe.size[1]}.{recipe.variant()}"
    folder = Path(cache_dir) / SIZED_DIR
    return [str(folder / f"{tag}.{f}.f32") for f in range(frames)]


def window_tf(x, affine, out_range):
    """``clip(x * a + b, 0, 1)`` scaled to ``out_range``, in TensorFlow (x broadcasts against the
    channels of the (2, C) affine); the pipeline's one normalisation formula."""
    import tensorflow as tf

    lo, hi = out_range
    return tf.clip_by_value(x * affine[0] + affine[1], 0.0, 1.0) * (hi - lo) + lo


def prepare(frames: np.ndarray, recipe: Recipe) -> np.ndarray:
    """(F, H, W, c) physical values -> (F, h, w, C) float32 model input, as the pipeline always
    did per sample: colour averaged for a grey model, resized (bilinear, antialiased), windowed."""
    import tensorflow as tf

    x = np.asarray(frames, np.float32)
    if recipe.grey:
        x = x.mean(axis=-1, keepdims=True)
    x = tf.image.resize(x, recipe.size, antialias=True)
    return window_tf(x, tf.constant(recipe.affine, tf.float32), recipe.out_range).numpy()


def build(native_path: str, files: list[str], recipe: Recipe, writer: Writer) -> bool:
    """Write the sized frames of one cached item unless they are there; True when it wrote."""
    if Path(files[-1]).exists():
        return False
    Path(files[0]).parent.mkdir(parents=True, exist_ok=True)
    array = np.load(native_path, mmap_mode="r")
    for start in range(0, len(files), CHUNK):
        for k, frame in enumerate(prepare(array[start:start + CHUNK], recipe)):
            data = np.ascontiguousarray(frame, "<f4")
            writer.submit(Path(files[start + k]), data.tofile)
    return True
