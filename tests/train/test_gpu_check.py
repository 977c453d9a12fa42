"""benchmarks/gpu_check.py without a GPU (as in CI): a clear sentence and exit code 0, no report written."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"


def test_gpu_check_exits_cleanly_without_a_gpu(capsys, monkeypatch):
    import tensorflow as tf

    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [])  # as on a CPU-only machine
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    written = []
    monkeypatch.setattr(module, "CHECKS", (lambda rows: written.append(rows),))
    assert module.main([]) == 0
    assert "no GPU is visible" in capsys.readouterr().out
    assert written == []  # no check ran, so nothing was measured or written
