"""The command line and the offline demo, run as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def zoo_cli(*args, env=None):
    env = {**os.environ, "PYTHONPATH": os.getcwd(), **(env or {})}
    return subprocess.run([sys.executable, "-m", "zoo", *args], capture_output=True, text=True, env=env)


def test_list_and_info_without_tensorflow():
    out = zoo_cli("list", "densenet*", "--pretrained")
    assert out.returncode == 0 and "densenet121.imagenet_notop" in out.stdout.split()
    info = json.loads(zoo_cli("info", "simple_cnn.phantom").stdout)
    assert info["weights"][0]["sha256"] and info["weights"][0]["in_chans"] == 1


def test_unknown_name_is_a_clear_error_not_a_traceback():
    out = zoo_cli("info", "resnet5O")
    assert out.returncode == 2 and "Did you mean" in out.stderr and "Traceback" not in out.stderr


def test_download_offline_and_verify(tmp_path):
    env = {"ZOO_HOME": str(tmp_path), "ZOO_OFFLINE": "1"}
    out = zoo_cli("download", "resnet50.imagenet_notop", env=env)
    assert out.returncode == 2 and "ZOO_OFFLINE=1" in out.stderr and "4d473c1dd8becc155b73f8504c6f6626" in out.stderr
    out = zoo_cli("download", "simple_cnn.phantom", env=env)  # ships with the package
    assert out.returncode == 0 and out.stdout.strip().endswith(".weights.h5")
    assert zoo_cli("verify", env=env).returncode == 0


@pytest.mark.slow
def test_demo_runs_offline_and_writes_a_saved_model(tmp_path):
    out = zoo_cli("demo", "--out", str(tmp_path), "--labels", "48", "--epochs", "4",
                  env={"ZOO_HOME": str(tmp_path / "home"), "ZOO_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "fine-tuned" in out.stdout and "from scratch" in out.stdout
    assert (tmp_path / "saved_model" / "saved_model.pb").is_file()
    import numpy as np
    import tensorflow as tf

    served = tf.saved_model.load(str(tmp_path / "saved_model")).signatures["serving_default"]
    (probs,) = served(image=tf.zeros((2, 64, 64, 1))).values()
    np.testing.assert_allclose(probs.numpy().sum(-1), 1.0, rtol=1e-5)
    assert (tmp_path / "finetune" / "run.json").is_file() and (tmp_path / "mil_overlay.png").is_file()
    assert "DICOM:" in out.stdout and "self-supervised" in out.stdout
