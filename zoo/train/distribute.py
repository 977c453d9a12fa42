"""``strategy(name)``: the tf.distribute strategy for this machine or cluster, by one name.

Every zoo training path builds its model and optimizer inside ``strategy.scope()`` and
trains with the zoo's one training engine (zoo.train.engine), so one code path serves a
laptop CPU, several GPUs, a ``TF_CONFIG`` cluster and a TPU.

MultiWorkerMirroredStrategy must be created before TensorFlow runs its first operation
(collective ops are configured at start-up), so create the strategy first in a worker
script, before loading any model.
"""

from __future__ import annotations

import json
import os

from zoo.errors import InvalidArgumentError, StrategyError
from zoo.registry import Registry

NAMES = ("auto", "cpu", "mirrored", "multiworker", "tpu")
_STRATEGIES = Registry("strategy", NAMES, hint="Or pass a tf.distribute.Strategy.")



def _tf_config() -> dict | None:
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return None
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as e:
        raise StrategyError(
            f"TF_CONFIG is not valid JSON ({e}); set it to "
            '{"cluster": {"worker": ["host:port", ...]}, "task": {"type": '
            '"worker", "index": 0}}.'
        ) from None
    if not isinstance(config, dict) or "cluster" not in config or "task" not in config:
        raise StrategyError(
            "TF_CONFIG needs a 'cluster' and a 'task' entry, e.g. "
            '{"cluster": {"worker": ["10.0.0.1:2222", "10.0.0.2:2222"]}, "task": '
            '{"type": "worker", "index": 0}}.'
        )
    return config


def cluster_size() -> int:
    """Number of worker/chief tasks in ``TF_CONFIG`` (0 without one)."""
    config = _tf_config()
    if config is None:
        return 0
    cluster = config["cluster"]
    return sum(len(cluster.get(kind, [])) for kind in ("chief", "worker"))


def is_chief() -> bool:
    """True on the task that writes checkpoints and logs (the chief, else worker 0)."""
    config = _tf_config()
    if config is None:
        return True
    task = config["task"]
    if "chief" in config["cluster"]:
        return task.get("type") == "chief"
    return task.get("type") == "worker" and int(task.get("index", 0)) == 0


def _tpu_resolver(tpu: str | None):
    import tensorflow as tf

    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
            tpu=tpu or os.environ.get("TPU_NAME", "")
        )
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as e:
        raise StrategyError(
            f"strategy('tpu'): no TPU could be reached ({str(e).splitlines()[0]}). Run on a TPU VM "
            "or Colab TPU runtime, or use strategy('auto')."
        ) from None
    return resolver


def _tpu_available() -> bool:
    return bool(os.environ.get("TPU_NAME") or os.environ.get("COLAB_TPU_ADDR")
                or os.path.exists("/dev/accel0") or os.path.exists("/dev/vfio/0"))


def strategy(name="auto", *, devices=None, tpu: str | None = None):
    """A ``tf.distribute.Strategy`` by name.

    auto: a TF_CONFIG cluster of more than one task -> multiworker; a TPU -> tpu; more than one
        GPU -> mirrored; one GPU -> that GPU; otherwise TensorFlow's default (one device).
    cpu: the first CPU, even where GPUs exist.
    mirrored: synchronous data parallelism over ``devices`` (default: every GPU, else the CPU);
        e.g. ``devices=["/cpu:0", "/cpu:1"]`` over two logical CPU devices.
    multiworker: MultiWorkerMirroredStrategy over the TF_CONFIG cluster (ring all-reduce).
    tpu: TPUStrategy on ``tpu`` (or $TPU_NAME / the Colab TPU).
    A Strategy object is returned unchanged.
    """
    import tensorflow as tf

    if isinstance(name, tf.distribute.Strategy):
        return name
    _STRATEGIES.check(name)
    if devices is not None and name != "mirrored":
        raise InvalidArgumentError(
            f"strategy({name!r}, devices=...): devices only apply to 'mirrored'."
        )
    if name == "auto":
        name = _auto_name()
        if not isinstance(name, str):
            return name
    if name == "cpu":
        return tf.distribute.OneDeviceStrategy("/cpu:0")
    if name == "mirrored":
        if devices is not None:
            _check_devices(devices)
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "multiworker":
        return _multiworker()
    return tf.distribute.TPUStrategy(_tpu_resolver(tpu))


def _auto_name():
    """The strategy name 'auto' resolves to, or the one-device strategy itself where one fits."""
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    if cluster_size() > 1:
        return "multiworker"
    if _tpu_available():
        return "tpu"
    if len(gpus) > 1:
        return "mirrored"
    if gpus:
        return tf.distribute.OneDeviceStrategy(gpus[0].name)
    return tf.distribute.get_strategy()


def _canonical_device(name: str) -> str:
    """A device name without job/replica/task, lower case, so user and TF spellings compare."""
    import tensorflow as tf

    spec = tf.DeviceSpec.from_string(name).replace(job=None, replica=None, task=None)
    return spec.to_string().lower()


def _check_devices(devices) -> None:
    """StrategyError naming the devices of a 'mirrored' request that this machine lacks."""
    import tensorflow as tf

    known = {_canonical_device(d.name) for d in tf.config.list_logical_devices()}
    missing = [d for d in devices if _canonical_device(d) not in known]
    if missing:
        raise StrategyError(
            f"strategy('mirrored', devices={list(devices)}): {missing} do not exist here "
            f"(logical devices: {sorted(known)}). Split a CPU into logical devices with "
            "tf.config.set_logical_device_configuration before TensorFlow starts.")


def _multiworker():
    """MultiWorkerMirroredStrategy, or a StrategyError saying how to set up the cluster."""
    import tensorflow as tf

    if cluster_size() < 1:
        raise StrategyError(
            "strategy('multiworker') needs a TF_CONFIG environment variable describing the "
            "cluster and this task; set it on every worker, or use 'mirrored' on one machine."
        )
    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    except (RuntimeError, ValueError) as e:
        raise StrategyError(
            f"strategy('multiworker') failed ({str(e).splitlines()[0]}). Create it before any "
            "other TensorFlow call (first line of the worker script)."
        ) from None


def describe(strat) -> dict:
    """What a run record needs to know of a strategy."""
    return {"class": type(strat).__name__, "replicas": int(strat.num_replicas_in_sync),
            "workers": max(cluster_size(), 1), "chief": is_chief()}
