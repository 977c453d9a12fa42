"""tf.data service mode: a dispatcher and two workers on 127.0.0.1 deliver every element exactly once,
and the engine trains on what they send. Throughput with 1 and 2 workers is in bench_engine, not here."""

from __future__ import annotations

import threading

import keras
import numpy as np
import pytest
import tensorflow as tf

from zoo.errors import InvalidArgumentError
from zoo.train.data_service import DataService
from zoo.train.engine import Engine
from zoo.train.tasks import Classification

TIMEOUT_S = 120


def _within_timeout(fn):
    """Run ``fn`` in a daemon thread; fail (instead of hanging the suite) if the service stalls."""
    result = {}

    def run():
        try:
            result["value"] = fn()
        except BaseException as err:  # noqa: BLE001 (re-raised in the test's thread)
            result["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(TIMEOUT_S)
    assert not thread.is_alive(), f"the tf.data service did not finish within {TIMEOUT_S} s"
    if "error" in result:
        raise result["error"]
    return result["value"]


@pytest.fixture(scope="module")
def service():
    with DataService(workers=2) as running:
        yield running


def test_two_workers_deliver_every_element_exactly_once(service):
    assert len(service.workers) == 2 and service.target.startswith("grpc://")
    n = 203  # not a multiple of the batch: the short last batch arrives too
    source = tf.data.Dataset.range(n).map(lambda i: (i, tf.strings.as_string(i))).batch(4)
    ids, names = [], []
    for i, s in _within_timeout(lambda: list(service.distribute(source))):
        ids += i.numpy().tolist()
        names += [v.decode() for v in s.numpy()]
    assert sorted(ids) == list(range(n))  # each once: no element lost, none repeated
    assert names == [str(i) for i in ids]  # elements arrive whole (the map ran on the workers)
    # every worker reads the whole dataset in parallel_epochs mode
    both = _within_timeout(lambda: [int(v) for v in service.distribute(tf.data.Dataset.range(10), "parallel_epochs")])
    assert sorted(both) == sorted(list(range(10)) * 2)


def _engine():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs))
    return model, Engine(Classification(model), keras.optimizers.SGD(0.1))


def test_the_engine_trains_on_service_input_as_on_local_input(service):
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((24, 3)).astype("float32"), (rng.random(24) > 0.5).astype("int32")
    # the source's elements are whole batches (the split is per source element), one per epoch:
    # the same updates whichever worker sends it
    make = lambda epoch: tf.data.Dataset.from_tensor_slices((x[None], y[None]))  # noqa: E731
    local_model, local = _engine()
    local_history = local.fit(make, epochs=3)
    model, engine = _engine()
    history = _within_timeout(lambda: engine.fit(service.epochs(make), epochs=3))
    for a, b in zip(model.weights, local_model.weights, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)
    assert [row["loss"] for row in history] == pytest.approx([row["loss"] for row in local_history], rel=1e-6)
    assert history[-1]["loss"] < history[0]["loss"]
    # batched on the workers (batches then differ by timing), the means over all examples agree
    batched = tf.data.Dataset.from_tensor_slices((x, y)).batch(5)
    remote = _within_timeout(lambda: engine.evaluate(service.distribute(batched)))
    assert remote == pytest.approx(local.evaluate(batched), rel=1e-6)


def test_bad_arguments_are_refused():
    with pytest.raises(InvalidArgumentError, match="workers=0"):
        DataService(workers=0)
    from zoo.train.data_service import distribute

    with pytest.raises(InvalidArgumentError, match="tf.data.Dataset"):
        distribute([1, 2, 3], "grpc://127.0.0.1:1")
    with pytest.raises(InvalidArgumentError, match="processing_mode='sharded'"):
        distribute(tf.data.Dataset.range(3), "grpc://127.0.0.1:1", processing_mode="sharded")


def test_finetune_reads_a_dataset_through_the_service(service, tmp_path):
    import zoo
    from zoo.data.synthetic import make_phantoms
    from zoo.train.finetune import finetune

    train, val = make_phantoms(16, size=32, seed=5), make_phantoms(8, size=32, seed=6)
    batches = lambda d: tf.data.Dataset.from_tensor_slices((d.images.astype("float32"), d.labels)).batch(8)  # noqa: E731
    keras.utils.set_random_seed(0)
    model = zoo.load("simple_cnn", in_chans=1, num_classes=2, input_shape=(32, 32), widths=(8, 8, 8, 8, 8))
    result = _within_timeout(lambda: finetune(model, service.distribute(batches(train)), batches(val), epochs=(1, 0),
                                              augment=False, out_dir=tmp_path / "run", strategy="cpu", verbose=0))
    assert len(result.history) == 1 and np.isfinite(result.history[0]["loss"])
    assert (tmp_path / "run" / "run.json").exists()
