"""Strategies by name; two replicas (logical CPUs, or two worker processes) train like one device."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from zoo.errors import InvalidArgumentError, StrategyError, ZooError
from zoo.train import distribute
from zoo.train.distribute import cluster_size, is_chief, strategy

WORKER = Path(__file__).with_name("distributed_worker.py")
ROOT = Path(__file__).resolve().parents[2]


def test_unknown_strategy_is_a_zoo_error_with_a_suggestion():
    with pytest.raises(InvalidArgumentError, match=r"Unknown strategy 'mirored'.*Did you mean 'mirrored'"):
        strategy("mirored")
    with pytest.raises(ZooError, match="Use one of auto, cpu, mirrored, multiworker, tpu"):
        strategy(3)


def test_multiworker_without_tf_config_says_what_to_set(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(StrategyError, match="needs a TF_CONFIG"):
        strategy("multiworker")


def test_bad_tf_config_is_explained(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(StrategyError, match="not valid JSON"):
        cluster_size()
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {}}))
    with pytest.raises(StrategyError, match="'cluster' and a 'task'"):
        strategy("auto")


def test_missing_mirrored_devices_and_devices_on_other_strategies():
    with pytest.raises(StrategyError, match=r"\['/cpu:7'\] do not exist here"):
        strategy("mirrored", devices=["/cpu:0", "/cpu:7"])
    with pytest.raises(InvalidArgumentError, match="devices only apply to 'mirrored'"):
        strategy("cpu", devices=["/cpu:0"])


def test_cpu_auto_and_passthrough(monkeypatch):
    import tensorflow as tf

    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.setattr(distribute, "_tpu_available", lambda: False)
    one = strategy("cpu")
    assert isinstance(one, tf.distribute.OneDeviceStrategy) and one.num_replicas_in_sync == 1
    assert strategy(one) is one
    if not tf.config.list_logical_devices("GPU"):  # this machine: no accelerator -> TensorFlow's default
        assert strategy("auto") is tf.distribute.get_strategy()
    assert distribute.describe(one) == {"class": "OneDeviceStrategy", "replicas": 1, "workers": 1, "chief": True}


def test_auto_picks_multiworker_for_a_cluster(monkeypatch):
    """A TF_CONFIG of two workers routes 'auto' to MultiWorkerMirroredStrategy (constructor stubbed:
    the real one must be created before TensorFlow starts, see the subprocess test)."""
    import tensorflow as tf

    cluster = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 1}}))
    monkeypatch.setattr(tf.distribute, "MultiWorkerMirroredStrategy", lambda: "mwms")
    assert cluster_size() == 2 and not is_chief()
    assert strategy("auto") == "mwms"
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"chief": ["a:1"], **cluster}, "task": {"type": "chief", "index": 0}}))
    assert cluster_size() == 3 and is_chief()


def _run_worker(mode, out, env=None, log=None):
    """The worker in a fresh process; its output to a pipe, or to ``log`` (an open file) when polled."""
    return subprocess.Popen([sys.executable, str(WORKER), mode, str(out)], cwd=ROOT,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})},
                            stdout=log or subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc, timeout=600):
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"worker timed out:\n{out[-3000:]}")
    assert proc.returncode == 0, out[-3000:]


def _weights(path):
    with np.load(path) as f:
        return [f[k] for k in sorted(f.files, key=lambda k: int(k.split("_")[1]))]


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
    """The one-device run; the same process then trains mirrored over two logical CPUs (mirrored.npz)."""
    out = tmp_path_factory.mktemp("one") / "one.npz"
    _finish(_run_worker("one+mirrored2", out))
    return out


def _assert_same_training(a, b, initial):
    """``a`` trained like ``b``: for the classifier, and for the engine's segmentation and two-model steps."""
    for suffix in ("_seg", "_gan"):
        seg = [Path(str(p).replace(".npz", f"{suffix}.npz")) for p in (a, b)]
        seg.append(Path(str(b).replace(".npz", f"{suffix}_initial.npz")))
        for wa, wb in zip(_weights(seg[0]), _weights(seg[1]), strict=True):
            np.testing.assert_allclose(wa, wb, atol=1e-4, rtol=1e-4)
        assert max(np.abs(w - w0).max() for w, w0 in zip(_weights(seg[1]), _weights(seg[2]), strict=True)) > 1e-3
    for wa, wb in zip(_weights(a), _weights(b), strict=True):
        # updates are O(0.1-1); float32 round-off through synchronized BatchNorm stays below 5e-3
        np.testing.assert_allclose(wa, wb, atol=5e-3, rtol=0)
    moved = max(np.abs(w - w0).max() for w, w0 in zip(_weights(b), _weights(initial), strict=True))
    assert moved > 0.1  # training really happened, so the tolerance is small against the updates


@pytest.mark.slow
def test_mirrored_over_two_logical_cpus_matches_one_device(one_device):
    out = one_device.with_name("mirrored.npz")
    info = json.loads(out.with_suffix(".json").read_text())
    assert info["strategy"] == "MirroredStrategy" and info["replicas"] == 2
    assert info["synchronized_bn"] == 10  # every BatchNorm of simple_cnn syncs its statistics
    _assert_same_training(out, one_device, one_device.with_name("one_initial.npz"))
    reference = json.loads(one_device.with_suffix(".json").read_text())
    assert [m["accuracy"] for m in info["metrics"]] == [m["accuracy"] for m in reference["metrics"]]


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


_PORT_TAKEN = ("address already in use", "failed to add port", "could not start grpc server")


def _run_cluster(tmp_path, attempts=3, timeout=600):
    """Two workers on two free ports; a port taken between choosing and binding it is retried.

    The ports are free when chosen but another process may bind one before the worker does (the
    race is unavoidable: the worker must bind the port itself). Such a run fails fast with
    'address already in use'; it is retried on new ports, any other failure fails the test.
    """
    for attempt in range(attempts):
        cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(2)]}
        outs = [tmp_path / f"try{attempt}" / f"worker{i}.npz" for i in range(2)]
        procs, logs = [], [out.with_suffix(".log") for out in outs]
        for index, out in enumerate(outs):
            out.parent.mkdir(exist_ok=True)
            config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
            with open(logs[index], "w") as log:  # a file, not a pipe: nobody reads while polling
                procs.append(_run_worker("multiworker", out, {"TF_CONFIG": config}, log=log))
        deadline = time.monotonic() + timeout
        while any(p.poll() is None for p in procs) and not any(p.poll() for p in procs):
            if time.monotonic() > deadline:
                break
            time.sleep(0.5)
        if all(p.poll() == 0 for p in procs):
            return outs
        for p in procs:  # one failed (its partner would wait for it) or the deadline passed
            if p.poll() is None:
                p.kill()
            p.wait(timeout=60)
        text = [log.read_text() for log in logs]
        if not any(marker in t.lower() for t in text for marker in _PORT_TAKEN):
            pytest.fail("multiworker run failed:\n" + "\n----\n".join(t[-3000:] for t in text))
    pytest.fail(f"the chosen ports were taken by other processes {attempts} times in a row")


@pytest.mark.slow
def test_multiworker_two_processes_end_identical(one_device, tmp_path):
    outs = _run_cluster(tmp_path)
    for out in outs:
        info = json.loads(out.with_suffix(".json").read_text())
        assert info["strategy"] == "CollectiveAllReduceStrategy" and info["replicas"] == 2
    for w0, w1 in zip(_weights(outs[0]), _weights(outs[1]), strict=True):
        np.testing.assert_array_equal(w0, w1)
    _assert_same_training(outs[0], one_device, one_device.with_name("one_initial.npz"))
