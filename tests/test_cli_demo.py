"""The command line and the offline demo, run as a user would."""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest


def zoo_cli(*args, env=None, timeout=120):
    env = {**os.environ, "PYTHONPATH": os.getcwd(), **(env or {})}
    return subprocess.run([sys.executable, "-m", "zoo", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


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


# The demo's fine-tuning claim is measured on this task and this checkpoint only: editing
# either to meet the targets (issue 11 item 4) fails here.
PINNED_TASK = dict(contrast=(0.08, 0.25), noise=0.06, lesion_area=(0.01, 0.04))
PINNED_CHECKPOINT_SHA256 = "62298bd79b3a0def70e0c5d5068c1c8be027f8a928b0bcb47affcb038b936245"
ACCURACY = re.compile(r"checkpoint as is: ([0-9.]+) +fine-tuned: ([0-9.]+) +from scratch: ([0-9.]+)")


def test_demo_task_and_checkpoint_are_pinned():
    import zoo
    from zoo.cli import build_parser
    from zoo.data.synthetic import make_phantoms
    from zoo.demo import CHECKPOINT, TARGET_TASK, run, transfer_data
    from zoo.hub.fetch import fetch

    assert TARGET_TASK == PINNED_TASK and CHECKPOINT == "simple_cnn.phantom"
    args = build_parser().parse_args(["demo"])
    assert (args.labels, args.epochs, inspect.signature(run).parameters["seed"].default) == (80, 12, 0)
    for got, (n, seed) in zip(transfer_data(80, 0), [(80, 1), (40, 3), (600, 2)], strict=True):
        want = make_phantoms(n, seed=seed, **PINNED_TASK)  # default size 64, half positive
        np.testing.assert_array_equal(got.images, want.images)
        np.testing.assert_array_equal(got.labels, want.labels)
    card = zoo.get_card(CHECKPOINT)
    assert card.sha256 == PINNED_CHECKPOINT_SHA256
    assert hashlib.sha256(fetch(card).read_bytes()).hexdigest() == PINNED_CHECKPOINT_SHA256


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """``zoo demo`` as a user runs it (default sizes, seed 0), offline, once for the tests below."""
    out = tmp_path_factory.mktemp("demo")
    result = zoo_cli("demo", "--out", str(out), env={"ZOO_HOME": str(out / "home"), "ZOO_OFFLINE": "1"},
                     timeout=900)
    return out, result


@pytest.mark.slow
def test_demo_runs_offline_and_writes_a_saved_model(demo_run):
    tmp_path, out = demo_run
    assert out.returncode == 0, out.stderr[-2000:]
    assert "fine-tuned" in out.stdout and "from scratch" in out.stdout
    assert (tmp_path / "saved_model" / "saved_model.pb").is_file()
    import tensorflow as tf

    served = tf.saved_model.load(str(tmp_path / "saved_model")).signatures["serving_default"]
    (probs,) = served(image=tf.zeros((2, 64, 64, 1))).values()
    np.testing.assert_allclose(probs.numpy().sum(-1), 1.0, rtol=1e-5)
    assert (tmp_path / "finetune" / "run.json").is_file() and (tmp_path / "mil_overlay.png").is_file()
    assert "DICOM:" in out.stdout and "self-supervised" in out.stdout


@pytest.mark.slow
def test_demo_fine_tuning_beats_scratch_and_the_checkpoint_as_is(demo_run):
    """The claim the demo prints: fine-tuning the checkpoint beats using it as is and training from scratch.

    Margins met on the pinned task (seed 0): fine-tuned >= scratch + 0.07 (issue 11's margin)
    and > as is. Stage 2 is reported, and never ends below stage 1 on validation.
    """
    tmp_path, out = demo_run
    assert out.returncode == 0, out.stderr[-2000:]
    as_is, tuned, scratch = (float(v) for v in ACCURACY.search(out.stdout).groups())
    assert tuned >= scratch + 0.07, out.stdout
    assert tuned > as_is, out.stdout
    record = json.loads((tmp_path / "finetune" / "run.json").read_text())
    stage1 = min(r["val_loss"] for r in record["history"] if r["stage"] == "stage1")
    assert record["best"]["val_loss"] <= stage1
    assert ("stage 2 improved it" in out.stdout) == record["stage2"]["kept"]


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="issue 11's +0.03 margin over the checkpoint as is is not reached on "
                   "the pinned task (seed 0: as is 0.767, fine-tuned 0.785); more labels do not close it: the "
                   "recipe on 1000 target labels reaches 0.782 (docs/benchmarks.md, fine-tuning)")
def test_demo_fine_tuning_margin_over_the_checkpoint(demo_run):
    _, out = demo_run
    as_is, tuned, _ = (float(v) for v in ACCURACY.search(out.stdout).groups())
    assert tuned >= as_is + 0.03


@pytest.mark.slow
def test_fine_tuning_step_repeats_exactly():
    """Every number of the demo's fine-tuning step repeats for the same seed (same code path, fewer labels and epochs)."""
    import tempfile
    from pathlib import Path

    from zoo.demo import transfer_step
    from zoo.train.finetune import deterministic

    runs = []
    for _ in range(2):
        deterministic(5)
        with tempfile.TemporaryDirectory() as tmp:
            result = transfer_step(Path(tmp), n_labelled=16, epochs=2, seed=5, export=False)
        runs.append([result[k] for k in ("checkpoint_as_is", "finetuned", "from_scratch", "stage2_kept")])
    assert runs[0] == runs[1]
