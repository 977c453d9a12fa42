"""benchmarks/bench_dicom_pipeline.py --quick runs every row end to end (about 15 s on 2 cores)."""

from __future__ import annotations

import os
import subprocess
import sys


def test_bench_dicom_pipeline_quick_runs():
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.run([sys.executable, "benchmarks/bench_dicom_pipeline.py", "--quick"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "docs/benchmarks.md is not written" in proc.stdout
    assert "vs naive, same work" in proc.stdout
    for row in ("naive pydicom loop", "naive loop, same work", "decode stage, workers=1", "decode stage, workers=2", "stage 1 alone",
                "first epoch", "warm epoch, no augmentation", "per-sample random flip",
                "Keras `RandomFlip`", "tf.data service, 1 worker", "tf.data service, 2 workers"):
        line = next((ln for ln in proc.stdout.splitlines() if row in ln), None)
        assert line is not None, row
        rate = float(line.split("|")[2].split("±")[0])  # a measured, positive rate
        assert rate > 0, line
    assert "CPU flags:" in proc.stdout
