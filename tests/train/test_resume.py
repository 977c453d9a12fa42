"""Kill test: ``zoo finetune`` SIGKILLed mid-epoch and mid-checkpoint-write, resumed with --resume,
ends with the weights and history of the uninterrupted run; no checkpoint is ever half written.
Also ``zoo evaluate`` on a labelled folder with a patient column."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ARGS = ["finetune", "simple_cnn.phantom", "--demo", "--demo-size", "24", "--epochs", "1", "1", "--batch-size", "6",
        "--no-cache", "--no-augment", "--strategy", "cpu", "--checkpoint-every", "1", "--patience", "5", "--quiet"]


def _zoo(out: Path, *extra, env=None, wait=True):
    """``zoo finetune`` ARGS in a fresh process: its CompletedProcess, or the running Popen (wait=False)."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), **(env or {})}
    cmd = [sys.executable, "-m", "zoo", *ARGS, "--out", str(out), *extra]
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def _complete_checkpoints(out: Path) -> list[Path]:
    """Every ckpt-*.npz present loads in full (the atomic rename never exposes a partial file)."""
    found = sorted(out.glob("checkpoints/*/ckpt-*.npz"))
    for path in found:
        with np.load(path) as npz:
            for key in npz.files:
                npz[key]
    return found


def _weights(path: Path) -> list[np.ndarray]:
    import zoo

    return [np.asarray(w) for w in zoo.load_model(path).get_weights()]


@pytest.mark.slow
def test_killed_mid_epoch_and_mid_checkpoint_then_resumed_equals_uninterrupted(tmp_path):
    full = _zoo(tmp_path / "full", wait=False)  # the reference, alongside the first killed run
    killed = _zoo(tmp_path / "run", env={"ZOO_TEST_KILL_AFTER_STEPS": "3"})  # stage 1, step 3 of 4
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    # killed after step 3 trained, before its checkpoint: the resume redoes step 3
    assert [p.name for p in _complete_checkpoints(tmp_path / "run")][-1] == "ckpt-000000002.npz"

    # resumed, then killed 3000 bytes into writing its first checkpoint (step 3's)
    torn = _zoo(tmp_path / "run", "--resume", env={"ZOO_TEST_KILL_CHECKPOINT_BYTES": "3000"})
    assert torn.returncode == -signal.SIGKILL, torn.stderr[-2000:]
    partial = list((tmp_path / "run").glob("checkpoints/*/*.partial"))
    assert len(partial) == 1 and partial[0].stat().st_size == 3000
    assert _complete_checkpoints(tmp_path / "run")[-1].name == "ckpt-000000002.npz"

    done = _zoo(tmp_path / "run", "--resume")
    assert done.returncode == 0, done.stderr[-2000:]
    _, err = full.communicate(timeout=300)
    assert full.returncode == 0, err[-2000:]
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    reference = json.loads((tmp_path / "full" / "run.json").read_text())
    assert [r["stage"] for r in record["history"]] == ["stage1", "stage2"]
    for key in ("loss", "val_loss", "accuracy", "val_accuracy"):
        assert [r[key] for r in record["history"]] == pytest.approx([r[key] for r in reference["history"]], rel=1e-6)
    for a, b in zip(_weights(tmp_path / "run" / "best.keras"), _weights(tmp_path / "full" / "best.keras"), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert not list((tmp_path / "run").glob("checkpoints/*/*.partial"))  # the torn write was cleared on resume


def test_zoo_evaluate_reports_per_patient_with_confidence_intervals(tmp_path):
    from sklearn.metrics import roc_auc_score

    import zoo
    from zoo.data.synthetic import make_phantoms

    data = make_phantoms(16, seed=3)
    folder = tmp_path / "data"
    folder.mkdir()
    rows = ["path,label,patient"]
    patients = [f"P{label}-{i % 3}" for i, label in enumerate(data.labels)]  # one class per patient
    for i, (image, label) in enumerate(zip(data.images, data.labels, strict=True)):
        np.save(folder / f"{i}.npy", image)
        rows.append(f"{i}.npy,{label},{patients[i]}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    model = zoo.load("simple_cnn.phantom")
    model.save(tmp_path / "model.keras")

    from zoo.cli import main

    assert main(["evaluate", str(tmp_path / "model.keras"), str(folder), "--bootstrap", "50",
                 "--out", str(tmp_path / "eval")]) == 0
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    probs = np.asarray(model(data.images, training=False), np.float64)
    ids = sorted(set(patients))
    per_patient = np.array([probs[[p == i for p in patients]].mean(0) for i in ids])  # mean score per patient
    labels = np.array([data.labels[patients.index(i)] for i in ids])
    assert report["unit"] == "patient" and report["n"] == len(ids)
    expected = (roc_auc_score(labels, per_patient[:, 1]) if probs.shape[1] == 2
                else roc_auc_score(labels, per_patient, multi_class="ovr", labels=range(probs.shape[1])))
    assert report["auc"]["value"] == pytest.approx(expected)
    assert report["auc"]["low"] <= report["auc"]["high"]
    assert (tmp_path / "eval" / "reliability.png").is_file() and (tmp_path / "eval" / "summary.txt").is_file()
