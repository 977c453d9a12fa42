"""tf.data service mode: decode and augment in worker processes, train on the batches they send.

The scale-out path of the input pipeline: ``tf.data.experimental.service`` (TensorFlow's own
distributed input engine) runs a dataset's graph on *workers*; a *dispatcher* hands each worker
its share, and the training process only reads finished elements over gRPC. ``DataService``
starts a dispatcher and N workers in this process on 127.0.0.1 (a test, a benchmark, or one
machine with spare cores); on a cluster start ``tf.data.experimental.service.DispatchServer`` /
``WorkerServer`` on the other machines and give their address as ``service=`` instead.

``processing_mode="distributed_epoch"`` (the default) splits the source among the workers so each
element is delivered exactly once per epoch; the order then depends on the workers' timing, so a
run through the service resumes at an epoch boundary, not mid-epoch. The split is of the source's
elements: each worker batches its own share, so which examples share a batch (and up to one
short batch per worker) depends on the workers' timing; to keep batches fixed, make the source's
elements whole batches (``from_tensor_slices`` over arrays shaped (batches, batch, ...)).
``"parallel_epochs"`` has
every worker read the whole dataset (each element once *per worker*). A ``from_generator``
source runs Python in the process that built it: it works with the in-process workers here,
not with workers on other machines (give those a file-based source such as ``list_files``).

Use with the engine: ``Engine.fit(service.epochs(make), ...)`` where ``make(epoch)`` builds the
epoch's ``tf.data.Dataset``; or ``service.distribute(dataset)`` for one pipeline, which
``zoo.finetune`` also takes as its training data (a batched dataset of (images, labels)).
"""

from __future__ import annotations

from collections.abc import Callable

from zoo.errors import InvalidArgumentError

MODES = ("distributed_epoch", "parallel_epochs")


def _positive(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgumentError(f"{name}={value!r}: give a positive integer.")
    return int(value)


def distribute(dataset, service: str, processing_mode: str = "distributed_epoch",
               job_name: str | None = None):
    """``dataset`` read through the tf.data service at ``service`` ("grpc://host:port").

    job_name: consumers that give the same name share one job (each element once across them);
    None gives this dataset its own job.
    """
    import tensorflow as tf

    if not isinstance(dataset, tf.data.Dataset):
        raise InvalidArgumentError(
            f"dataset={type(dataset).__name__}: the tf.data service distributes a "
            "tf.data.Dataset; build one (e.g. tf.data.Dataset.from_tensor_slices).")
    if processing_mode not in MODES:
        raise InvalidArgumentError(f"processing_mode={processing_mode!r}: use one of {MODES}.")
    return dataset.apply(tf.data.experimental.service.distribute(
        processing_mode=processing_mode, service=service, job_name=job_name))


class DataService:
    """A dispatcher and ``workers`` tf.data workers in this process, on 127.0.0.1.

    ``target`` is the address consumers read from. Use as a context manager (or call ``close``);
    the servers stop with it.
    """

    def __init__(self, workers: int = 2):
        import tensorflow as tf

        self.num_workers = _positive(workers, "workers")
        service = tf.data.experimental.service
        self.dispatcher = service.DispatchServer(service.DispatcherConfig(port=0))
        address = self.dispatcher.target.split("://", 1)[1]
        self.workers = [service.WorkerServer(service.WorkerConfig(
            dispatcher_address=address, port=0, worker_address="127.0.0.1:%port%"))
            for _ in range(self.num_workers)]
        self.target = self.dispatcher.target

    def distribute(self, dataset, processing_mode: str = "distributed_epoch",
                   job_name: str | None = None):
        """``dataset`` read through this service; see ``distribute``."""
        return distribute(dataset, self.target, processing_mode, job_name)

    def epochs(self, make: Callable[[int], object], processing_mode: str = "distributed_epoch"
               ) -> Callable[[int], object]:
        """Engine input: ``epoch -> make(epoch)`` read through this service (a job per epoch)."""
        def build(epoch: int):
            return self.distribute(make(epoch), processing_mode)

        return build

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.dispatcher.stop()
        self.workers = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
