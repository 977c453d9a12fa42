"""Every MIL head trains inside tf.distribute.MirroredStrategy over two logical CPU devices.

Logical devices must be configured before TensorFlow initialises, so this runs in a fresh
interpreter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = r"""
import json
import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from zoo.heads.builder import build_mil_head, build_tiled_mil
from zoo.heads.losses import mil_losses, mil_targets
from zoo.heads.mil import POOLINGS

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
rng = np.random.default_rng(0)
x = rng.uniform(0, 1, (8, 16, 16, 1)).astype("float32")
tiles = rng.uniform(0, 1, (8, 3, 16, 16, 1)).astype("float32")
y = np.array([0, 1] * 4)
options = {"lse": {"learnable": True}, "wildcat": {"maps_per_class": 2}}


def features():
    inp = keras.Input((16, 16, 1))
    return keras.Model(inp, keras.layers.Conv2D(4, 3, strides=2, padding="same")(inp))


# every head in one model (each with its own backbone), so one distributed step is traced once
with strategy.scope():
    heads = {name: build_mil_head(features(), name, 1, **options.get(name, {})) for name in POOLINGS}
    heads["tiled"] = build_tiled_mil(features(), "gated_attention", 1, units=4)
    image, bag = keras.Input((16, 16, 1), name="image"), keras.Input((3, 16, 16, 1), name="tiles")
    outputs, losses = {}, {}
    for name, head in heads.items():
        out = head(bag if name == "tiled" else image)
        outputs[name], outputs[name + "_maps"] = out["bag"], out["instance_maps"]
        prior = mil_losses(sparsity=0.05, area=(0.01, 0.5))
        losses[name], losses[name + "_maps"] = prior["bag"], prior["instance_maps"]
    model = keras.Model([image, bag], outputs)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=losses)
before = {name: [w.numpy().copy() for w in head.trainable_weights] for name, head in heads.items()}
hist = model.fit([x, tiles], mil_targets(y, losses), batch_size=4, epochs=1, verbose=0)
report = {"replicas": strategy.num_replicas_in_sync, "loss": float(hist.history["loss"][-1]), "heads": {}}
for name, head in heads.items():
    changed = [not np.array_equal(b, w.numpy()) for b, w in zip(before[name], head.trainable_weights)]
    report["heads"][name] = {"weights": len(changed), "all_changed": all(changed),
                             "mirrored": all(type(v.value).__name__ == "MirroredVariable"
                                             for v in head.trainable_variables)}
print("REPORT " + json.dumps(report))
"""


@pytest.mark.slow
def test_every_head_trains_under_mirrored_strategy(tmp_path):
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root), "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    run = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=600)
    line = [ln for ln in run.stdout.splitlines() if ln.startswith("REPORT ")]
    assert run.returncode == 0 and line, run.stderr[-3000:]
    report = json.loads(line[0].removeprefix("REPORT "))
    assert report["replicas"] == 2
    assert set(report["heads"]) == {"max", "avg", "lse", "weldon", "wildcat", "two_sided_lse", "attention",
                                    "gated_attention", "tiled"}
    assert report["loss"] == report["loss"] and report["loss"] > 0  # finite, positive
    for name, head in report["heads"].items():
        assert head["weights"] >= 3, name  # backbone kernel and bias, classifier, pooling/attention weights
        assert head["all_changed"], f"{name}: a trainable weight did not move under the strategy"
        assert head["mirrored"], f"{name}: variables were not created as mirrored variables"
