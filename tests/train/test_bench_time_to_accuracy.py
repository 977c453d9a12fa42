"""benchmarks/bench_time_to_accuracy.py: the timm -> zoo key map, the time-to-target rule, the
architecture equivalence with timm (when a torch Python is at hand) and the --quick run (gated)."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from benchmarks import bench_time_to_accuracy as tta

ROOT = Path(__file__).resolve().parents[2]
TORCH_PYTHON = os.environ.get("BENCH_TORCH_PYTHON") or "/work/torchvenv/bin/python"
NO_TORCH = "no torch Python (BENCH_TORCH_PYTHON, or /work/torchvenv/bin/python) with timm"


def _has_timm() -> bool:
    if not Path(TORCH_PYTHON).is_file():
        return False
    proc = subprocess.run([TORCH_PYTHON, "-c", "import timm, torch"], capture_output=True,
                          timeout=120)
    return proc.returncode == 0


def _timm_keys() -> list[str]:
    """timm's (and torchvision's) ResNet-50 state-dict names, written out from its layout."""
    keys = ["conv1.weight", "conv1.bias", "fc.weight", "fc.bias"]
    keys += [f"bn1.{p}" for p in ("weight", "bias", "running_mean", "running_var")]
    for stage, blocks in enumerate((3, 4, 6, 3), 1):
        for block in range(blocks):
            prefix = f"layer{stage}.{block}"
            for i in (1, 2, 3):
                keys += [f"{prefix}.conv{i}.weight", f"{prefix}.conv{i}.bias"]
                keys += [f"{prefix}.bn{i}.{p}" for p in ("weight", "bias", "running_mean",
                                                         "running_var")]
            if block == 0:
                keys += [f"{prefix}.downsample.0.weight", f"{prefix}.downsample.0.bias"]
                keys += [f"{prefix}.downsample.1.{p}" for p in ("weight", "bias", "running_mean",
                                                                "running_var")]
    return keys


def test_keras_key_spot_checks():
    assert tta.keras_key("conv1.weight") == "conv1.conv.weight"
    assert tta.keras_key("bn1.running_var") == "conv1.bn.running_var"
    assert tta.keras_key("layer1.0.conv2.weight") == "conv2.block1.2.conv.weight"
    assert tta.keras_key("layer3.5.bn3.bias") == "conv4.block6.3.bn.bias"
    assert tta.keras_key("layer4.0.downsample.0.weight") == "conv5.block1.0.conv.weight"
    assert tta.keras_key("layer2.0.downsample.1.running_mean") == "conv3.block1.0.bn.running_mean"
    assert tta.keras_key("fc.bias") == "head.fc.bias"
    with pytest.raises(ValueError, match="global_pool"):
        tta.keras_key("global_pool.weight")


def test_every_timm_tensor_lands_in_its_zoo_layer():
    """Random tensors of timm's shapes fill the zoo's resnet50 completely, each where it belongs."""
    import zoo
    from zoo.weights.convert_torch import convert_state_dict

    model = zoo.load("resnet50", in_chans=3, num_classes=3, input_shape=(32, 32))
    needed = {f"{layer.name.replace('_', '.')}.{n}" for layer in model.layers if layer.weights
              for n in (("weight", "bias") if len(layer.weights) == 2 else
                        ("weight", "bias", "running_mean", "running_var"))}
    keys = _timm_keys()
    assert {tta.keras_key(k) for k in keys} == needed
    rng = np.random.default_rng(0)
    shapes = {}
    for layer in model.layers:
        for var, name in zip(layer.weights, ("weight", "bias", "running_mean", "running_var")):
            shape = tuple(var.shape)
            if name == "weight" and len(shape) == 4:  # HWIO -> torch OIHW
                shape = (shape[3], shape[2], shape[0], shape[1])
            elif name == "weight" and len(shape) == 2:  # Dense (in, out) -> torch (out, in)
                shape = shape[::-1]
            shapes[f"{layer.name.replace('_', '.')}.{name}"] = shape
    state = {k: rng.standard_normal(shapes[tta.keras_key(k)]).astype("float32") for k in keys}
    assert convert_state_dict(model, {tta.keras_key(k): v for k, v in state.items()}) == []
    kernel = model.get_layer("conv4_block2_2_conv").kernel.numpy()
    np.testing.assert_array_equal(kernel, state["layer3.1.conv2.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(model.get_layer("conv3_block1_0_bn").moving_variance.numpy(),
                                  state["layer2.0.downsample.1.running_var"])
    np.testing.assert_array_equal(model.get_layer("head_fc").kernel.numpy(), state["fc.weight"].T)


def test_time_to_target_is_the_first_epoch_at_or_above_it():
    epochs = [{"time": 1.5, "val_accuracy": 0.5}, {"time": 3.0, "val_accuracy": 0.75},
              {"time": 4.0, "val_accuracy": 0.7}, {"time": 6.0, "val_accuracy": 0.8}]
    assert tta.time_to_target(epochs, 0.75) == 3.0
    assert tta.time_to_target(epochs, 0.5) == 1.5
    assert tta.time_to_target(epochs, 0.8) == 6.0
    assert tta.time_to_target(epochs, 0.81) is None
    assert tta.time_to_target(epochs, 0.1 + 0.2 + 0.45) == 3.0  # 0.7500000000000001: reached


def test_mean_std_over_seeds():
    values = [1.0, 2.5, 4.0]
    assert tta.mean_std(values) == f"{statistics.mean(values):.2f} +- {statistics.stdev(values):.2f}"
    assert tta.mean_std([None, 2.0]) == "2.00"
    assert tta.mean_std([None]) == "not reached"


def test_digits_task_is_upsampled_sklearn_digits():
    from sklearn.datasets import load_digits

    x, y, vx, vy = tta.digits_task(20, 10, 32, seed=3)
    assert x.shape == (20, 32, 32, 3) and vx.shape == (10, 32, 32, 3)
    np.testing.assert_array_equal(x[..., 0], x[..., 2])
    digits = load_digits()
    order = np.random.default_rng(3).permutation(len(digits.images))
    np.testing.assert_array_equal(np.concatenate([y, vy]), digits.target[order[:30]])
    np.testing.assert_allclose(x[0, ::4, ::4, 0], digits.images[order[0]] * 255 / 16, rtol=1e-6)
    assert x.max() <= 255.0 and x.min() >= 0.0


@pytest.mark.skipif(not _has_timm(), reason=NO_TORCH)
def test_timm_model_equals_the_converted_zoo_model():
    """One pretraining epoch in torch (BatchNorm statistics move), converted: same softmax."""
    cfg = dict(tta.QUICK, pretrain_n=8, batch=4, pretrain_epochs=1)
    with tempfile.TemporaryDirectory() as tmp:
        base = {"threads": 1, "batch": 4, "preprocess": tta.preprocess_of(32)}
        info = tta.pretrain(TORCH_PYTHON, cfg, Path(tmp), base)
        stored = np.load(info["path"])
        assert stored["layer2.0.conv1.weight"].shape == (128, 256, 1, 1)
        assert "layer1.0.conv1.bias" in stored.files  # Keras' conv biases, added to timm's
    assert info["probe_max_diff"] < 1e-4, info


def test_a_torch_job_failure_names_the_job():
    with tempfile.TemporaryDirectory() as tmp:
        with pytest.raises(RuntimeError, match="torch pretrain failed"):
            tta.run_torch(sys.executable, {"mode": "pretrain", "data": "/nonexistent.npz",
                                           "threads": 1}, Path(tmp))


@pytest.mark.skipif(not os.environ.get("RUN_BENCH_QUICK"), reason=(
    "bench_time_to_accuracy --quick traces and trains ResNet-50 in both frameworks (a few "
    "minutes on 2 cores), over this package's share of the suite; RUN_BENCH_QUICK=1 runs it"))
def test_bench_time_to_accuracy_quick_runs():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "benchmarks/bench_time_to_accuracy.py", "--quick"]
    if _has_timm():
        command += ["--torch-python", TORCH_PYTHON]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env,
                          timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| fp32 |" in proc.stdout and "| bf16 |" in proc.stdout
    if not _has_timm():
        assert "time to accuracy skipped: no --torch-python" in proc.stdout
        return
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith('{"task"')]
    assert {r["task"] for r in rows} == set(tta.TASKS)
    for r in rows:
        assert r["timm_time"] <= r["timm_total"]
        if r["zoo_time"] is not None:
            assert r["ratio"] == pytest.approx(r["zoo_time"] / r["timm_time"])
            assert r["ratio_total"] == pytest.approx(r["zoo_time"] / r["timm_total"])
    assert "the issue's ratio" in proc.stdout
