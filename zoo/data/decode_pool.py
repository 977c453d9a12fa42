"""Decode worker processes that import only numpy, scipy and pydicom, kept for the whole session.

Why not ``multiprocessing``: its spawned and forkserver children re-import the parent's
``__main__`` module, so a training script that imports TensorFlow at the top (most do) makes
every decode worker import TensorFlow too (seconds of start-up each). These workers are plain
``python -c`` interpreter that imports ``zoo.data`` modules (TensorFlow-free), then forks
itself into the workers (a fork of that single-threaded process costs milliseconds); each reads
pickled ``(function, jobs)`` chunks from its own pipe. Start-up is about half a second of CPU
however many workers, paid once per session: the pool stays up for the next dataset (train and
validation, a rebuild) and ends with this process (its pipes close) or with ``shutdown()``.
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
    "from zoo.data.decode_pool import _start; _start({fds!r})"
)
_WORKER_ENV = {
    **dict.fromkeys(("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"), "1"),
    # glibc: serve the per-slice arrays (about 1 MB each) from a heap kept between slices
    # instead of fresh mmap'd pages: a decoded CT slice cost 3.85 ms of CPU with the default
    # (350,000 page faults over 240 slices), 3.3 ms with these (measured)
    "MALLOC_MMAP_THRESHOLD_": str(32 << 20),
    "MALLOC_TRIM_THRESHOLD_": str(256 << 20),
    "MALLOC_TOP_PAD_": str(32 << 20),
}


def _send(stream, message) -> None:
    stream.write(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))
    stream.flush()


def _start(fds: list[tuple[int, int]]) -> None:
    """A started interpreter: import once, then fork one worker per further (jobs, replies) pipe
    pair (a fork of this single-threaded process costs milliseconds, an import half a second)
    and serve the first pair here."""
    os.dup2(2, 1)  # a stray print goes to stderr, never into a result pipe
    # what decoding and sizing use, imported before "ready"
    import pydicom.pixels  # noqa: F401
    import scipy.sparse  # noqa: F401

    import zoo.data.dicom  # noqa: F401
    import zoo.data.sized_cache  # noqa: F401

    mine = fds[0]
    for pair in fds[1:]:
        if os.fork() == 0:
            mine = pair
            break
    for pair in fds:
        if pair != mine:
            os.close(pair[0])
            os.close(pair[1])
    _serve(os.fdopen(mine[0], "rb"), os.fdopen(mine[1], "wb"))


def _serve(source, out) -> None:
    """The worker's loop: ("ready", pid), then for each (fn, jobs) read, ("done", results) or
    ("raised", exception); ends when the parent's pipe closes."""
    _send(out, ("ready", os.getpid()))
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
    """The CPU time of the process that runs this (a worker's cost; the first worker's includes
    the imports, the forked ones start from zero)."""
    return time.process_time()


def process_id(_=None) -> int:
    """The id of the process that runs this."""
    return os.getpid()


class _Worker:
    """One worker as seen from here: its pipes, and a thread that queues its replies."""

    def __init__(self, jobs_fd: int, replies_fd: int, replies: queue.Queue):
        self.jobs, self.replies = os.fdopen(jobs_fd, "wb"), os.fdopen(replies_fd, "rb")
        self.ready, self.dead, self.pid = False, False, None
        threading.Thread(target=self._read, args=(replies,), daemon=True).start()

    def _read(self, replies: queue.Queue) -> None:
        while True:
            try:
                message = pickle.load(self.replies)
            except Exception:  # EOF or a broken pipe: the worker is gone
                self.dead = True
                replies.put((self, ("dead", None)))
                return
            if message[0] == "ready":
                self.pid = message[1]
            replies.put((self, message))

    @property
    def alive(self) -> bool:
        return not self.dead

    def send(self, fn, jobs) -> None:
        _send(self.jobs, (fn, jobs))

    def close(self) -> None:
        try:
            self.jobs.close()  # the worker reads EOF and ends
        except OSError:
            pass


def _launch(workers: int, replies: queue.Queue) -> tuple[subprocess.Popen, list[_Worker]]:
    """One interpreter that becomes ``workers`` workers (forked after its imports where the
    platform forks; else call once per worker)."""
    pairs, theirs = [], []
    for _ in range(workers):
        jobs_r, jobs_w = os.pipe()
        replies_r, replies_w = os.pipe()
        pairs.append((jobs_w, replies_r))
        theirs.append((jobs_r, replies_w))
    env = {**os.environ, **_WORKER_ENV}
    path = [str(Path(__file__).resolve().parents[2])]  # where this zoo is imported from
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD.format(path=path, fds=theirs)],
            stdin=subprocess.DEVNULL, env=env, pass_fds=[fd for pair in theirs for fd in pair],
        )
    finally:
        for pair in theirs:
            os.close(pair[0])
            os.close(pair[1])
    return proc, [_Worker(w, r, replies) for w, r in pairs]


class DecodePool:
    """``workers`` worker processes; ``map`` runs a module-level function over jobs in them."""

    def __init__(self, workers: int):
        self._replies: queue.Queue = queue.Queue()
        self.workers, self._procs = [], []
        for group in ([workers] if hasattr(os, "fork") else [1] * workers):
            proc, started = _launch(group, self._replies)
            self._procs.append(proc)
            self.workers += started
        self.lock = threading.Lock()

    @property
    def alive(self) -> int:
        return sum(w.alive for w in self.workers)

    @property
    def started(self) -> bool:
        """Every worker has imported its modules and waits for jobs."""
        return all(w.ready for w in self.workers)

    def map(self, fn, jobs, chunk: int = 4, local=None, workers: int | None = None) -> list:
        """``[fn(job) for job in jobs]`` in the workers, results in the order of ``jobs``; a
        worker's exception is raised here.

        Each worker holds up to two chunks (the next one waits in its pipe while it works).
        Without ``local``, every worker gets a chunk up front, started or not. With
        ``local(job)``, this process runs jobs itself while no worker is free (a cold pool's
        start-up is hidden behind work) and takes over the jobs of workers that die; without
        it, a pool whose workers all died raises ``WorkersDied``. ``workers``: use only the
        first that many (default: all).
        """
        with self.lock:
            members = self.workers[:workers] if workers else self.workers
            return _Map(self, members, fn, list(jobs), chunk, local).run()

    def each(self, fn, arg=None) -> list:
        """``fn(arg)`` once in every worker (each gets one job up front), e.g. ``cpu_seconds``."""
        return self.map(fn, [arg] * len(self.workers), chunk=1)  # one each: all fed up front

    def close(self) -> None:
        for worker in self.workers:
            worker.close()
        for proc in self._procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()


class WorkersDied(RuntimeError):
    """Every worker process of the pool died (killed, or could not start)."""


class _Map:
    """One ``DecodePool.map``: chunks out to the workers, replies in, results in order."""

    DEPTH = 2  # chunks a worker holds: the next waits in its pipe while it works

    def __init__(self, pool: DecodePool, members: list, fn, jobs: list, chunk: int, local):
        self.pool, self.members = pool, members
        self.fn, self.jobs, self.chunk, self.local = fn, jobs, chunk, local
        self.results: list = [None] * len(jobs)
        self.todo = deque(range(len(jobs)))
        self.out: dict = {w: deque() for w in pool.workers}  # chunks each worker holds

    def feed(self, worker, force: bool = False) -> None:
        while (worker in self.members and self.todo and worker.alive and (worker.ready or force)
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
        for worker in self.members:
            self.feed(worker, force=self.local is None)
        while self.todo or self.running():
            if self.local is not None and self.todo and not self.running():
                i = self.todo.popleft()
                self.results[i] = self.local(self.jobs[i])
                self.drain(block=False)
                continue
            self.drain(block=True)
            if (self.todo and not self.running() and self.local is None
                    and not any(w.alive for w in self.members)):
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


def default_workers() -> int:
    """The pool size ``workers=None`` uses: the cores, at most 8 (decoding is per-slice CPU work;
    beyond 8 the parent's reading of the results and its writer thread limit)."""
    return min(os.cpu_count() or 1, 8)


def prestart() -> DecodePool | None:
    """Start the session's pool now, without waiting for it (None on one core).

    Why: a pool's start-up (about half a second of CPU in its own process) is hidden when it
    runs while this process does something single-threaded, such as importing TensorFlow or
    building a model; the first dataset then finds the pool warm instead of starting it."""
    workers = default_workers()
    return get_pool(workers) if workers > 1 else None


def warm_workers() -> int:
    """How many started workers the session's pool has (0: none, a pool would start cold)."""
    pool = _POOL
    if pool is None:
        return 0
    with pool.lock:  # between maps only "ready" and "dead" replies arrive
        while not pool._replies.empty():
            worker, (kind, _) = pool._replies.get()
            worker.ready = kind == "ready"
    return sum(w.ready and w.alive for w in pool.workers)


def workers_cpu_seconds() -> float:
    """The CPU seconds the session's workers used so far, start-up included (0 without a pool)."""
    pool = _POOL
    return sum(pool.each(cpu_seconds)) if pool is not None and pool.alive else 0.0


def shutdown() -> None:
    """Stop the session's decode workers (they also stop when this process ends)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is not None:
            _POOL.close()
        _POOL = None


atexit.register(shutdown)
