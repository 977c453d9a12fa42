"""benchmarks/bench_generative.py --quick runs end to end (gated: about a minute on 2 cores)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.skipif(not os.environ.get("RUN_BENCH_QUICK"), reason=(
    "bench_generative --quick takes about a minute on 2 cores (pix2pix, CycleGAN and DCGAN "
    "traced and trained), over this package's share of the suite; RUN_BENCH_QUICK=1 runs it"))
def test_bench_generative_quick_runs():
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.run([sys.executable, "benchmarks/bench_generative.py", "--quick"],
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for row in ("pix2pix (paired)", "CycleGAN (unpaired)", "linear regression (paired)",
                "DCGAN samples", "uniform noise"):
        assert f"| {row}" in proc.stdout, row
