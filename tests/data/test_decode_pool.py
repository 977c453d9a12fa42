"""The decode worker pool: TensorFlow-free workers, results in order, errors raised here, dead
workers' jobs redone; items decoded and sized in workers equal those done here; the decode
cache's reader version keys it (an older version's files are never read)."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest
import tensorflow as tf  # noqa: F401  (loaded here, as in a training process)

from zoo.data import decode_pool, pipeline
from zoo.data.dicom import read_dicom
from zoo.data.pipeline import dicom_dataset
from zoo.data.synthetic_dicom import write_ct_series
from zoo.errors import DicomError


@pytest.fixture(scope="module")
def pool():
    yield decode_pool.get_pool(2)
    decode_pool.shutdown()


def test_workers_do_not_import_tensorflow(pool):
    assert "tensorflow" in __import__("sys").modules  # this process has it
    assert pool.each(decode_pool.loaded, "tensorflow") == [False, False]
    assert pool.map(decode_pool.loaded, ["pydicom", "scipy.sparse", "keras"]) == [True, True, False]
    assert decode_pool.warm_workers() == 2


def test_map_keeps_order_and_raises_worker_errors_here(pool, tmp_path):
    assert pool.map(abs, list(range(-20, 0)), chunk=3) == list(range(20, 0, -1))
    (tmp_path / "x.dcm").write_bytes(b"not dicom")
    with pytest.raises(DicomError, match="x.dcm"):
        pool.map(read_dicom, [tmp_path / "x.dcm"])
    assert pool.map(abs, [-1, -2]) == [1, 2]  # the pool is usable after an error


def _kill(worker) -> None:
    os.kill(worker.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while worker.alive and time.monotonic() < deadline:
        time.sleep(0.01)


def test_jobs_of_a_killed_worker_are_redone():
    pool = decode_pool.DecodePool(2)
    try:
        # one interpreter started, the second worker forked from it after the imports
        pids = set(pool.map(decode_pool.process_id, range(8), chunk=1))
        assert pids == {w.pid for w in pool.workers} and len(pids) == 2
        assert set(pool.map(decode_pool.process_id, range(6), chunk=1, workers=1)) == {
            pool.workers[0].pid}  # workers=1: the first only
        _kill(pool.workers[1])
        assert pool.map(abs, list(range(-9, 0))) == list(range(9, 0, -1))
        _kill(pool.workers[0])
        with pytest.raises(decode_pool.WorkersDied):
            pool.map(abs, [-1])
        assert pool.map(abs, [-1, -2], local=abs) == [1, 2]  # this process takes over
    finally:
        pool.close()


def test_items_sized_in_workers_equal_those_sized_here(pool, tmp_path, monkeypatch):
    for k in range(2):
        write_ct_series(tmp_path / "src" / f"s{k}", n_slices=3, size=40, seed=k)
    options = {"input_shape": (16, 16, 3), "shuffle": False, "batch_size": 6}
    here = dicom_dataset(tmp_path / "src", cache_dir=tmp_path / "a", workers=1, **options)
    there = dicom_dataset(tmp_path / "src", cache_dir=tmp_path / "b", workers=2, **options)
    assert (there.dicom.decode_processes, there.dicom.sized, there.dicom.decoded) == (2, 6, 6)
    np.testing.assert_array_equal(np.concatenate(list(there)), np.concatenate(list(here)))
    # workers=None uses a running pool (one worker per core) from 2 items per worker
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    auto = dicom_dataset(tmp_path / "src", cache_dir=tmp_path / "c", **options)
    assert (auto.dicom.decoded, auto.dicom.decode_processes) == (6, 2)


def test_an_older_reader_versions_decode_cache_is_never_read(tmp_path, monkeypatch):
    write_ct_series(tmp_path / "src", n_slices=2, size=16, seed=5)
    # MIL with one full-frame tile: samples read the decode cache itself
    options = {"input_shape": (16, 16, 1), "shuffle": False, "workers": 1, "sampler": "mil",
               "tiles": 1}
    monkeypatch.setattr(pipeline, "READER_VERSION", pipeline.READER_VERSION - 1)
    dicom_dataset(tmp_path / "src", cache_dir=tmp_path / "c", **options)
    for npy in (tmp_path / "c").glob("*.npy"):  # what the old version left: values all wrong
        np.save(npy, np.full((1, 16, 16, 1), 3000, np.int16))
    old = dicom_dataset(tmp_path / "src", cache_dir=tmp_path / "c", **options)
    assert old.dicom.decoded == 0 and np.concatenate(list(old)).min() == 255.0
    monkeypatch.undo()
    new = dicom_dataset(tmp_path / "src", cache_dir=tmp_path / "c", **options)
    fresh = dicom_dataset(tmp_path / "src", cache_dir=tmp_path / "fresh", **options)
    assert (new.dicom.decoded, new.dicom.cached) == (2, 0)
    np.testing.assert_array_equal(np.concatenate(list(new)), np.concatenate(list(fresh)))
    assert np.concatenate(list(new)).min() < 255.0
    assert len(list((tmp_path / "c").glob("*.npy"))) == 4  # the old files are left alone


def test_a_prestarted_pool_is_used_by_the_first_small_dataset(monkeypatch):
    """``prestart`` (the CLI calls it before TensorFlow imports) leaves a pool that warms up
    without being waited for; a dataset too small to start a pool then decodes in it."""
    decode_pool.shutdown()
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    jobs = 2 * 2  # enough for a warm pool, far too few to start a cold one
    assert jobs < pipeline.AUTO_JOBS_PER_WORKER * 2
    assert pipeline._auto_workers(jobs) == 1
    try:
        pool = decode_pool.prestart()
        assert pool is decode_pool.get_pool(2) and len(pool.workers) == 2
        deadline = time.monotonic() + 60
        while decode_pool.warm_workers() < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pipeline._auto_workers(jobs) == 2
        assert len(set(pool.each(decode_pool.process_id)) - {os.getpid()}) == 2
    finally:
        decode_pool.shutdown()
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    assert decode_pool.prestart() is None
