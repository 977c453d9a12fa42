"""The zoo's one training engine: any step (a Task), any tf.distribute strategy, hooks, resume.

Why the zoo owns its loop: Keras 3's ``Model.fit`` fails under MultiWorkerMirroredStrategy
(keras-team/keras#20585), and the semi-supervised, generative and self-supervised methods need
steps ``fit`` cannot express (two optimizers, EMA targets). A method is a ``Task``:

- ``models()``: the models it owns, by name (what a checkpoint saves);
- ``optimizers``: the names of its optimizers, and ``trainable(name)``: the variables each updates;
- ``step(batch, training)``: a ``StepOutput`` with one loss per optimizer (a per-example vector,
  reduced by the engine over the *global* batch, or a scalar already averaged) and metric sums;
- ``ema``: (target model, source model, decay) pairs the engine updates after each step
  (mean teacher, BYOL's momentum target);
- ``check(x, y)``: refuse labels that do not fit the task, on the first batch, before training.

The engine owns the rest: ``strategy.run`` over ``experimental_distribute_dataset`` (each replica
divides its summed per-example losses by the global batch, so the update equals one large-batch
step on one device), loss scaling for fp16 (the optimizer's ``scale_loss``), one compiled step
per batch or per epoch, hooks (``Hook``: early stopping, best checkpoint, learning-rate
schedules, progress bar, TensorBoard scalars, gradual unfreezing) and resumable checkpoints.

Input streams: a ``tf.data.Dataset`` (the same pipeline each epoch), a callable ``epoch ->
Dataset`` or an object with ``.dataset(epoch)`` (a deterministic order per epoch, needed for an
exact mid-epoch resume) is consumed batch by batch; nothing is copied into memory.

Checkpoints (``checkpoint_dir/ckpt-STEP.npz``): every model variable (weights, BatchNorm
statistics, dropout seed-generator states), every optimizer variable, the step, epoch and
position in the epoch, the partial epoch sums, the history and the hooks' state. Each is
written to a ``.partial`` file, flushed and fsynced, then renamed into place, so a kill during
a write never leaves a half-written checkpoint that resume would read. The variables are copied
when the checkpoint is taken; the file is written in a background thread while training goes
on (ResNet-50 with AdamW: ~300 MB, 1-3 s per epoch on 2 cores), one write at a time: the next
checkpoint, a restore and the end of ``fit`` wait for it (and raise its error, if any). Two test
hooks make kills reproducible: ``ZOO_TEST_KILL_AFTER_STEPS=N`` SIGKILLs the process after its
N-th training step (once the checkpoints taken before it are written),
``ZOO_TEST_KILL_CHECKPOINT_BYTES=N`` after N bytes of a checkpoint write.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import signal
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from zoo._keras_compat import all_layers, call_concrete_flat, can_call_flat, flat_iterator_next
from zoo.errors import DataError, InvalidArgumentError, ResumeError

_CKPT = re.compile(r"^ckpt-(\d+)\.npz$")


@dataclass
class StepOutput:
    """What a task's step returns: losses by optimizer name, metrics as (sum, count) pairs."""

    losses: dict
    metrics: dict = field(default_factory=dict)


class Task:
    """Base class of a training method on the engine; see the module docstring."""

    optimizers: tuple[str, ...] = ("main",)
    ema: Sequence = ()

    def models(self) -> dict:
        raise NotImplementedError

    def trainable(self, name: str) -> list:
        """The variables optimizer ``name`` updates (default: every model's trainable variables)."""
        return [v for m in self.models().values() for v in m.trainable_variables]

    def regularized(self, name: str) -> list:
        """The models whose ``losses`` join optimizer ``name``'s loss.

        ``losses`` are a model's weight-decay layers and activity priors; by default every model's
        join the first optimizer's loss, and no other's.
        """
        return list(self.models().values()) if name == self.optimizers[0] else []

    def step(self, batch, training: bool) -> StepOutput:
        raise NotImplementedError

    def predict(self, x):
        """The outputs used for evaluation (default: the first model in inference mode)."""
        return next(iter(self.models().values()))(x, training=False)

    def check(self, x: np.ndarray, y: np.ndarray) -> None:
        """Raise a DataError when the first batch's labels do not fit the task."""


class Hook:
    """What the engine calls around epochs and batches; its ``state`` is saved in checkpoints."""

    def on_train_begin(self, engine) -> None: ...
    def on_epoch_begin(self, engine, epoch: int) -> None: ...
    def on_batch_end(self, engine, step: int, logs: Callable[[], dict]) -> None: ...
    def on_epoch_end(self, engine, epoch: int, logs: dict) -> None: ...
    def on_train_end(self, engine) -> None: ...
    def on_resume(self, engine, epoch: int) -> None:
        """Bring the models back to the shape they had when a run stopped, ``epoch`` epochs having
        begun (before the optimizer state is loaded: e.g. the layers a gradual unfreezing had made
        trainable). The engine then skips ``on_epoch_begin`` for an epoch it resumes mid-way."""

    def state(self) -> dict:
        return {}

    def arrays(self) -> dict:
        return {}

    def load(self, state: dict, arrays: dict) -> None: ...


def _kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value else None


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a fsynced ``.partial`` file and a rename.

    A kill during the write leaves at most the ``.partial`` file, never a half-written ``path``.
    """
    limit = _env_int("ZOO_TEST_KILL_CHECKPOINT_BYTES")
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as f:
        chunk = 1 << 16
        for start in range(0, len(data), chunk):
            piece = data[start:start + chunk]
            if limit is not None and start + len(piece) >= limit:
                f.write(piece[: max(0, limit - start)])
                f.flush()
                _kill_self()
            f.write(piece)
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, path)
    try:  # the rename itself durable (POSIX); not possible on every file system
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def _normalise_batch(*item):
    """(x, y) -> (x, y, 1); (x, y, w) kept."""
    import tensorflow as tf

    if len(item) == 1 and isinstance(item[0], tuple | list):
        item = tuple(item[0])
    if len(item) == 2:
        x, y = item
        return x, y, tf.ones([tf.shape(tf.nest.flatten(y)[0])[0]], tf.float32)
    if len(item) == 3:
        return item
    raise DataError("a training batch must be (inputs, labels) or (inputs, labels, weights); "
                    f"got {len(item)} parts.")


def epoch_source(data, *, weights: bool = True) -> Callable[[int], object]:
    """``data`` as a function epoch -> tf.data.Dataset of (x, y, w) batches, with the options the
    strategies need (shard by data, deterministic order).

    ``weights=False`` leaves (x, y) batches without weights: the engine adds the unit weights
    inside its compiled step, since a ``tf.data`` map per batch costs more than a small step.
    """
    import tensorflow as tf

    if hasattr(data, "dataset") and callable(data.dataset):
        make = data.dataset
    elif isinstance(data, tf.data.Dataset):
        make = lambda epoch: data  # noqa: E731
    elif callable(data):
        make = data
    else:
        raise InvalidArgumentError(
            f"data={type(data).__name__}: give a tf.data.Dataset of (x, y[, weight]) batches, "
            "a function epoch -> Dataset, or zoo.train.batches.Batches.")

    def build(epoch: int):
        ds = make(epoch)
        if not isinstance(ds, tf.data.Dataset):
            raise InvalidArgumentError(
                f"the data function returned {type(ds).__name__} for epoch {epoch}; "
                "it must return a tf.data.Dataset.")
        spec = ds.element_spec
        if not isinstance(spec, tuple) or len(spec) not in (2, 3):
            raise DataError(
                f"the dataset yields {spec}; it must yield batches of (inputs, labels[, weights]).")
        if len(spec) == 2 and weights:
            ds = ds.map(lambda x, y: _normalise_batch(x, y))
        options = tf.data.Options()
        shard = tf.data.experimental.AutoShardPolicy.DATA
        options.experimental_distribute.auto_shard_policy = shard
        options.deterministic = True
        return ds.with_options(options)

    return build


def sync_batchnorm(model, replicas: int) -> int:
    """Trainable BatchNorm layers compute statistics over the global batch (the same as on one
    device) when there is more than one replica; frozen BatchNorm runs in inference mode and needs
    nothing. Returns how many layers were switched."""
    import keras

    count = 0
    if replicas > 1:
        for layer in all_layers(model):
            if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable:
                layer.synchronized = True
                count += 1
    return count


def _first_batch(dataset):
    for batch in dataset.take(1):
        return [{k: np.asarray(v) for k, v in t.items()} if isinstance(t, dict) else np.asarray(t)
                for t in batch]
    raise DataError("the training data yields no batches (an empty dataset); give at least one "
                    "labelled example.")



class _Totals:
    """An epoch's running [sum, count, ...] totals, added on the host in float32, in step order.

    Why not a device tensor: an eager add per step costs more than the tiny step it sums. Each
    step's sums stay tensors until the totals are read (batch logs, a checkpoint, the epoch's
    end), so a step never waits for the host; float32 adds in the same order give the same bits
    as the device adds did, so a resumed run still equals an uninterrupted one.
    """

    _FOLD = 64  # fold this many pending steps at once (bounds the tensors kept alive)

    def __init__(self, start=None):
        self._value = None if start is None else np.asarray(start, np.float32)
        self._pending: list = []

    def add(self, sums) -> None:
        self._pending.append(sums)
        if len(self._pending) >= self._FOLD:
            self.value()

    def value(self) -> np.ndarray | None:
        """The totals so far (None before the first step)."""
        for sums in self._pending:
            sums = np.asarray(sums.numpy(), np.float32)
            self._value = sums if self._value is None else self._value + sums
        self._pending.clear()
        return self._value


def _raw_next(iterator):
    """A function returning the iterator's next element as its flat list of tensors, or None.

    ``next(iterator)`` rebuilds the element's structure and the step's ``tf.function`` flattens it
    again; for a tuple of plain tensors both are pure Python overhead on a small step. The
    iterator internals this needs live in ``zoo._keras_compat``; None (the caller then uses
    ``next``) wherever they are missing or the element holds composite tensors.
    """
    if not plain_tensors(iterator.element_spec):
        return None
    return flat_iterator_next(iterator)


def plain_tensors(spec) -> bool:
    """Whether a dataset's elements are nests of plain tensors (no ragged, sparse or other
    composite tensors, whose flat form is not one tensor per leaf)."""
    import tensorflow as tf

    return all(type(s) is tf.TensorSpec for s in tf.nest.flatten(spec))


def flat_batches(dataset):
    """Yield the dataset's elements as flat lists of tensors (see ``_raw_next``); the used-up
    iterator is deleted on another thread (``_delete_elsewhere``)."""
    holder = [iter(dataset)]
    try:
        yield from _flat_elements(holder[0])
    finally:
        _delete_elsewhere(holder)


def _delete_elsewhere(holder: list) -> None:
    """Drop the last reference to the iterator in ``holder`` on a thread of its own.

    Why: deleting a tf.data iterator waits for its autotuning thread's next timed wake-up
    (TensorFlow 2.21), which stalled the end of an epoch by 0.3-10 s on 2 cores (a user's
    pipeline with AUTOTUNE: 1.9 s at one epoch end of five, with 0.4 s steps); the engine's own
    in-memory pipelines turn autotuning off instead (``batches.finish_batches``). Not a daemon
    thread: the interpreter waits for it before it tears TensorFlow down."""
    threading.Thread(target=holder.clear, name="zoo-iterator-delete").start()


def _flat_elements(iterator):
    import tensorflow as tf

    get = _raw_next(iterator)
    if get is None:
        for element in iterator:
            yield tf.nest.flatten(element)
        return
    while True:
        try:
            flat = get()
        except tf.errors.OutOfRangeError:
            return
        yield flat


class CompiledStep:
    """A ``tf.function`` of one batch, called straight through the concrete function it traced.

    The first batch of each signature (dtypes and shapes) is traced through
    ``get_concrete_function`` (with the ``tf.function``'s ``reduce_retracing`` relaxation for a
    short last batch) and the concrete function is kept under that signature; every batch then
    calls it with its flat tensors, skipping the per-call argument binding and cache lookup.
    The same graph runs as through the ``tf.function``'s own call, so results are unchanged
    (tests/train/test_engine.py checks bit equality).

    Why ``get_concrete_function`` and not a first call: TensorFlow's frequent-retracing detector
    counts the calls that go through a ``tf.function`` per Python *code object*; every engine's
    step shares one code object and the direct calls here are invisible to it, so it saw only
    traces and warned of "retracing" from the second engine of a process on (each trace was
    the first of a new function). Traces made by ``get_concrete_function`` are not counted.
    """

    def __init__(self, function):
        self.function = function
        self._concrete: dict = {}

    def __call__(self, flat: list, structure):
        key = tuple((t.dtype, tuple(t.shape)) for t in flat)
        concrete = self._concrete.get(key)
        if concrete is None:
            import tensorflow as tf

            batch = tf.nest.pack_sequence_as(structure, flat)
            concrete = self.function.get_concrete_function(batch)
            if not can_call_flat(concrete):
                return concrete(batch)
            self._concrete[key] = concrete
        return call_concrete_flat(concrete, flat)


class Engine:
    """Train a Task with its optimizers under a strategy; see the module docstring.

    task: a Task. optimizers: one Keras optimizer or {name: optimizer} for ``task.optimizers``;
    models and optimizers must have been created under ``strategy.scope()``.
    hooks: Hook objects. checkpoint_dir: the checkpoints' folder (None: no checkpoints, no resume).
    checkpoint_every: also checkpoint every N steps inside an epoch (None: at epoch ends only).
    whole_epoch: run each epoch as one graph call (cheap steps; no mid-epoch checkpoints).
    """

    def __init__(self, task: Task, optimizers, strategy=None, *, hooks: Sequence[Hook] = (),
                 checkpoint_dir=None, checkpoint_every: int | None = None,
                 whole_epoch: bool = False, keep_checkpoints: int = 2, chief: bool = True,
                 verbose: int = 0):
        import tensorflow as tf

        self.task, self.strategy = task, strategy or tf.distribute.get_strategy()
        names = tuple(task.optimizers)
        if not isinstance(optimizers, dict):
            if len(names) != 1:
                raise InvalidArgumentError(
                    f"the task has optimizers {names}; give a dict {{name: optimizer}}.")
            optimizers = {names[0]: optimizers}
        if set(optimizers) != set(names):
            raise InvalidArgumentError(
                f"optimizers {sorted(optimizers)} do not match the task's {list(names)}.")
        if checkpoint_every is not None and (
                isinstance(checkpoint_every, bool) or checkpoint_every < 1):
            raise InvalidArgumentError(
                f"checkpoint_every={checkpoint_every!r}: give a positive number of steps or None.")
        self.optimizers = dict(optimizers)
        self.hooks = list(hooks)
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.checkpoint_every, self.whole_epoch = checkpoint_every, whole_epoch
        self.keep = keep_checkpoints
        self.chief, self.verbose = chief, verbose
        self.replicas = int(self.strategy.num_replicas_in_sync)
        self.synchronized_bn = sum(sync_batchnorm(m, self.replicas) for m in task.models().values())
        self.history: list[dict] = []
        self.step_count = 0
        self.epoch = 0
        self.stop = False
        self._kill_after = _env_int("ZOO_TEST_KILL_AFTER_STEPS")
        self._writing: threading.Thread | None = None  # the checkpoint write in flight
        self._write_error: BaseException | None = None
        self.fast_calls = True  # one device: CompiledStep (False: the plain tf.function call)
        self._build_optimizers()
        self.reset_step()

    # --- compiled steps -----------------------------------------------------------------------

    def _build_optimizers(self) -> None:
        with self.strategy.scope():
            for name, opt in self.optimizers.items():
                if not opt.built:
                    opt.build(self.task.trainable(name))

    def replace_optimizer(self, name: str, optimizer) -> None:
        """Swap optimizer ``name`` (e.g. after unfreezing: Keras 3 optimizers only update the
        variables they were built with) and re-trace the step."""
        self.optimizers[name] = optimizer
        self._build_optimizers()
        self.reset_step()

    def reset_step(self) -> None:
        """Forget the traced step functions (after the set of trainable variables changed)."""
        import tensorflow as tf

        self._metric_names: list[str] | None = None
        self._train = tf.function(self._distributed(self._train_replica, train=True),
                                  reduce_retracing=True)
        self._eval = tf.function(self._distributed(self._eval_replica), reduce_retracing=True)
        self._train_epoch = None
        self._compiled: dict[str, CompiledStep] = {}

    def _compiled_step(self, name: str) -> CompiledStep:
        """The one-device CompiledStep of ``self.<name>``, kept until the step is re-traced (its
        concrete functions then belong to the old ``tf.function``)."""
        function = getattr(self, name)
        step = self._compiled.get(name)
        if step is None or step.function is not function:
            step = self._compiled[name] = CompiledStep(function)
        return step

    def _loss_names(self) -> list[str]:
        names = list(self.task.optimizers)
        return ["loss"] if len(names) == 1 else [f"{n}_loss" for n in names]

    def _flatten(self, output: StepOutput, losses: dict):
        """[sum, count, ...] in a fixed order: the losses, then the task's metrics by name."""
        import tensorflow as tf

        ordered = (losses[n] for n in self.task.optimizers)
        pairs = dict(zip(self._loss_names(), ordered, strict=True))
        pairs.update({k: output.metrics[k] for k in sorted(output.metrics)})
        names = list(pairs)
        if self._metric_names is None:
            self._metric_names = names
        flat = []
        for name in names:
            total, count = pairs[name]
            flat += [tf.cast(total, tf.float32), tf.cast(count, tf.float32)]
        return flat

    def _loss_pair(self, value):
        import tensorflow as tf

        value = tf.cast(value, tf.float32)
        if value.shape.rank == 0:
            return value, tf.constant(1.0)
        per = tf.reshape(value, [tf.shape(value)[0], -1])
        per = tf.reduce_mean(per, axis=1)
        return tf.reduce_sum(per), tf.cast(tf.shape(per)[0], tf.float32)

    def _train_replica(self, batch):
        import tensorflow as tf

        ctx = tf.distribute.get_replica_context()
        names = list(self.task.optimizers)
        batch = _normalise_batch(*batch)
        with tf.GradientTape(persistent=len(names) > 1) as tape:
            output = self.task.step(batch, training=True)
            scaled, pairs = {}, {}
            for name in names:
                value = output.losses[name]
                total, count = self._loss_pair(value)
                pairs[name] = (total, count)
                if tf.cast(value, tf.float32).shape.rank == 0:
                    loss = total / self.replicas
                else:
                    # divide by the global batch, counted across replicas, so that a short last
                    # batch is weighted right
                    loss = total / ctx.all_reduce(tf.distribute.ReduceOp.SUM, count)
                extra = [loss_ for m in self.task.regularized(name) for loss_ in m.losses]
                if extra:
                    loss += tf.add_n([tf.cast(e, tf.float32) for e in extra]) / self.replicas
                opt = self.optimizers[name]
                scaled[name] = opt.scale_loss(loss) if hasattr(opt, "scale_loss") else loss
        for name in names:
            variables = self.task.trainable(name)
            grads = tape.gradient(scaled[name], variables)
            self.optimizers[name].apply(grads, variables)
        del tape
        return self._flatten(output, pairs)

    def _eval_replica(self, batch):
        output = self.task.step(_normalise_batch(*batch), training=False)
        pairs = {n: self._loss_pair(output.losses[n]) for n in self.task.optimizers}
        return self._flatten(output, pairs)

    def _ema(self) -> None:
        """EMA targets, in cross-replica context (one update of every mirrored copy)."""
        for target, source, decay in self.task.ema:
            for t, s in zip(target.variables, source.variables, strict=True):
                if t.dtype == s.dtype and "seed_generator" not in t.path:
                    t.assign(decay * t + (1.0 - decay) * s)

    def _distributed(self, replica_fn, train: bool = False):
        import tensorflow as tf

        strategy = self.strategy

        def step(batch):
            sums = strategy.run(replica_fn, args=(batch,))
            if train and self.task.ema:
                self._ema()
            op = tf.distribute.ReduceOp.SUM
            return tf.stack([strategy.reduce(op, s, axis=None) for s in sums])

        return step

    def _whole_epoch(self):
        import tensorflow as tf

        step = self._train

        @tf.function
        def epoch(dist_dataset, size):
            totals = tf.zeros([size], tf.float32)
            for batch in dist_dataset:
                totals += step(batch)
            return totals

        return epoch

    def _means(self, totals) -> dict:
        values = np.asarray(totals, np.float64)
        sums, counts = values[0::2], values[1::2]
        return {name: float(sums[i] / counts[i]) if counts[i] else float("nan")
                for i, name in enumerate(self._metric_names or [])}

    # --- loops ----------------------------------------------------------------------------------

    def evaluate(self, data) -> dict:
        """Mean loss(es) and metrics over ``data`` (inference mode)."""
        dataset = epoch_source(data, weights=False)(0)
        totals = _Totals()
        for sums in self._steps("_eval", dataset):
            totals.add(sums)
        if totals.value() is None:
            raise DataError(
                "the evaluation data yields no batches; give at least one labelled example.")
        return self._means(totals.value())

    def predict(self, data) -> np.ndarray | dict:
        """The task's outputs over ``data`` (batches of x or (x, y[, w])), concatenated in order."""
        import tensorflow as tf

        outs = []
        for batch in data:
            x = batch[0] if isinstance(batch, tuple | list) else batch
            out = self.task.predict(x)
            outs.append(tf.nest.map_structure(lambda t: np.asarray(tf.cast(t, tf.float32)), out))
        if not outs:
            raise DataError("the data yields no batches; give at least one example.")
        return tf.nest.map_structure(lambda *parts: np.concatenate(parts), *outs)

    def fit(self, train, epochs: int, val=None, *, resume: bool = False) -> list[dict]:
        """Train for ``epochs`` epochs (in total: a resumed run continues to the same end).

        ``resume``: continue from the newest complete checkpoint in ``checkpoint_dir`` (a fresh
        start when there is none). Returns the history (one dict per epoch).
        """
        if isinstance(epochs, bool) or not isinstance(epochs, int | np.integer) or epochs < 0:
            raise InvalidArgumentError(f"epochs={epochs!r}: give a non-negative integer.")
        source = epoch_source(train, weights=False)
        val_source = epoch_source(val, weights=False) if val is not None else None
        position, partial = self._start_point(resume)
        self._begin_training(source)
        try:
            while self.epoch < epochs and not self.stop:
                self._fit_epoch(source, val_source, position, partial)
                position, partial = 0, None
        except BaseException:  # stopped: the checkpoints taken so far are on disk, as when
            if self._writing is not None:  # written in line (a write error: raised later)
                self._writing.join()
            raise
        self.wait_for_checkpoint()
        for hook in self.hooks:
            hook.on_train_end(self)
        return self.history

    def _start_point(self, resume: bool) -> tuple[int, list | None]:
        """Where ``fit`` starts: (0, None) afresh, or on ``resume`` the restored checkpoint's
        (position in its epoch, partial sums). Restoring comes first so that the first-batch
        check and the hooks see the resumed epoch."""
        if not resume:
            return 0, None
        if self.checkpoint_dir is None:
            raise InvalidArgumentError(
                "resume=True needs checkpoint_dir= (where the checkpoints are).")
        return self.restore()

    def _begin_training(self, source) -> None:
        """Check the first batch against the task, so that labels that do not fit fail before
        any step is taken, then tell the hooks that training begins."""
        first = _first_batch(source(self.epoch))
        self.task.check(first[0], first[1])
        for hook in self.hooks:
            hook.on_train_begin(self)

    def _fit_epoch(self, source, val_source, position: int, partial) -> None:
        """One epoch of ``fit``: the epoch-begin hooks, training (from batch ``position`` with the
        ``partial`` sums on a mid-epoch resume), validation, then the epoch's record."""
        epoch = self.epoch
        # On a mid-epoch resume the hooks' on_resume has already replayed this epoch's start.
        if not position:
            for hook in self.hooks:
                hook.on_epoch_begin(self, epoch)
        t0 = time.perf_counter()
        totals = self._run_epoch(source(epoch), epoch, position, partial)
        seconds = round(time.perf_counter() - t0, 4)
        row = {"epoch": epoch, **self._means(totals), "seconds": seconds}
        if val_source is not None:
            row.update({f"val_{k}": v for k, v in self.evaluate(val_source(epoch)).items()})
        self._end_epoch(epoch, row)

    def _end_epoch(self, epoch: int, row: dict) -> None:
        """Record a finished epoch: its learning rate and history row, the epoch-end hooks (which
        may set ``stop``), then the epoch-end checkpoint that a resume continues from."""
        opt = self.optimizers[self.task.optimizers[0]]
        row["learning_rate"] = float(np.asarray(opt.learning_rate))
        self.history.append(row)
        for hook in self.hooks:
            hook.on_epoch_end(self, epoch, row)
        self.epoch = epoch + 1
        if self.checkpoint_dir is not None:
            self.save(position=0, totals=None)

    def _distribute(self, dataset):
        """The strategy's distributed dataset; on one device the dataset itself, which saves the
        buffers a distributed iterator keeps (two batches less held in memory)."""
        if self._one_device():  # the batches as they come
            return dataset
        return self.strategy.experimental_distribute_dataset(dataset)

    def _one_device(self) -> bool:
        from zoo.train.distribute import cluster_size

        return self.replicas == 1 and cluster_size() <= 1

    def _run_epoch(self, dataset, epoch: int, skip: int, partial):
        """Train one epoch; returns its [sum, count, ...] totals.

        ``whole_epoch`` runs it as one graph call, except on a mid-epoch resume (``skip`` > 0),
        which needs the batch-by-batch loop to continue from the checkpoint's position and sums.
        """
        if self.whole_epoch and not skip:
            return self._run_whole_epoch(dataset)
        return self._run_batches(dataset, skip, partial)

    def _run_whole_epoch(self, dataset):
        """The epoch as one compiled call: no Python between cheap steps, so also no per-batch
        hooks or checkpoints; it counts as one step."""
        import tensorflow as tf

        if self._train_epoch is None:
            self._train_epoch = self._whole_epoch()
        # Trace (not run) one eval step to learn the metric layout (the size of the totals).
        if self._metric_names is None:
            first = next(iter(self.strategy.experimental_distribute_dataset(dataset.take(1))))
            self._eval.get_concrete_function(first)
        # tf.data notes that options are unreadable while tracing; harmless.
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message="To make it possible to preserve tf.data options")
            args = (self.strategy.experimental_distribute_dataset(dataset),
                    tf.constant(2 * len(self._metric_names)))
            # its concrete function, as CompiledStep does (no false "retracing" warning)
            totals = self._train_epoch.get_concrete_function(*args)(*args)
        if float(totals[1]) == 0:
            raise DataError(
                "the training data yields no batches; give at least one labelled example.")
        self.step_count += 1
        return totals.numpy()

    def _run_batches(self, dataset, skip: int, partial):
        """The epoch one compiled step per batch, after skipping the ``skip`` batches a resumed
        run had trained (their sums are ``partial``)."""
        if skip:
            dataset = dataset.skip(skip)
        totals = _Totals(partial)
        position = skip
        for sums in self._steps("_train", dataset):
            totals.add(sums)
            position += 1
            self.step_count += 1
            self._after_step(position, totals)
        if totals.value() is None:
            raise DataError(
                "the training data yields no batches; give at least one labelled example.")
        return totals.value()

    def _steps(self, name: str, dataset):
        """Run the compiled step ``self.<name>`` on each batch, yielding its sums.

        On one device the batches go through ``CompiledStep`` (flat tensors, no per-call
        dispatch); under a multi-replica strategy through the strategy's distributed dataset.
        The step is looked up per batch: a hook may re-trace it (``replace_optimizer``).
        """
        fast = self.fast_calls and plain_tensors(dataset.element_spec)
        if not (fast and self._one_device()):
            for batch in self._distribute(dataset):
                yield getattr(self, name)(batch)
            return
        structure = dataset.element_spec
        for flat in flat_batches(dataset):
            yield self._compiled_step(name)(flat, structure)

    def _after_step(self, position: int, totals: _Totals) -> None:
        """What follows each step: the batch-end hooks (running means read only when asked), the
        test kill switch, and the checkpoint every ``checkpoint_every`` steps."""
        for hook in self.hooks:
            hook.on_batch_end(self, position, lambda t=totals: self._means(t.value()))
        if self._kill_after is not None and self.step_count >= self._kill_after:
            self.wait_for_checkpoint()  # the kill comes after the checkpoints taken before it
            _kill_self()
        every = self.checkpoint_every
        if self.checkpoint_dir is not None and every and self.step_count % every == 0:
            self.save(position=position, totals=totals.value())

    # --- checkpoints ----------------------------------------------------------------------------

    def _variables(self) -> dict[str, list]:
        out = {f"model/{name}": list(m.variables) for name, m in self.task.models().items()}
        out.update({f"optimizer/{name}": list(opt.variables)
                    for name, opt in self.optimizers.items()})
        return out

    def _fingerprint(self) -> dict:
        return {group: [list(v.shape) for v in vs] for group, vs in self._variables().items()}

    def save(self, *, position: int = 0, totals=None) -> Path | None:
        """Take a checkpoint of everything a resume needs (chief only) and write it in the
        background; returns its path (complete once ``wait_for_checkpoint`` returns)."""
        if self.checkpoint_dir is None or not self.chief:
            return None
        self.wait_for_checkpoint()
        folder = self.checkpoint_dir
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {}  # copies (Variable.numpy()): the training that follows cannot change them
        for group, variables in self._variables().items():
            for i, v in enumerate(variables):
                arrays[f"{group}/{i}"] = np.asarray(v.numpy() if hasattr(v, "numpy") else v)
        hook_states = []
        for i, hook in enumerate(self.hooks):
            hook_states.append(hook.state())
            for key, value in hook.arrays().items():
                arrays[f"hook/{i}/{key}"] = np.asarray(value)
        state = {
            "step": self.step_count, "epoch": self.epoch, "position": position, "stop": self.stop,
            "totals": None if totals is None else np.asarray(totals).tolist(),
            "metric_names": self._metric_names, "history": self.history, "hooks": hook_states,
            "fingerprint": self._fingerprint(),
            "hook_types": [type(h).__name__ for h in self.hooks],
        }
        # serialised now: the history and hook states are live objects
        arrays["state.json"] = np.frombuffer(json.dumps(state).encode(), np.uint8)
        path = folder / f"ckpt-{self.step_count:09d}.npz"
        self._writing = threading.Thread(target=self._write, args=(path, arrays),
                                         name="zoo-checkpoint", daemon=True)
        self._writing.start()
        return path

    def _write(self, path: Path, arrays: dict) -> None:
        """The background part of ``save``: the .npz, written atomically, then the old ones
        pruned; an error is kept for ``wait_for_checkpoint`` to raise."""
        try:
            buffer = io.BytesIO()
            np.savez(buffer, **arrays)
            write_atomic(path, buffer.getbuffer())
            for old in sorted(self.checkpoints(), reverse=True)[self.keep:]:
                old.unlink(missing_ok=True)
        except BaseException as err:  # noqa: BLE001 - re-raised in the training thread
            self._write_error = err

    def wait_for_checkpoint(self) -> None:
        """Wait for the checkpoint write in flight, if any; raise its error."""
        writing, self._writing = self._writing, None
        if writing is not None:
            writing.join()
        error, self._write_error = self._write_error, None
        if error is not None:
            raise error

    def checkpoints(self) -> list[Path]:
        folder = self.checkpoint_dir
        if folder is None or not folder.is_dir():
            return []
        return sorted(p for p in folder.iterdir() if _CKPT.match(p.name))

    def restore(self, path=None) -> tuple[int, list | None]:
        """Load the newest complete checkpoint (or ``path``).

        Returns (position in the epoch, partial sums); a fresh start (0, None) when there is none.
        """
        self.wait_for_checkpoint()
        candidates = [Path(path)] if path is not None else self.checkpoints()[::-1]
        for leftover in self.checkpoint_dir.glob("*.partial") if self.checkpoint_dir else ():
            leftover.unlink(missing_ok=True)  # a write that was killed: never read
        for candidate in candidates:
            try:
                with np.load(candidate, allow_pickle=False) as npz:
                    arrays = {k: npz[k] for k in npz.files}
                state = json.loads(arrays.pop("state.json").tobytes().decode())
            except (OSError, ValueError, KeyError) as err:
                if path is not None:
                    raise ResumeError(
                        f"{candidate}: not a readable engine checkpoint ({err}); give another "
                        "checkpoint or start afresh without resume.") from None
                continue
            self._load(candidate, state, arrays)
            return int(state["position"]), state["totals"]
        return 0, None

    def _load(self, path: Path, state: dict, arrays: dict) -> None:
        epoch = int(state["epoch"])
        # the epochs whose start the killed run had seen
        started = epoch + (1 if state["position"] else 0)
        for i, hook in enumerate(self.hooks):
            hook_arrays = {k.split("/", 2)[2]: v for k, v in arrays.items()
                           if k.startswith(f"hook/{i}/")}
            if i < len(state["hooks"]):
                hook.load(state["hooks"][i], hook_arrays)
            hook.on_resume(self, started)
        self._build_optimizers()
        if state["fingerprint"] != self._fingerprint():
            mine, theirs = self._fingerprint(), state["fingerprint"]
            diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
            raise ResumeError(
                f"{self.checkpoint_dir}: its checkpoint {path.name} was written for other models "
                f"or optimizers (variables differ in {diff}); resume with the same model and "
                "settings, or give a new run folder.")
        for group, variables in self._variables().items():
            for i, v in enumerate(variables):
                v.assign(arrays[f"{group}/{i}"])
        self.step_count, self.epoch, self.stop = int(state["step"]), epoch, bool(state["stop"])
        self.history = list(state["history"])
        self._metric_names = state["metric_names"]
        self.reset_step_keep_names()

    def reset_step_keep_names(self) -> None:
        names = self._metric_names
        self.reset_step()
        self._metric_names = names


# --- hooks ---------------------------------------------------------------------------------------


def _better(value: float, best: float | None, mode: str) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value < best if mode == "min" else value > best


def _mode(monitor: str, mode: str | None) -> str:
    if mode is None:
        return "min" if monitor.endswith("loss") else "max"
    if mode not in ("min", "max"):
        raise InvalidArgumentError(f"mode={mode!r}: use 'min' or 'max'.")
    return mode


class EarlyStopping(Hook):
    """Stop when ``monitor`` has not improved for ``patience`` epochs.

    With ``restore_best``, the best epoch's weights are put back when training ends.
    """

    def __init__(self, monitor: str = "val_loss", patience: int = 3, mode: str | None = None,
                 restore_best: bool = True, model: str | None = None):
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise InvalidArgumentError(f"patience={patience!r}: give a positive integer.")
        self.monitor, self.patience, self.mode = monitor, patience, _mode(monitor, mode)
        self.restore_best, self.model_name = restore_best, model
        self.best, self.best_epoch, self.wait, self.weights = None, -1, 0, None

    def _model(self, engine):
        models = engine.task.models()
        return models[self.model_name] if self.model_name else next(iter(models.values()))

    def on_epoch_end(self, engine, epoch, logs):
        if self.monitor not in logs:
            raise InvalidArgumentError(
                f"EarlyStopping(monitor={self.monitor!r}): the epoch logs hold {sorted(logs)}; "
                "monitor one of them.")
        value = float(logs[self.monitor])
        if _better(value, self.best, self.mode):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best:
                self.weights = [np.asarray(w) for w in self._model(engine).get_weights()]
        else:
            self.wait += 1
            if self.wait >= self.patience:
                engine.stop = True

    def on_train_end(self, engine):
        if self.restore_best and self.weights is not None:
            self._model(engine).set_weights(self.weights)

    def state(self):
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait,
                "weights": None if self.weights is None else len(self.weights)}

    def arrays(self):
        return {f"w{i}": w for i, w in enumerate(self.weights or [])}

    def load(self, state, arrays):
        self.best, self.best_epoch, self.wait = state["best"], state["best_epoch"], state["wait"]
        if state.get("weights") is not None:
            self.weights = [arrays[f"w{i}"] for i in range(state["weights"])]


class BestCheckpoint(Hook):
    """Save the model as ``path`` (.keras, written atomically) whenever ``monitor`` improves."""

    def __init__(self, path, monitor: str = "val_loss", mode: str | None = None,
                 model: str | None = None):
        self.path, self.monitor, self.mode = Path(path), monitor, _mode(monitor, mode)
        self.model_name = model
        self.best = None

    def on_epoch_end(self, engine, epoch, logs):
        value = float(logs.get(self.monitor, float("nan")))
        if _better(value, self.best, self.mode):
            self.best = value
            if engine.chief:
                models = engine.task.models()
                model = models[self.model_name] if self.model_name else next(iter(models.values()))
                partial = self.path.with_name(self.path.stem + ".partial.keras")
                model.save(partial)
                os.replace(partial, self.path)

    def state(self):
        return {"best": self.best}

    def load(self, state, arrays):
        self.best = state["best"]


class LearningRateSchedule(Hook):
    """Set optimizer ``optimizer``'s learning rate to ``schedule(epoch)`` at each epoch's start."""

    def __init__(self, schedule: Callable[[int], float], optimizer: str | None = None):
        self.schedule, self.optimizer = schedule, optimizer

    def on_epoch_begin(self, engine, epoch):
        name = self.optimizer or engine.task.optimizers[0]
        lr = float(self.schedule(epoch))
        if not lr > 0:
            raise InvalidArgumentError(
                f"the learning-rate schedule gave {lr} for epoch {epoch}; it must be positive.")
        engine.optimizers[name].learning_rate.assign(lr)


class Progress(Hook):
    """A Keras progress bar per epoch (reading the running means waits for each step)."""

    def __init__(self, steps: int | None = None, name: str = ""):
        self.steps, self.name, self.bar = steps, name, None

    def on_epoch_begin(self, engine, epoch):
        import keras

        print(f"{self.name + ' ' if self.name else ''}epoch {epoch + 1}")
        self.bar = keras.utils.Progbar(self.steps, verbose=1)

    def on_batch_end(self, engine, step, logs):
        if self.bar is None:  # resumed mid-epoch
            self.on_epoch_begin(engine, engine.epoch)
        self.bar.update(step, [(k, v) for k, v in logs().items()])


class TensorBoard(Hook):
    """Epoch scalars (train and ``val_`` metrics, learning rate) as TensorBoard event files."""

    def __init__(self, log_dir):
        self.log_dir, self.writers = Path(log_dir), None

    def on_epoch_end(self, engine, epoch, logs):
        import tensorflow as tf

        if not engine.chief:
            return
        if self.writers is None:
            self.writers = {k: tf.summary.create_file_writer(str(self.log_dir / k))
                            for k in ("train", "validation")}
        for key, value in logs.items():
            if key in ("epoch", "seconds", "stage") or not isinstance(value, int | float):
                continue
            split = "validation" if key.startswith("val_") else "train"
            with self.writers[split].as_default():
                tag = key if key == "learning_rate" else "epoch_" + key.removeprefix("val_")
                scalar(tag, value, epoch)
        for writer in self.writers.values():
            writer.flush()


class GradualUnfreezing(Hook):
    """Unfreeze more of the backbone at given epochs: ``{epoch: layer or block}``.

    Newly trainable variables need a fresh optimizer (Keras 3 optimizers only update the
    variables they were built with), so at each unfreezing the optimizer is rebuilt from its
    config, with the learning rate multiplied by ``lr_factor``, and the step re-traced.
    """

    def __init__(self, schedule: dict[int, object], lr_factor: float = 1.0, batchnorm: bool = False,
                 model: str | None = None, optimizer: str | None = None, verbose: bool = False):
        self.schedule, self.lr_factor, self.batchnorm = dict(schedule), lr_factor, batchnorm
        self.model_name, self.optimizer, self.verbose = model, optimizer, verbose

    def _unfreeze(self, engine, epoch) -> None:
        from zoo.train.transfer import trainable_summary, unfreeze

        models = engine.task.models()
        model = models[self.model_name] if self.model_name else next(iter(models.values()))
        unfreeze(model, self.schedule[epoch], batchnorm=self.batchnorm)
        name = self.optimizer or engine.task.optimizers[0]
        old = engine.optimizers[name]
        config = old.get_config()
        if isinstance(config.get("learning_rate"), float):
            config["learning_rate"] *= self.lr_factor
        with engine.strategy.scope():
            engine.replace_optimizer(name, type(old).from_config(config))
        if self.verbose:
            print(f"epoch {epoch}: unfroze from {self.schedule[epoch]!r}; "
                  f"{trainable_summary(model)}")

    def on_epoch_begin(self, engine, epoch):
        if epoch in self.schedule:
            self._unfreeze(engine, epoch)

    def on_resume(self, engine, epoch):
        for when in sorted(self.schedule):
            if when < epoch:
                self._unfreeze(engine, when)


def scalar(tag: str, value: float, step: int) -> None:
    """A TensorBoard scalar through TensorFlow's core summary op.

    ``tf.summary.scalar`` lives in the tensorboard package, which TensorFlow 2.21 no longer
    installs; the event (with the scalars plugin's metadata) is the same, and TensorBoard is
    then only needed to look at the logs.
    """
    import tensorflow as tf
    from tensorflow.core.framework import summary_pb2

    plugin = summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")
    metadata = summary_pb2.SummaryMetadata(plugin_data=plugin)
    tf.summary.write(tag, tf.constant(float(value), tf.float32), step=int(step), metadata=metadata)
