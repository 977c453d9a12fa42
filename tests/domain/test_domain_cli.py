"""`zoo domain adapt` and `zoo domain harmonise`: bad input is one line and exit 2 before any
training; harmonise writes what zoo.domain.harmonise computes; adapt writes a loadable model;
bench_domain --quick runs every path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from zoo.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _images(seed, n, size=32):
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 1)).astype(np.float32)


def test_adapt_refuses_bad_input_in_one_line(tmp_path, capsys):
    src, tgt, small = tmp_path / "s.npz", tmp_path / "t.npz", tmp_path / "small.npz"
    np.savez(src, images=_images(0, 4), labels=np.array([0, 1, 0, 1]))
    np.savez(tgt, images=_images(1, 4))
    np.savez(small, images=_images(2, 4, size=16))
    cases = [
        (["--source", str(src)], "give --source"),
        (["--source", str(src), "--target", str(small)], "shape (32, 32, 1)"),
        (["--source", str(tgt), "--target", str(tgt)], "needs ['images', 'labels']"),
        (["--source", str(src), "--target", str(tmp_path / "none.npz")], "cannot read"),
        (["--source", str(src), "--target", str(tgt), "--layers", "stage2_relu"], "Did you mean"),
    ]
    for extra, message in cases:
        code = main(["domain", "adapt", *extra, "--out", str(tmp_path / "m.keras"), "--epochs", "1"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and message in err and err.startswith("zoo domain:") and "\n" not in err, err
    assert not (tmp_path / "m.keras").exists()


def test_adapt_synthetic_writes_a_loadable_model(tmp_path, capsys):
    from zoo.saving import load_model

    out = tmp_path / "adapted.keras"
    code = main(["domain", "adapt", "--synthetic", "16", "--epochs", "1", "--batch-size", "8",
                 "--layers", "stage2_relu2,stage3_relu2", "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0 and "target accuracy" in text and "domain accuracy" in text
    model = load_model(out)
    assert tuple(model.outputs[0].shape[1:]) == (2,) and "domain_logit" not in [layer.name for layer in model.layers]
    assert main(["domain", "adapt", "--synthetic", "16", "--out", str(out)]) == 2  # no overwrite
    assert "exists" in capsys.readouterr().err


def test_harmonise_writes_the_library_result(tmp_path):
    from zoo.domain.harmonise import harmonise

    images, reference = _images(3, 3), _images(4, 2) * 0.5
    np.savez(tmp_path / "in.npz", images=images, labels=np.arange(3))
    np.savez(tmp_path / "ref.npz", images=reference)
    assert main(["domain", "harmonise", "histogram", "--images", str(tmp_path / "in.npz"), "--reference",
                 str(tmp_path / "ref.npz"), "--out", str(tmp_path / "out.npz")]) == 0
    with np.load(tmp_path / "out.npz") as out:
        np.testing.assert_allclose(out["images"], harmonise(images, "histogram", reference=reference))
        np.testing.assert_array_equal(out["labels"], np.arange(3))
    assert main(["domain", "harmonise", "zscore", "--images", str(tmp_path / "in.npz"), "--mean", "128",
                 "--std", "40", "--out", str(tmp_path / "z.npz")]) == 0
    with np.load(tmp_path / "z.npz") as out:
        np.testing.assert_allclose(out["images"], harmonise(images, "zscore", scale=(128, 40)), rtol=1e-6)


@pytest.mark.skipif(not os.environ.get("RUN_BENCH_QUICK"), reason=(
    "bench_domain --quick takes about 25 s (eight small models traced and trained), over this "
    "package's share of the suite; RUN_BENCH_QUICK=1 runs it"))
def test_bench_domain_quick_runs():
    proc = subprocess.run([sys.executable, "benchmarks/bench_domain.py", "--quick"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for method in ("source only", "histogram matching", "z-score", "gradient reversal"):
        assert f"| classification | {method} |" in proc.stdout and f"| segmentation | {method} |" in proc.stdout
    assert "one seed: no claim" in proc.stdout and "docs/benchmarks.md is not written" in proc.stdout
