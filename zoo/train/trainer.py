"""The zoo's own distributed training step, used on every strategy for one code path.

Keras 3's ``Model.fit`` fails under MultiWorkerMirroredStrategy (keras-team/keras#20585:
"Attempt to convert a value (PerReplica ...) with an unsupported type"), so training runs
``strategy.run`` over ``strategy.experimental_distribute_dataset``: each replica computes
the sum of its (class-weighted) per-example losses divided by the *global* batch size, the
optimizer all-reduces the gradients, and the update equals one large-batch step on one device.

BatchNorm: a trainable BatchNormalization layer is switched to ``synchronized=True`` when
there is more than one replica, so batch statistics are computed over the global batch
(the same as on one device). Frozen BatchNorm runs in inference mode and needs nothing.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from zoo._keras_compat import all_layers
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
            raise DataError(f"{len(self.x)} inputs but {len(self.y)} labels; give one label per input.")
        if len(self.x) == 0:
            raise DataError("the training data is empty; give at least one labelled example.")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int | np.integer) or self.batch_size < 1:
            raise InvalidArgumentError(f"batch_size={self.batch_size!r}: must be a positive integer.")

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
        w = np.ones(len(self.y), np.float32) if self.sample_weight is None else self.sample_weight.astype(np.float32)
        ds = tf.data.Dataset.from_tensor_slices((self.x[idx], self.y[idx], w[idx])).batch(self.batch_size)
        return finish_batches(ds, map_fn)


def class_weights_to_samples(y: np.ndarray, class_weight, num_classes: int) -> np.ndarray | None:
    """Per-example weights from ``None``, ``"balanced"`` (n / (k * count_c), sklearn's rule) or {class: weight}."""
    if class_weight is None:
        return None
    y = np.asarray(y).astype(int)
    if isinstance(class_weight, str):
        if class_weight != "balanced":
            raise InvalidArgumentError(f"class_weight={class_weight!r}: use None, 'balanced' or a {{class: weight}} dict.")
        counts = np.bincount(y, minlength=num_classes).astype(np.float64)
        table = np.where(counts > 0, len(y) / (num_classes * np.maximum(counts, 1)), 0.0)
    elif isinstance(class_weight, dict):
        bad = [k for k in class_weight if not (isinstance(k, int | np.integer) and 0 <= k < num_classes)]
        if bad:
            raise InvalidArgumentError(f"class_weight keys {bad} are not classes 0..{num_classes - 1}.")
        table = np.ones(num_classes)
        for k, v in class_weight.items():
            table[int(k)] = float(v)
    else:
        raise InvalidArgumentError(f"class_weight={class_weight!r}: use None, 'balanced' or a {{class: weight}} dict.")
    return table[y].astype(np.float32)


def sync_batchnorm(model, replicas: int) -> int:
    """Trainable BatchNorm layers compute statistics over the global batch; returns how many."""
    import keras

    count = 0
    if replicas > 1:
        for layer in all_layers(model):
            if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable:
                layer.synchronized = True
                count += 1
    return count


class Trainer:
    """Train and evaluate a classifier (sparse labels, probabilities out) under a strategy.

    The model and the optimizer must have been created in ``strategy.scope()``.
    ``loss`` is a Keras loss with per-example output (reduction None is set here).
    """

    def __init__(self, model, optimizer, strategy, loss=None, from_logits: bool = False):
        import keras
        import tensorflow as tf

        self.model, self.optimizer, self.strategy = model, optimizer, strategy
        with strategy.scope():
            self.loss = loss or keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits, reduction=None)
            self.loss.reduction = None
            if not optimizer.built:
                optimizer.build(model.trainable_variables)
        self.replicas = int(strategy.num_replicas_in_sync)
        self.synchronized_bn = sync_batchnorm(model, self.replicas)
        self._train = tf.function(self._distributed(self._train_replica), reduce_retracing=True)
        self._eval = tf.function(self._distributed(self._eval_replica), reduce_retracing=True)
        self._train_epoch = None

    def _distributed(self, replica_fn):
        import tensorflow as tf

        strategy = self.strategy

        def step(batch):
            sums = strategy.run(replica_fn, args=(batch,))
            return [strategy.reduce(tf.distribute.ReduceOp.SUM, s, axis=None) for s in sums]

        return step

    def _sums(self, y, probs, w):
        import tensorflow as tf

        per_example = tf.cast(self.loss(y, probs), tf.float32) * w
        correct = tf.cast(tf.equal(tf.argmax(probs, -1, output_type=tf.int32), tf.cast(y, tf.int32)), tf.float32)
        return per_example, [tf.reduce_sum(per_example), tf.reduce_sum(correct), tf.cast(tf.size(y), tf.float32)]

    def _train_replica(self, batch):
        import tensorflow as tf

        x, y, w = batch
        # the global batch size, counted across replicas, so a short last batch is weighted right
        global_batch = tf.distribute.get_replica_context().all_reduce(
            tf.distribute.ReduceOp.SUM, tf.cast(tf.size(y), tf.float32))
        with tf.GradientTape() as tape:
            probs = tf.cast(self.model(x, training=True), tf.float32)
            per_example, sums = self._sums(y, probs, w)
            loss = tf.reduce_sum(per_example) / global_batch
            if self.model.losses:
                loss += tf.add_n(self.model.losses) / self.replicas
            scaled = self.optimizer.scale_loss(loss) if hasattr(self.optimizer, "scale_loss") else loss
        variables = self.model.trainable_variables
        self.optimizer.apply(tape.gradient(scaled, variables), variables)
        return sums

    def _eval_replica(self, batch):
        import tensorflow as tf

        x, y, w = batch
        return self._sums(y, tf.cast(self.model(x, training=False), tf.float32), w)[1]

    def _loop(self, step, dataset, progbar=None) -> dict:
        totals = None
        for i, batch in enumerate(self.strategy.experimental_distribute_dataset(dataset)):
            sums = step(batch)
            totals = sums if totals is None else [t + s for t, s in zip(totals, sums, strict=True)]
            if progbar is not None:  # reading the values waits for the step; only with a progress bar
                loss, correct, n = (float(t) for t in totals)
                progbar.update(i + 1, [("loss", loss / n), ("acc", correct / n)])
        if totals is None:
            raise DataError("the dataset yielded no batches; check that it is not empty.")
        loss, correct, n = (float(t) for t in totals)
        return {"loss": loss / n, "accuracy": correct / n}

    def _whole_epoch(self, step):
        """One tf.function call per epoch (the loop runs in the graph): for cheap steps, such as a
        head on cached features, where the Python round trip per step would cost more than the step."""
        import tensorflow as tf

        @tf.function
        def epoch(dist_dataset):
            totals = tf.zeros([3], tf.float32)
            for batch in dist_dataset:
                totals += tf.stack(step(batch))
            return totals

        return epoch

    def train_epoch(self, batches: Batches, epoch: int, map_fn=None, progbar=None, whole_epoch: bool = False) -> dict:
        """One pass over ``batches`` in its epoch order; returns the mean (weighted) loss and the accuracy.

        ``whole_epoch`` runs the epoch as one graph call (the progress bar then moves once per epoch).
        """
        dataset = batches.dataset(epoch, map_fn)
        if not whole_epoch:
            return self._loop(self._train, dataset, progbar)
        if self._train_epoch is None:
            self._train_epoch = self._whole_epoch(self._train)
        with warnings.catch_warnings():  # tf.data notes that options are not readable while tracing; harmless here
            warnings.filterwarnings("ignore", message="To make it possible to preserve tf.data options")
            totals = self._train_epoch(self.strategy.experimental_distribute_dataset(dataset))
        loss, correct, n = (float(v) for v in totals)
        if n == 0:
            raise DataError("the dataset yielded no batches; check that it is not empty.")
        if progbar is not None:
            progbar.update(len(batches), [("loss", loss / n), ("acc", correct / n)])
        return {"loss": loss / n, "accuracy": correct / n}

    def evaluate(self, batches: Batches) -> dict:
        return self._loop(self._eval, batches.dataset(0))


def finish_batches(ds, map_fn=None):
    """Apply ``map_fn`` to batches in order, shard by data, keep order: the same batches on every strategy."""
    import tensorflow as tf

    if map_fn is not None:
        ds = ds.map(map_fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    options.deterministic = True
    return ds.with_options(options).prefetch(2)
