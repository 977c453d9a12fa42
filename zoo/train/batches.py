"""In-memory training data for the engine: a deterministic order per epoch, class weights.

``Batches(x, y, batch_size, seed=...)`` gives the engine a ``dataset(epoch)`` of (x, y, weight)
global batches in a seeded permutation per epoch (the same on every strategy, and what an exact
mid-epoch resume needs). Arrays already in memory stay there; a ``numpy.memmap`` (a feature
cache on disk) is read batch by batch in the same order, so only a batch or two is in memory;
other data larger than memory goes to the engine as a ``tf.data.Dataset`` instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from zoo.errors import DataError, InvalidArgumentError


@dataclass
class Batches:
    """In-memory training data with a deterministic per-epoch order (``seed`` + epoch)."""

    x: np.ndarray
    y: np.ndarray
    batch_size: int
    shuffle: bool = True
    seed: int = 0
    sample_weight: np.ndarray | None = None

    def __post_init__(self):
        if len(self.x) != len(self.y):
            raise DataError(
                f"{len(self.x)} inputs but {len(self.y)} labels; give one label per input.")
        if len(self.x) == 0:
            raise DataError("the training data is empty; give at least one labelled example.")
        size = self.batch_size
        if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 1:
            raise InvalidArgumentError(f"batch_size={size!r}: must be a positive integer.")

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    def order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.x))
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.x))

    def dataset(self, epoch: int, map_fn=None):
        """A tf.data pipeline of (x, y, weight) global batches in this epoch's order."""
        import tensorflow as tf

        idx = self.order(epoch)
        if self.sample_weight is None:
            w = np.ones(len(self.y), np.float32)
        else:
            w = self.sample_weight.astype(np.float32)
        if isinstance(self.x, np.memmap):
            ds = self._streamed(idx, w)
        else:
            ds = tf.data.Dataset.from_tensor_slices((self.x[idx], self.y[idx], w[idx]))
            ds = ds.batch(self.batch_size)
        return finish_batches(ds, map_fn)

    def _streamed(self, idx: np.ndarray, w: np.ndarray):
        """The batches of an on-disk ``x``, read one at a time: the same values, order and
        batch shapes as the in-memory pipeline."""
        import tensorflow as tf

        x, y, size = self.x, np.asarray(self.y), self.batch_size

        def batches():
            for start in range(0, len(idx), size):
                part = idx[start:start + size]
                yield np.asarray(x[part]), y[part], w[part]

        spec = (tf.TensorSpec((None, *x.shape[1:]), tf.as_dtype(x.dtype)),
                tf.TensorSpec((None, *y.shape[1:]), tf.as_dtype(y.dtype)),
                tf.TensorSpec((None,), tf.float32))
        return tf.data.Dataset.from_generator(batches, output_signature=spec)


def class_weights_to_samples(y: np.ndarray, class_weight, num_classes: int) -> np.ndarray | None:
    """Per-example weights from ``None``, ``"balanced"`` or ``{class: weight}``.

    ``"balanced"`` weighs class c by n / (k * count_c), scikit-learn's rule.
    """
    if class_weight is None:
        return None
    y = np.asarray(y).astype(int)
    if isinstance(class_weight, str):
        if class_weight != "balanced":
            raise InvalidArgumentError(f"class_weight={class_weight!r}: use None, 'balanced' or "
                                       "a {class: weight} dict.")
        counts = np.bincount(y, minlength=num_classes).astype(np.float64)
        table = np.where(counts > 0, len(y) / (num_classes * np.maximum(counts, 1)), 0.0)
    elif isinstance(class_weight, dict):
        bad = [k for k in class_weight
               if not (isinstance(k, int | np.integer) and 0 <= k < num_classes)]
        if bad:
            raise InvalidArgumentError(
                f"class_weight keys {bad} are not classes 0..{num_classes - 1}.")
        table = np.ones(num_classes)
        for k, v in class_weight.items():
            table[int(k)] = float(v)
    else:
        raise InvalidArgumentError(f"class_weight={class_weight!r}: use None, 'balanced' or a "
                                   "{class: weight} dict.")
    return table[y].astype(np.float32)


def finish_batches(ds, map_fn=None):
    """Apply ``map_fn`` to batches in order, shard by data, keep order.

    The same batches then reach the model on every strategy. tf.data's autotuning is off:
    these pipelines have nothing to tune (a fixed prefetch; a map's AUTOTUNE parallelism then
    stays at TensorFlow's default, the cores), and with it on, each epoch's iterator, once
    exhausted, waited in its destructor for the autotuning thread's next timed wake-up: 0.3 to
    10 s at the end of a ResNet-50 epoch on 2 cores (TensorFlow 2.21; seen with gdb in
    ``RootDataset::Iterator::~Iterator`` while the model thread slept in ``OptimizeLoop``).
    """
    import tensorflow as tf

    if map_fn is not None:
        ds = ds.map(map_fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    options.deterministic = True
    options.autotune.enabled = False
    return ds.with_options(options).prefetch(2)
