"""Run by tests/train/test_distribute.py in a fresh process: a few zoo training steps under one strategy.

Usage: python distributed_worker.py MODE OUT.npz, MODE one of one | mirrored2 | one+mirrored2 |
multiworker. mirrored2 splits the CPU into two logical devices, which must happen before TensorFlow
starts, hence a separate process; one+mirrored2 trains on one device (/cpu:0) and then mirrored in
that same process (one cold start for both; OUT names the one-device result, the mirrored one goes
beside it as mirrored.npz); multiworker reads TF_CONFIG (written by the test) and must create its
strategy before any other TensorFlow work.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(mode: str, out: str) -> None:
    import tensorflow as tf

    if "mirrored2" in mode:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from zoo.train.distribute import strategy

    if mode == "one+mirrored2":
        train(strategy("cpu"), out)
        train(strategy("mirrored", devices=["/cpu:0", "/cpu:1"]), str(Path(out).with_name("mirrored.npz")))
        return
    strat = {"one": lambda: strategy("cpu"),
             "mirrored2": lambda: strategy("mirrored", devices=["/cpu:0", "/cpu:1"]),
             "multiworker": lambda: strategy("multiworker")}[mode]()
    train(strat, out)


def train(strat, out: str) -> None:
    """A few seeded steps of simple_cnn under ``strat``; weights, initial weights and a summary to ``out``."""
    import keras
    import numpy as np

    import zoo
    from zoo.train.trainer import Batches, Trainer

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (20, 32, 32, 1)).astype("float32")
    y = rng.integers(0, 2, 20).astype("int32")
    keras.utils.set_random_seed(0)
    with strat.scope():
        model = zoo.load("simple_cnn", in_chans=1, num_classes=2, input_shape=(32, 32), widths=(8, 8, 8, 8, 8))
        optimizer = keras.optimizers.SGD(0.05, momentum=0.9)
    initial = [w.numpy() for w in model.weights]
    trainer = Trainer(model, optimizer, strat)
    batches = Batches(x, y, batch_size=8, seed=0)  # 8 + 8 + 4: the short last batch is weighted too
    metrics = [trainer.train_epoch(batches, epoch) for epoch in range(2)]
    np.savez(out, *[w.numpy() for w in model.weights])
    np.savez(out.replace(".npz", "_initial.npz"), *initial)
    Path(out.replace(".npz", ".json")).write_text(json.dumps(
        {"replicas": trainer.replicas, "synchronized_bn": trainer.synchronized_bn, "metrics": metrics,
         "strategy": type(strat).__name__}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
