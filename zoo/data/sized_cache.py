"""The decode cache at the model's input: every 2D frame resized and windowed once, read back by
TensorFlow.

What the slice and 2.5D samplers do to a frame before augmentation does not depend on the epoch:
the physical values (HU for CT) resized as ``tf.image.resize(antialias=True)`` does (its weights,
applied as sparse products: equal to float round-off, 5x faster here), then the
window (or scaling) affine into the model's input range. Done per sample in every epoch it
capped a warm epoch at a few hundred slices per second on two cores (the resize, and TensorFlow's
element-wise kernels, which this build runs without AVX); done once here, a warm epoch is a file
read, augmentation and batching, all in TensorFlow's C++ (no Python per element), so it also runs
on tf.data service workers. Augmentation is never cached: it runs on every batch.

One file per frame: ``<cache_dir>/sized-v2/<item key>.<H>x<W>.<variant>.<frame>.f32``, raw
little-endian float32 ``(H, W, C)``; ``variant`` hashes what else decides the values (the
window affine, the output range, colour averaged for a grey model), so each window choice has
its own files. Files are written to a temporary name and renamed, frames in order, so a frame
file that exists is whole and an item whose last frame exists is complete.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SIZED_DIR = "sized-v2"  # bump the version when the resize (method, antialias) changes
# v1: float64 resize weights; v2: float32 weights (equal to TensorFlow's kernel on the benchmark's
# CT, faster): v1 files differ by round-off and are never read (a fresh cache is built beside them)
CHUNK = 16  # frames resized per TensorFlow call: amortises the call, bounds the memory


class Writer:
    """Work on one background thread, in order: file writes (atomic) and the sized cache's
    resizing, so decoding in the calling thread does not wait for them.

    At most ``limit`` bytes of queued work wait (their data held in memory); ``close`` (or
    leaving the ``with`` block) waits for all of it and re-raises the first error.
    """

    def __init__(self, limit: int = 256 << 20):
        self._pool = ThreadPoolExecutor(max_workers=1)
        self._pending: deque[tuple[Future, int]] = deque()
        self._queued, self._limit = 0, limit

    def call(self, fn, *args, nbytes: int = 0) -> None:
        """Run ``fn(*args)`` on the thread; ``nbytes``: the memory its arguments hold."""
        while self._pending and self._queued + nbytes > self._limit:
            self._wait_oldest()
        self._pending.append((self._pool.submit(fn, *args), nbytes))
        self._queued += nbytes

    def submit(self, target: Path, write, nbytes: int = 0) -> None:
        """``write(temporary path)`` then rename onto ``target``."""
        self.call(write_atomic, Path(target), write, nbytes=nbytes)

    def _wait_oldest(self) -> None:
        future, nbytes = self._pending.popleft()
        self._queued -= nbytes
        future.result()

    def close(self) -> None:
        try:
            while self._pending:
                self._wait_oldest()
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


def window_np(x: np.ndarray, affine: np.ndarray, out_range) -> np.ndarray:
    """``clip(x * a + b, 0, 1)`` scaled to ``out_range``: the pipeline's one normalisation
    formula (x broadcasts against the channels of the (2, C) float32 affine). float32 throughout,
    so it equals ``window_tf`` value for value.

    One channel at a time over contiguous planes: numpy's broadcast over a last axis of 3 runs
    an inner loop of 3 elements, 4x slower than these plane-wide operations."""
    lo, hi = out_range
    chans = np.broadcast_shapes(x.shape[-1:], affine.shape[-1:])[0]
    y = np.empty((*x.shape[:-1], chans), np.float32)
    for k in range(chans):
        i, j = (0 if x.shape[-1] == 1 else k), (0 if affine.shape[-1] == 1 else k)
        v = np.multiply(x[..., i], affine[0, j], dtype=np.float32)
        v += affine[1, j]
        np.clip(v, 0.0, 1.0, out=v)
        v *= np.float32(hi - lo)
        v += np.float32(lo)
        y[..., k] = v
    return y


def window_tf(x, affine, out_range):
    """``window_np`` in TensorFlow."""
    import tensorflow as tf

    lo, hi = out_range
    return tf.clip_by_value(x * affine[0] + affine[1], 0.0, 1.0) * (hi - lo) + lo


@functools.lru_cache(maxsize=32)
def resize_matrix(n_in: int, n_out: int):
    """(n_out, n_in) sparse float32 weights of ``tf.image.resize(antialias=True)`` along one axis.

    TensorFlow's ``ScaleAndTranslate`` span computation (triangle kernel, widened by the
    downscale factor, each row normalised to sum 1) redone in float32 scalars step by step:
    bit-equal to TensorFlow's own weights (tested), without importing TensorFlow, so decode
    worker processes size frames with only numpy and scipy loaded.
    """
    from scipy import sparse

    f32 = np.float32
    inv_scale = f32(1.0 / float(f32(n_out) / f32(n_in)))
    widen = max(inv_scale, f32(1.0))  # antialiasing: the kernel spans the pixels it averages
    shrink = f32(1.0) / widen
    weights = np.zeros((n_out, n_in), np.float32)
    for x in range(n_out):
        centre = f32(x + 0.5) * inv_scale
        start = min(max(math.ceil(f32(centre - widen - f32(0.5))), 0), n_in - 1)
        end = min(max(math.floor(f32(centre + widen - f32(0.5))), 0), n_in - 1) + 1
        row = [max(f32(1.0) - abs(f32((f32(s + 0.5) - centre) * shrink)), f32(0.0))
               for s in range(start, end)]
        total = f32(0.0)
        for w in row:  # summed in order, in float32, as TensorFlow does
            total = f32(total + w)
        if abs(total) >= 1000 * np.finfo(np.float32).tiny:
            weights[x, start:end] = [f32(w * (f32(1.0) / total)) for w in row]
    return sparse.csr_matrix(weights)


def resize(frames: np.ndarray, size) -> np.ndarray:
    """(F, H, W, C) -> (F, h, w, C) float32: ``tf.image.resize(antialias=True)`` to float32
    round-off (equal on CT slices, measured), as two float32 sparse products; 7x faster than
    TensorFlow's kernel, which this build compiles without AVX."""
    rows, cols = resize_matrix(frames.shape[1], size[0]), resize_matrix(frames.shape[2], size[1])
    out = np.empty((len(frames), *size, frames.shape[-1]), np.float32)
    for f, frame in enumerate(frames):
        for c in range(frames.shape[-1]):
            out[f, ..., c] = (cols @ (rows @ frame[..., c]).T).T
    return out


def prepare(frames: np.ndarray, recipe: Recipe) -> np.ndarray:
    """(F, H, W, c) physical values -> (F, h, w, C) float32 model input, as the pipeline always
    did per sample: colour averaged for a grey model, resized (bilinear, antialiased), windowed
    (numpy: TensorFlow's element-wise kernels run without AVX in this build)."""
    x = np.asarray(frames, np.float32)
    if recipe.grey:
        x = x.mean(axis=-1, keepdims=True)
    x = resize(x, recipe.size)
    return window_np(x, np.asarray(recipe.affine, np.float32), recipe.out_range)


def missing(files: list[str]) -> bool:
    """True unless every frame file is there (they are written in order: the last one last)."""
    return not Path(files[-1]).exists()


def write_item(files: list[str], frames: np.ndarray, recipe: Recipe) -> None:
    """Prepare an item's frames (F, H, W, c) and write one file per frame, in order."""
    Path(files[0]).parent.mkdir(parents=True, exist_ok=True)
    for start in range(0, len(files), CHUNK):
        for k, frame in enumerate(prepare(frames[start:start + CHUNK], recipe)):
            write_atomic(Path(files[start + k]), np.ascontiguousarray(frame, "<f4").tofile)
