"""The decode cache at the model's input size: every 2D slice resized once, read back by TensorFlow.

Resizing is the one costly step of the slice and 2.5D samplers that does not depend on the epoch:
the slice's physical values (HU for CT) resized with ``tf.image.resize(antialias=True)``. Done
per sample in every epoch it caps a warm epoch at a few hundred slices per second on two cores;
done once here, a warm epoch is a file read, the window affine, augmentation and batching, all in
TensorFlow's C++ (no Python per element), so it also runs on tf.data service workers.

One file per frame: ``<cache_dir>/sized-v1/<item key>.<H>x<W>[.grey].<frame>.f32``, raw
little-endian float32 ``(H, W, channels)``, physical values (never windowed, never augmented:
the windows and augmentation are applied after reading, so one cache serves every window
choice). ``.grey`` marks colour frames averaged to one channel for a grey model. Files are
written to a temporary name and renamed, frames in order, so a frame file that exists is
whole and an item whose last frame exists is complete.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
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


def frame_files(cache_dir: Path, key: str, frames: int, size, grey: bool) -> list[str]:
    """The sized-cache file of each frame of the item cached under ``key``."""
    tag = f"{key}.{int(size[0])}x{int(size[1])}{'.grey' if grey else ''}"
    folder = Path(cache_dir) / SIZED_DIR
    return [str(folder / f"{tag}.{f}.f32") for f in range(frames)]


def resize_frames(frames: np.ndarray, size, grey: bool) -> np.ndarray:
    """(F, H, W, C) physical values -> (F, h, w, 1 if grey else C) float32, as the pipeline always
    resized: colour averaged first for a grey model, then bilinear with antialiasing."""
    import tensorflow as tf

    x = np.asarray(frames, np.float32)
    if grey:
        x = x.mean(axis=-1, keepdims=True)
    return tf.image.resize(x, tuple(int(s) for s in size), antialias=True).numpy()


def build(native_path: str, files: list[str], size, grey: bool, writer: Writer) -> bool:
    """Write the sized frames of one cached item unless they are there; True when it wrote."""
    if Path(files[-1]).exists():
        return False
    Path(files[0]).parent.mkdir(parents=True, exist_ok=True)
    array = np.load(native_path, mmap_mode="r")
    for start in range(0, len(files), CHUNK):
        sized = resize_frames(array[start:start + CHUNK], size, grey)
        for k, frame in enumerate(sized):
            data = np.ascontiguousarray(frame, "<f4")
            writer.submit(Path(files[start + k]), data.tofile)
    return True
