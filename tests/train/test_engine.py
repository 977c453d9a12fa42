"""The training engine: each task's step against numpy, two-optimizer and EMA steps, hooks,
streaming input, checkpoints and resume, bad input refused before training."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from zoo.errors import DataError, ResumeError
from zoo.train.engine import (
    EarlyStopping,
    Engine,
    GradualUnfreezing,
    Hook,
    LearningRateSchedule,
    StepOutput,
    Task,
    write_atomic,
)
from zoo.train.tasks import MIL, Classification, MultiLabel, Regression, Segmentation

LR = 0.5


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def _bce(t, p, eps=1e-7):
    p = np.clip(p, eps, 1 - eps)
    return -(t * np.log(p) + (1 - t) * np.log(1 - p))


def _dice_loss(p, onehot, smooth=1e-5):
    axes = tuple(range(1, p.ndim - 1))
    inter, total = (p * onehot).sum(axes), p.sum(axes) + onehot.sum(axes)
    return 1 - ((2 * inter + smooth) / (total + smooth)).mean(-1)


def _case(kind, rng):
    """(model, task, x, y, numpy per-example loss of (W, b, x, y)) for one task."""
    d = 3
    if kind == "segmentation_dice" or kind == "segmentation_dice_ce":
        x = rng.standard_normal((2, 4, 4, d)).astype("float32")
        y = rng.integers(0, 3, (2, 4, 4))
        inputs = keras.Input((4, 4, d))
        model = keras.Model(inputs, keras.layers.Conv2D(3, 1, activation="softmax")(inputs))
        loss = kind.removeprefix("segmentation_")

        def ref(W, b, x, y):
            p = _softmax(x @ W + b)
            onehot = np.eye(3)[y]
            value = _dice_loss(p, onehot)
            if loss == "dice_ce":
                value = value - (onehot * np.log(np.clip(p, 1e-7, 1))).sum(-1).mean((1, 2))
            return value

        return model, Segmentation(model, loss=loss), x, y, ref
    if kind == "mil":
        x = rng.standard_normal((4, 5, d)).astype("float32")
        y = np.array([0, 1, 1, 0])
        inputs = keras.Input((5, d))
        scores = keras.layers.Dense(1)(inputs)
        bag = keras.layers.GlobalAveragePooling1D(name="bag")(scores)
        model = keras.Model(inputs, {"bag": bag, "instance_maps": keras.layers.Identity(name="instance_maps")(scores)})
        return model, MIL(model), x, y, lambda W, b, x, y: _bce(y, _sigmoid((x @ W + b).mean(1)[:, 0]))
    x = rng.standard_normal((5, d)).astype("float32")
    inputs = keras.Input((d,))
    if kind == "classification":
        y = np.array([0, 1, 1, 0, 1])
        model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs))
        ref = lambda W, b, x, y: -np.log(_softmax(x @ W + b)[np.arange(len(y)), y])  # noqa: E731
        return model, Classification(model), x, y, ref
    if kind == "multilabel":
        y = rng.integers(0, 2, (5, 3))
        model = keras.Model(inputs, keras.layers.Dense(3, activation="sigmoid")(inputs))
        return model, MultiLabel(model), x, y, lambda W, b, x, y: _bce(y, _sigmoid(x @ W + b)).mean(-1)
    y = rng.standard_normal((5, 2)).astype("float32")
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    return model, Regression(model), x, y, lambda W, b, x, y: ((x @ W + b - y) ** 2).mean(-1)


def _numeric_grad(f, params, h=1e-6):
    grads = []
    for k, p in enumerate(params):
        g = np.zeros_like(p)
        for i in np.ndindex(p.shape):
            up = [q.copy() for q in params]
            down = [q.copy() for q in params]
            up[k][i] += h
            down[k][i] -= h
            g[i] = (f(*up) - f(*down)) / (2 * h)
        grads.append(g)
    return grads


@pytest.mark.parametrize("kind", ["classification", "multilabel", "regression", "segmentation_dice",
                                  "segmentation_dice_ce", "mil"])
def test_one_step_equals_numpy_loss_and_sgd_update(kind):
    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    model, task, x, y, ref = _case(kind, rng)
    w = rng.uniform(0.5, 2.0, len(x)).astype("float32")
    W0, b0 = (v.numpy().astype(np.float64) for v in model.trainable_weights)
    xd = x.astype(np.float64)

    def batch_loss(W, b):
        return float(np.sum(ref(W, b, xd, y) * w) / len(x))

    engine = Engine(task, keras.optimizers.SGD(LR))
    history = engine.fit(tf.data.Dataset.from_tensors((x, y, w)), epochs=1)
    assert history[0]["loss"] == pytest.approx(batch_loss(W0, b0), abs=1e-5)
    gW, gb = _numeric_grad(batch_loss, [W0, b0])
    np.testing.assert_allclose(model.trainable_weights[0].numpy(), W0 - LR * gW, atol=1e-5)
    np.testing.assert_allclose(model.trainable_weights[1].numpy(), b0 - LR * gb, atol=1e-5)


class _Adversarial(Task):
    """A generator and a discriminator, each with its own optimizer, from one forward pass."""

    optimizers = ("generator", "discriminator")

    def __init__(self):
        gi, di = keras.Input((2,)), keras.Input((3,))
        self.g = keras.Model(gi, keras.layers.Dense(3)(gi))
        self.d = keras.Model(di, keras.layers.Dense(1, activation="sigmoid")(di))

    def models(self):
        return {"generator": self.g, "discriminator": self.d}

    def trainable(self, name):
        return (self.g if name == "generator" else self.d).trainable_variables

    def losses(self, batch):
        noise, real, _ = batch
        fake_p, real_p = self.d(self.g(noise)), self.d(real)
        d_loss = -tf.math.log(real_p[:, 0]) - tf.math.log(1 - fake_p[:, 0])
        return {"generator": -tf.math.log(fake_p[:, 0]), "discriminator": d_loss}

    def step(self, batch, training):
        return StepOutput(self.losses(batch))


def test_two_optimizer_step_updates_each_model_with_its_own_loss():
    keras.utils.set_random_seed(1)
    task = _Adversarial()
    rng = np.random.default_rng(1)
    batch = (rng.standard_normal((4, 2)).astype("float32"), rng.standard_normal((4, 3)).astype("float32"),
             np.ones(4, np.float32))
    before = {n: [v.numpy().copy() for v in task.trainable(n)] for n in task.optimizers}
    with tf.GradientTape(persistent=True) as tape:
        losses = {k: tf.reduce_mean(v) for k, v in task.losses(batch).items()}
    expected = {n: [b - 0.1 * g.numpy() for b, g in zip(before[n], tape.gradient(losses[n], task.trainable(n)), strict=True)]
                for n in task.optimizers}
    engine = Engine(task, {"generator": keras.optimizers.SGD(0.1), "discriminator": keras.optimizers.SGD(0.1)})
    row = engine.fit(tf.data.Dataset.from_tensors(batch), epochs=1)[0]
    assert {"generator_loss", "discriminator_loss"} <= set(row)
    for name in task.optimizers:  # each model moved by its own loss's gradient only
        for v, e in zip(task.trainable(name), expected[name], strict=True):
            np.testing.assert_allclose(v.numpy(), e, atol=1e-6)


class _MeanTeacher(Classification):
    def __init__(self, student, teacher, decay):
        super().__init__(student)
        self.teacher, self.ema = teacher, [(teacher, student, decay)]

    def models(self):
        return {"student": self.model, "teacher": self.teacher}


def test_ema_step_moves_only_the_teacher_towards_the_updated_student():
    keras.utils.set_random_seed(2)
    make = lambda: keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])  # noqa: E731
    student, teacher = make(), make()
    t0 = [v.numpy().copy() for v in teacher.weights]
    x, y = np.random.default_rng(2).standard_normal((4, 3)).astype("float32"), np.array([0, 1, 0, 1])
    engine = Engine(_MeanTeacher(student, teacher, 0.9), keras.optimizers.SGD(0.1))
    assert len(engine.optimizers["main"].variables) == 2  # teacher variables are not the optimizer's
    engine.fit(tf.data.Dataset.from_tensors((x, y)), epochs=1)
    for t, t_before, s in zip(teacher.weights, t0, student.weights, strict=True):
        np.testing.assert_allclose(t.numpy(), 0.9 * t_before + 0.1 * s.numpy(), atol=1e-6)


def _classifier(seed=0, dropout=0.0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4,))
    h = keras.layers.Dense(8, activation="relu", name="body")(inputs)
    h = keras.layers.Dropout(dropout)(h)
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="head_fc")(h))


def _data(n=24, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 4)).astype("float32")
    return x, (x[:, 0] + 0.3 * x[:, 1] > 0).astype(np.int32)


def _epochs(x, y, batch=6):
    """A deterministic per-epoch order, as resume needs."""
    return lambda e: tf.data.Dataset.from_tensor_slices(
        (x[np.random.default_rng([0, e]).permutation(len(x))], y[np.random.default_rng([0, e]).permutation(len(x))])
    ).batch(batch)


def test_resume_mid_epoch_equals_the_uninterrupted_run(tmp_path):
    x, y = _data()
    full = Engine(Classification(_classifier(dropout=0.3)), keras.optimizers.Adam(0.01), checkpoint_dir=tmp_path / "a")
    full.fit(_epochs(x, y), epochs=3)

    class Stop(Hook):  # a run that dies after 6 of its 12 steps (mid epoch 2), checkpointing each step
        def on_batch_end(self, engine, step, logs):
            if engine.step_count == 6:
                raise KeyboardInterrupt

    first = Engine(Classification(_classifier(dropout=0.3)), keras.optimizers.Adam(0.01), checkpoint_dir=tmp_path / "b",
                   checkpoint_every=1, hooks=[Stop()])
    with pytest.raises(KeyboardInterrupt):
        first.fit(_epochs(x, y), epochs=3)
    resumed_model = _classifier(seed=5, dropout=0.3)  # other initial weights: all must come from the checkpoint
    resumed = Engine(Classification(resumed_model), keras.optimizers.Adam(0.01), checkpoint_dir=tmp_path / "b")
    history = resumed.fit(_epochs(x, y), epochs=3, resume=True)
    for a, b in zip(full.task.model.variables, resumed_model.variables, strict=True):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-6, atol=1e-7)
    assert [r["loss"] for r in history] == pytest.approx([r["loss"] for r in full.history], rel=1e-6)
    assert len(resumed.checkpoints()) == 2  # older ones pruned

    other = Engine(Classification(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])),
                   keras.optimizers.Adam(0.01), checkpoint_dir=tmp_path / "b")
    with pytest.raises(ResumeError, match="other models or optimizers"):
        other.fit(_epochs(x, y), epochs=3, resume=True)


def test_a_killed_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ckpt-000000001.npz"
    write_atomic(path, b"old")
    killed = []
    monkeypatch.setenv("ZOO_TEST_KILL_CHECKPOINT_BYTES", "70000")
    monkeypatch.setattr("zoo.train.engine._kill_self", lambda: killed.append(True) or (_ for _ in ()).throw(SystemExit))
    with pytest.raises(SystemExit):
        write_atomic(path, b"x" * 200_000)
    assert killed and path.read_bytes() == b"old"
    assert path.with_name(path.name + ".partial").stat().st_size == 70000


def test_streaming_input_is_consumed_batch_by_batch():
    """A generator-backed pipeline: the engine never runs ahead by more than prefetch + 2 batches."""
    x, y = _data(64)
    produced, consumed, lead = [0], [0], []

    def batches():
        for start in range(0, 64, 4):
            lead.append(produced[0] - consumed[0])  # batches handed to the pipeline, not yet trained on
            produced[0] += 1
            yield x[start:start + 4], y[start:start + 4]

    spec = (tf.TensorSpec((None, 4), tf.float32), tf.TensorSpec((None,), tf.int32))
    ds = tf.data.Dataset.from_generator(batches, output_signature=spec).prefetch(2)

    class Count(Hook):
        def on_epoch_begin(self, engine, epoch):
            produced[0] = consumed[0] = 0

        def on_batch_end(self, engine, step, logs):
            consumed[0] += 1

    engine = Engine(Classification(_classifier()), keras.optimizers.Adam(0.02), hooks=[Count()])
    history = engine.fit(ds, epochs=3)
    assert max(lead) <= 2 + 2  # prefetch 2, + 2 (the step's and one in flight); as_arrays held all 16
    assert history[-1]["loss"] < history[0]["loss"]


def test_hooks_schedule_early_stopping_and_gradual_unfreezing(tmp_path):
    x, y = _data()
    model = _classifier()
    model.get_layer("body").trainable = False
    stop = EarlyStopping("val_loss", patience=1)
    engine = Engine(Classification(model), keras.optimizers.SGD(0.1), checkpoint_dir=tmp_path,
                    hooks=[LearningRateSchedule(lambda e: 0.1 / (e + 1)), GradualUnfreezing({1: "body"}), stop])
    frozen = model.get_layer("body").kernel.numpy().copy()
    history = engine.fit(_epochs(x, y), epochs=4, val=_epochs(x, y))
    assert [r["learning_rate"] for r in history] == pytest.approx([0.1 / (e + 1) for e in range(len(history))])
    assert not np.allclose(model.get_layer("body").kernel.numpy(), frozen)  # unfrozen at epoch 1 and trained
    assert len(engine.optimizers["main"].variables) > 2 or model.get_layer("body").trainable
    assert stop.best == min(r["val_loss"] for r in history)
    state = json.loads(bytes(np.load(engine.checkpoints()[-1])["state.json"]).decode())
    assert state["epoch"] == len(history) and state["hooks"][2]["best"] == stop.best


@pytest.mark.parametrize("task,y,message", [
    (Classification, np.zeros((6, 2), np.int32), "use task='multilabel'"),
    (Classification, np.full(6, np.nan, np.float32), "NaN"),
    (MultiLabel, np.zeros(6, np.int32), r"give \(N, 2\)"),
])
def test_labels_that_do_not_fit_the_task_are_refused_before_training(task, y, message):
    model = _classifier()
    before = [v.numpy().copy() for v in model.weights]
    engine = Engine(task(model), keras.optimizers.SGD(0.1))
    with pytest.raises(DataError, match=message):
        engine.fit(tf.data.Dataset.from_tensor_slices((np.zeros((6, 4), np.float32), y)).batch(3), epochs=1)
    assert all(np.array_equal(a, b.numpy()) for a, b in zip(before, model.weights, strict=True))


def test_masks_of_the_wrong_shape_and_empty_data_are_refused():
    inputs = keras.Input((4, 4, 1))
    model = keras.Model(inputs, keras.layers.Conv2D(2, 1, activation="softmax")(inputs))
    engine = Engine(Segmentation(model), keras.optimizers.SGD(0.1))
    with pytest.raises(DataError, match=r"masks of shape \(8, 8\)"):
        engine.fit(tf.data.Dataset.from_tensors((np.zeros((2, 4, 4, 1), np.float32), np.zeros((2, 8, 8)))), 1)
    with pytest.raises(DataError, match="empty dataset"):
        engine.fit(tf.data.Dataset.from_tensors((np.zeros((2, 4, 4, 1), np.float32), np.zeros((2, 4, 4)))).take(0), 1)


def _conv_net():
    keras.utils.set_random_seed(3)
    inputs = keras.Input((6, 6, 2))
    h = keras.layers.Conv2D(4, 3)(inputs)
    h = keras.layers.ReLU()(keras.layers.BatchNormalization()(h))
    h = keras.layers.Dropout(0.2)(keras.layers.GlobalAveragePooling2D()(h))
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(h))


def test_fast_step_calls_equal_the_plain_tf_function_path_bit_for_bit():
    """The one-device fast path (flat tensors into the traced concrete function, unit weights added
    in the graph, totals summed on the host) trains exactly as the plain path: every batch
    through ``tf.function`` with its weights from a ``tf.data`` map and the totals summed by
    TensorFlow. 22 examples in batches of 8: the short last batch takes the relaxed trace."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((22, 6, 6, 2)).astype("float32")
    y = rng.integers(0, 3, 22).astype(np.int32)
    xv, yv = x[:10] + 0.5, y[:10]

    def order(e):
        return np.random.default_rng([2, e]).permutation(22)

    steps = {}

    class Logs(Hook):
        def on_batch_end(self, engine, step, logs):
            steps.setdefault(engine.fast_calls, []).append(logs())

    def run(fast):
        if fast:  # (x, y) batches, as a user gives them
            train = lambda e: tf.data.Dataset.from_tensor_slices((x[order(e)], y[order(e)])).batch(8)  # noqa: E731
            val = tf.data.Dataset.from_tensor_slices((xv, yv)).batch(4)
        else:  # the weights fed by the pipeline, as before the fast path
            ones = np.ones(22, np.float32)
            train = lambda e: tf.data.Dataset.from_tensor_slices((x[order(e)], y[order(e)], ones)).batch(8)  # noqa: E731
            val = tf.data.Dataset.from_tensor_slices((xv, yv, ones[:10])).batch(4)
        model = _conv_net()
        engine = Engine(Classification(model), keras.optimizers.Adam(0.05), hooks=[Logs()])
        engine.fast_calls = fast
        history = engine.fit(train, epochs=2, val=val)
        return engine, [w.numpy() for w in model.variables], history

    fast, fast_weights, fast_history = run(True)
    plain, plain_weights, plain_history = run(False)
    for a, b in zip(fast_weights, plain_weights, strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(fast_history, plain_history, strict=True):
        assert {k: v for k, v in a.items() if k != "seconds"} == {
            k: v for k, v in b.items() if k != "seconds"}
    assert steps[True] == steps[False] and len(steps[True]) == 6
    assert fast_history[1]["loss"] != fast_history[0]["loss"]  # it trained
    # one trace for the full batches, one relaxed trace for the short last one; none per step
    assert fast._train.experimental_get_tracing_count() == 2
    assert fast._eval.experimental_get_tracing_count() <= 2


def test_host_totals_add_in_float32_as_tensorflow_does():
    """Step sums are added on the host in float32 in step order: the same bits as TensorFlow's
    sequential adds, across the fold of pending steps."""
    from zoo.train.engine import _Totals

    rng = np.random.default_rng(0)
    parts = [tf.constant((rng.standard_normal(6) * 10.0 ** rng.integers(-3, 4)).astype("float32"))
             for _ in range(150)]
    start = rng.standard_normal(6).astype("float32").tolist()
    totals, reference = _Totals(start), tf.constant(start, tf.float32)
    for part in parts:
        totals.add(part)
        reference = reference + part
    np.testing.assert_array_equal(totals.value(), reference.numpy())
    assert _Totals().value() is None


def test_bench_engine_overhead_row_runs(capsys):
    """``benchmarks/bench_engine.py --only overhead`` (the before/after check) prints its row."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_engine.py"
    spec = importlib.util.spec_from_file_location("bench_engine", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = type("Args", (), {"steps": 1, "repeats": 1})()  # 20 steps
    row = bench.bench_overhead(args)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[0].startswith("tiny Dense") and float(cells[1]) > 0 and float(cells[2]) > 0
    assert cells[3].endswith("x")
    assert float(cells[3][:-1]) == pytest.approx(float(cells[1]) / float(cells[2]), abs=0.02)
    capsys.readouterr()


def test_flat_batches_are_the_elements_flattened_with_or_without_iterator_internals(monkeypatch):
    """The raw get-next gives each element's flat tensors, as ``next`` + flatten does (the
    fallback where TensorFlow's iterator internals are missing); composite elements are not
    'plain' and keep the ordinary path."""
    import zoo.train.engine as engine_module

    x, y = _data(10)
    ds = tf.data.Dataset.from_tensor_slices(({"image": x}, y)).batch(4)
    raw = [[t.numpy() for t in flat] for flat in engine_module.flat_batches(ds)]
    monkeypatch.setattr(engine_module, "_raw_next", lambda iterator: None)
    plain = [[t.numpy() for t in flat] for flat in engine_module.flat_batches(ds)]
    expected = [[b[0]["image"], b[1]] for b in ds.as_numpy_iterator()]
    assert [len(f[0]) for f in raw] == [4, 4, 2]
    for got in (raw, plain):
        for a, b in zip(got, expected, strict=True):
            for pa, pb in zip(a, b, strict=True):
                np.testing.assert_array_equal(pa, pb)
    ragged = tf.data.Dataset.from_tensor_slices((tf.ragged.constant([[1.0], [2.0, 3.0]]), [0, 1]))
    assert engine_module.plain_tensors(ds.element_spec)
    assert not engine_module.plain_tensors(ragged.batch(2).element_spec)


def test_repeated_engines_and_feature_passes_never_call_a_tf_function(monkeypatch):
    """TensorFlow's frequent-retracing detector counts calls through ``tf.function`` per Python
    code object; every engine's step (and every feature pass) shares one, so calling each new
    function once made it warn of "retracing" from the second fine-tuning run in a process
    although nothing was traced twice. One device, the engine and the feature cache trace with
    ``get_concrete_function`` and call concrete functions: no call reaches the detector. Calls
    are counted at the ``tf.function`` type (the detector allows two warnings per process, so
    the log alone would not show a regression after earlier tests); the log is checked too."""
    import logging

    from zoo.train.feature_cache import compute_features, split_head

    function_type = type(tf.function(lambda: 0))
    calls, original = [], function_type.__call__

    def counted(self, *args, **kwargs):
        if tf.executing_eagerly():  # what the detector counts (not a call inside another trace)
            calls.append(self.name)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(function_type, "__call__", counted)
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("tensorflow").addHandler(handler)
    x, y = _data(10)
    try:
        for whole_epoch in (False, True, False, True, False, True):
            model = _mlp()
            engine = Engine(Classification(model), keras.optimizers.Adam(0.01),
                            whole_epoch=whole_epoch)
            engine.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(4), 1,
                       tf.data.Dataset.from_tensor_slices((x, y)).batch(8))
            backbone, _ = split_head(_frozen_head_model())
            features = compute_features(backbone, x.reshape(10, 2, 2, 1), batch_size=4)
            assert features.shape == (10, 3)
    finally:
        logging.getLogger("tensorflow").removeHandler(handler)
    assert calls == []
    assert not [r for r in records if "retracing" in r.getMessage()]


def _mlp():
    inputs = keras.Input((4,))
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs))


def _frozen_head_model():
    """A conv backbone (frozen, as zoo.finetune's stage 1 has it) and a Dense head."""
    inputs = keras.Input((2, 2, 1))
    h = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(3, 1, trainable=False)(inputs))
    return keras.Model(inputs, keras.layers.Dense(2)(h))


def test_checkpoints_are_written_in_the_background_with_the_values_they_were_taken_with(
        tmp_path, monkeypatch):
    """The engine copies the variables when it takes a checkpoint and writes the file in a
    thread while training goes on (made slow here, so that the next epoch trains during the
    write): each file holds the model as it was at its epoch's end, the writes never overlap,
    fit returns with the last one on disk, and a failed write is raised in the training thread."""
    import threading
    import time

    import zoo.train.engine as engine_module

    writes, running, original = [], [], engine_module.write_atomic

    def slow(path, data):
        running.append(path)
        writes.append((path.name, threading.current_thread().name, len(running)))
        time.sleep(0.3)
        original(path, data)
        running.remove(path)

    class Snapshot(Hook):
        def __init__(self):
            self.weights = []

        def on_epoch_end(self, engine, epoch, logs):  # the state the epoch-end checkpoint takes
            self.weights.append([v.numpy().copy() for v in engine.task.model.variables])

    monkeypatch.setattr(engine_module, "write_atomic", slow)
    x, y = _data()
    snapshot = Snapshot()
    engine = Engine(Classification(_classifier()), keras.optimizers.Adam(0.05),
                    hooks=[snapshot], checkpoint_dir=tmp_path, keep_checkpoints=3)
    engine.fit(_epochs(x, y), epochs=3)
    assert [name for name, _, _ in writes] == [f"ckpt-{4 * e:09d}.npz" for e in (1, 2, 3)]
    assert {(thread, at_once) for _, thread, at_once in writes} == {("zoo-checkpoint", 1)}
    for path, weights in zip(engine.checkpoints(), snapshot.weights, strict=True):
        with np.load(path) as npz:
            for i, w in enumerate(weights):
                np.testing.assert_array_equal(npz[f"model/model/{i}"], w)
    assert not np.array_equal(snapshot.weights[0][0], snapshot.weights[1][0])  # it trained
    assert not list(tmp_path.glob("*.partial"))

    def fail(path, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(engine_module, "write_atomic", fail)
    with pytest.raises(OSError, match="No space left"):
        engine.fit(_epochs(x, y), epochs=4)
