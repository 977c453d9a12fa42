"""Run by tests/train/test_distribute.py in a fresh process: a few engine training steps under one strategy.

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
    """A few seeded engine steps under ``strat``: simple_cnn classification, a segmentation model and a
    two-model (adversarial) step; weights, initial weights and a summary to ``out`` (and _seg, _gan)."""
    import keras
    import numpy as np
    import tensorflow as tf

    import zoo
    from zoo.train.batches import Batches
    from zoo.train.engine import Engine, StepOutput, Task
    from zoo.train.tasks import Classification, Segmentation

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (20, 32, 32, 1)).astype("float32")
    y = rng.integers(0, 2, 20).astype("int32")
    keras.utils.set_random_seed(0)
    with strat.scope():
        model = zoo.load("simple_cnn", in_chans=1, num_classes=2, input_shape=(32, 32), widths=(8, 8, 8, 8, 8))
        optimizer = keras.optimizers.SGD(0.05, momentum=0.9)
    initial = [w.numpy() for w in model.weights]
    engine = Engine(Classification(model), optimizer, strat)
    batches = Batches(x, y, batch_size=8, seed=0)  # 8 + 8 + 4: the short last batch is weighted too
    metrics = engine.fit(batches, epochs=2)
    save(out, model.weights, initial)
    Path(out.replace(".npz", ".json")).write_text(json.dumps(
        {"replicas": engine.replicas, "synchronized_bn": engine.synchronized_bn, "metrics": metrics,
         "strategy": type(strat).__name__}))

    masks = (x[..., 0] > 128).astype("int32")
    keras.utils.set_random_seed(1)
    with strat.scope():
        inputs = keras.Input((32, 32, 1))
        h = keras.layers.Rescaling(1 / 255.0)(inputs)
        h = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(h)
        seg = keras.Model(inputs, keras.layers.Conv2D(2, 1, activation="softmax")(h))
        optimizer = keras.optimizers.SGD(0.5)
    initial = [w.numpy() for w in seg.weights]
    Engine(Segmentation(seg), optimizer, strat).fit(Batches(x, masks, batch_size=8, seed=0), epochs=2)
    save(out.replace(".npz", "_seg.npz"), seg.weights, initial)

    class Adversarial(Task):
        optimizers = ("generator", "discriminator")

        def __init__(self):
            gi, di = keras.Input((2,)), keras.Input((3,))
            self.g = keras.Model(gi, keras.layers.Dense(3)(gi))
            self.d = keras.Model(di, keras.layers.Dense(1, activation="sigmoid")(di))

        def models(self):
            return {"generator": self.g, "discriminator": self.d}

        def trainable(self, name):
            return (self.g if name == "generator" else self.d).trainable_variables

        def step(self, batch, training):
            noise, real, _ = batch
            fake_p, real_p = self.d(self.g(noise)), self.d(real)
            return StepOutput({"generator": -tf.math.log(fake_p[:, 0]),
                               "discriminator": -tf.math.log(real_p[:, 0]) - tf.math.log(1 - fake_p[:, 0])})

    keras.utils.set_random_seed(2)
    with strat.scope():
        task = Adversarial()
        optimizers = {"generator": keras.optimizers.SGD(1.0), "discriminator": keras.optimizers.SGD(1.0)}
    weights = task.g.weights + task.d.weights
    initial = [w.numpy() for w in weights]
    noise, real = rng.standard_normal((20, 2)).astype("float32"), rng.standard_normal((20, 3)).astype("float32") + 2
    Engine(task, optimizers, strat).fit(Batches(noise, real, batch_size=8, seed=0), epochs=2)
    save(out.replace(".npz", "_gan.npz"), weights, initial)


def save(out: str, weights, initial) -> None:
    import numpy as np

    np.savez(out, *[w.numpy() for w in weights])
    np.savez(out.replace(".npz", "_initial.npz"), *initial)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
