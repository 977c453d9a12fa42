"""The engine's batch iterator deletes a used-up (or abandoned) tf.data iterator on another thread:
deleting one waits for tf.data's autotuning thread, which stalled epoch ends by seconds."""

from __future__ import annotations

import threading
import weakref

import numpy as np

from zoo.train import engine


def _join_deleters() -> None:
    for thread in threading.enumerate():
        if thread.name == "zoo-iterator-delete":
            thread.join(timeout=60)


def _pair(x):
    return x, 2 * x


def test_iterators_are_deleted_off_the_training_thread(monkeypatch):
    import tensorflow as tf

    where: list[str] = []
    real = engine._delete_elsewhere

    def watched(holder):
        weakref.finalize(holder[0], lambda: where.append(threading.current_thread().name))
        real(holder)

    monkeypatch.setattr(engine, "_delete_elsewhere", watched)
    ds = tf.data.Dataset.range(10).batch(4).map(_pair)
    got = [[np.asarray(t) for t in flat] for flat in engine.flat_batches(ds)]
    assert [g[0].tolist() for g in got] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert all(np.array_equal(g[1], 2 * g[0]) for g in got)
    _join_deleters()
    assert where == ["zoo-iterator-delete"]  # used up: deleted there, not here

    batches = engine.flat_batches(ds)
    next(batches)
    batches.close()  # abandoned mid-epoch (a stopped run)
    ragged = tf.data.Dataset.from_tensor_slices(tf.ragged.constant([[1], [2, 3]])).batch(2)
    assert len(list(engine.flat_batches(ragged.map(_pair)))) == 1  # the nest path
    _join_deleters()
    assert where == ["zoo-iterator-delete"] * 3
    assert threading.current_thread().name not in where
