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
report = {"replicas": strategy.num_replicas_in_sync, "heads": {}}
options = {"lse": {"learnable": True}, "wildcat": {"maps_per_class": 2}}
for name in [*POOLINGS, "tiled"]:
    with strategy.scope():
        inp = keras.Input((16, 16, 1))
        feats = keras.Model(inp, keras.layers.Conv2D(4, 3, strides=2, padding="same", name="conv")(inp))
        if name == "tiled":
            model, data = build_tiled_mil(feats, "gated_attention", 1, units=4), tiles
        else:
            model, data = build_mil_head(feats, name, 1, **options.get(name, {})), x
        losses = mil_losses(sparsity=0.05, area=(0.01, 0.5))
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss=losses)
    before = [w.numpy().copy() for w in model.trainable_weights]
    hist = model.fit(data, mil_targets(y, losses), batch_size=4, epochs=1, verbose=0)
    changed = [not np.array_equal(b, w.numpy()) for b, w in zip(before, model.trainable_weights)]
    report["heads"][name] = {"loss": float(hist.history["loss"][-1]), "all_changed": all(changed),
                             "mirrored": all(type(v.value).__name__ == "MirroredVariable"
                                             for v in model.trainable_variables)}
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
    for name, head in report["heads"].items():
        assert head["loss"] == head["loss"] and head["loss"] > 0, name  # finite, positive
        assert head["all_changed"], f"{name}: a trainable weight did not move under the strategy"
        assert head["mirrored"], f"{name}: variables were not created as mirrored variables"
