"""benchmarks/bench_semi.py --quick runs (opt-in: about 30 s on 2 cores)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(not os.environ.get("RUN_BENCH_QUICK"), reason=(
    "bench_semi --quick trains eight small runs (about 30 s on 2 cores), over this package's "
    "share of the suite; RUN_BENCH_QUICK=1 runs it"))
def test_bench_semi_quick_runs():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "benchmarks/bench_semi.py", "--quick"], cwd=ROOT,
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| supervised |" in proc.stdout and "SSL simclr + fine-tune" in proc.stdout
