"""Decode worker processes that import only numpy, scipy and pydicom, kept for the whole session.

Why not ``multiprocessing``: its spawned and forkserver children re-import the parent's
``__main__`` module, so a training script that imports TensorFlow at the top (most do) makes
every decode worker import TensorFlow too (seconds of start-up each). These workers are plain
``python -c`` interpreters that import ``zoo.data`` modules (TensorFlow-free) and read pickled
``(function, jobs)`` chunks from a pipe. Start-up is about half a second of CPU, paid once per
session: the pool stays up for the next dataset (train and validation, the next epoch's
rebuild) and ends with this process (its pipes close) or with ``shutdown()``.
"""

from __future__ import annotations

import atexit
import os
import pickle
import queue
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

_CHILD = (
    "import sys; sys.path[:0] = {path!r}; "
    "from zoo.data.decode_pool import _serve; _serve()"
)
_THREAD_LIMITS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _send(stream, message) -> None:
    stream.write(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))
    stream.flush()


def _serve() -> None:
    """The worker's loop: ("ready", pid), then for each (fn, jobs) read, ("done", results) or
    ("raised", exception); ends when the parent's pipe closes."""
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a stray print goes to stderr, never into the result pipe
    # what decoding and sizing use, imported before "ready"
    import pydicom.pixels  # noqa: F401
    import scipy.sparse  # noqa: F401

    import zoo.data.pipeline  # noqa: F401

    _send(out, ("ready", os.getpid()))
    source = sys.stdin.buffer
    while True:
        try:
            fn, jobs = pickle.load(source)
        except EOFError:
            return
        try:
            reply = ("done", [fn(job) for job in jobs])
        except BaseException as e:  # sent back and raised there, as in the parent
            reply = ("raised", e)
        try:
            _send(out, reply)
        except Exception as e:  # an exception (or result) that does not pickle
            _send(out, ("raised", RuntimeError(f"{type(e).__name__}: {e}")))


def loaded(module: str) -> bool:
    """Whether ``module`` is imported in the process that runs this (a worker's import check)."""
    return module in sys.modules


def cpu_seconds(_=None) -> float:
    """The CPU time of the process that runs this, start-up included (a worker's cost)."""
    return time.process_time()


class _Worker:
    def __init__(self, index: int, replies: queue.Queue):
        import zoo

        env = dict(os.environ, **{k: "1" for k in _THREAD_LIMITS})
        path = [str(Path(zoo.__file__).resolve().parents[1])]
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD.format(path=path)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
        )
        self.index, self.ready, self.busy = index, False, None
        threading.Thread(target=self._read, args=(replies,), daemon=True).start()

    def _read(self, replies: queue.Queue) -> None:
        while True:
            try:
                message = pickle.load(self.proc.stdout)
            except Exception:  # EOF or a broken pipe: the worker is gone
                replies.put((self, ("dead", None)))
                return
            replies.put((self, message))

    def send(self, fn, jobs) -> None:
        self.busy = jobs
        _send(self.proc.stdin, (fn, jobs))

    def close(self) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class DecodePool:
    """``workers`` worker processes; ``map`` runs a module-level function over jobs in them."""

    def __init__(self, workers: int):
        self._replies: queue.Queue = queue.Queue()
        self.workers = [_Worker(i, self._replies) for i in range(workers)]
        self.lock = threading.Lock()

    @property
    def alive(self) -> int:
        return sum(w.proc.poll() is None for w in self.workers)

    @property
    def started(self) -> bool:
        """Every worker has imported its modules and waits for jobs."""
        return all(w.ready for w in self.workers)

    def map(self, fn, jobs, chunk: int = 4, local=None) -> list:
        """``[fn(job) for job in jobs]`` in the workers, results in the order of ``jobs``; a
        worker's exception is raised here.

        Each worker holds up to two chunks (the next one waits in its pipe while it works).
        Without ``local``, every worker gets a chunk up front, started or not. With
        ``local(job)``, this process runs jobs itself while no worker is free (a cold pool's
        start-up is hidden behind work) and takes over the jobs of workers that die; without
        it, a pool whose workers all died raises ``WorkersDied``.
        """
        with self.lock:
            return _Map(self, fn, list(jobs), chunk, local).run()

    def each(self, fn, arg=None) -> list:
        """``fn(arg)`` once in every worker (each gets one job up front), e.g. ``cpu_seconds``."""
        return self.map(fn, [arg] * len(self.workers), chunk=1)

    def close(self) -> None:
        for worker in self.workers:
            worker.close()


class WorkersDied(RuntimeError):
    """Every worker process of the pool died (killed, or could not start)."""


class _Map:
    """One ``DecodePool.map``: chunks out to the workers, replies in, results in order."""

    DEPTH = 2  # chunks a worker holds: the next waits in its pipe while it works

    def __init__(self, pool: DecodePool, fn, jobs: list, chunk: int, local):
        self.pool, self.fn, self.jobs, self.chunk, self.local = pool, fn, jobs, chunk, local
        self.results: list = [None] * len(jobs)
        self.todo = deque(range(len(jobs)))
        self.out: dict = {w: deque() for w in pool.workers}  # chunks each worker holds

    def feed(self, worker, force: bool = False) -> None:
        while (self.todo and worker.proc.poll() is None and (worker.ready or force)
               and len(self.out[worker]) < (1 if force else self.DEPTH)):
            ids = [self.todo.popleft() for _ in range(min(self.chunk, len(self.todo)))]
            self.out[worker].append(ids)
            try:
                worker.send(self.fn, [self.jobs[i] for i in ids])
            except OSError:  # its pipe broke: it died, its "dead" reply gives the chunk back
                return

    def running(self) -> bool:
        return any(self.out.values())

    def run(self) -> list:
        for worker in self.pool.workers:
            self.feed(worker, force=self.local is None)
        while self.todo or self.running():
            if self.local is not None and self.todo and not self.running():
                i = self.todo.popleft()
                self.results[i] = self.local(self.jobs[i])
                self.drain(block=False)
                continue
            self.drain(block=True)
            if self.todo and not self.running() and self.local is None and not self.pool.alive:
                raise WorkersDied("every decode worker process died")
        return self.results

    def drain(self, block: bool) -> None:
        """Handle the workers' replies: wait for one when ``block``, then take those in."""
        while True:
            try:
                worker, (kind, value) = self.pool._replies.get(block=block, timeout=0.2)
            except queue.Empty:
                return
            if kind == "ready":
                worker.ready = True
            elif kind == "done":
                for i, result in zip(self.out[worker].popleft(), value):
                    self.results[i] = result
            elif kind == "raised":
                self.out[worker].popleft()
                self.todo.clear()
                self.settle()
                raise value
            else:  # dead: its chunks go back to the queue
                worker.ready = False
                for ids in reversed(self.out[worker]):
                    self.todo.extendleft(reversed(ids))
                self.out[worker].clear()
            self.feed(worker)
            block = False

    def settle(self) -> None:
        """After an exception: wait for the chunks still out, so the next map starts clean."""
        while self.running():
            worker, (kind, _) = self.pool._replies.get()
            if kind == "ready":
                worker.ready = True
            elif kind == "dead":
                self.out[worker].clear()
            else:
                self.out[worker].popleft()


_POOL: DecodePool | None = None
_POOL_LOCK = threading.Lock()


def get_pool(workers: int) -> DecodePool:
    """The session's pool with at least ``workers`` live workers (started or restarted here)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is not None and _POOL.alive >= workers and len(_POOL.workers) >= workers:
            return _POOL
        if _POOL is not None:
            _POOL.close()
        _POOL = DecodePool(workers)
        return _POOL


def warm_workers() -> int:
    """How many started workers the session's pool has (0: none, a pool would start cold)."""
    pool = _POOL
    if pool is None:
        return 0
    with pool.lock:  # between maps only "ready" and "dead" replies arrive
        while not pool._replies.empty():
            worker, (kind, _) = pool._replies.get()
            worker.ready = kind == "ready"
    return sum(w.ready and w.proc.poll() is None for w in pool.workers)


def shutdown() -> None:
    """Stop the session's decode workers (they also stop when this process ends)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is not None:
            _POOL.close()
        _POOL = None


atexit.register(shutdown)
