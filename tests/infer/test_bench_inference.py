"""benchmarks/bench_inference.py: the FLOP count behind its `peak` column, and --quick end to end."""

from __future__ import annotations

import re

import keras
import pytest

from benchmarks import bench_inference


def test_model_flops_counts_2d_3d_convolutions_and_dense_layers():
    """2 x MACs, from the closed forms: conv = out positions x kernel entries, dense = in x out."""
    x2 = keras.Input((16, 12, 3))
    y2 = keras.layers.Conv2D(5, 3, strides=2, padding="same")(x2)  # 8 x 6 positions
    y2 = keras.layers.Dense(7)(keras.layers.Flatten()(y2))
    flops2 = 2 * (8 * 6 * 3 * 3 * 3 * 5) + 2 * (8 * 6 * 5 * 7)
    assert bench_inference.model_flops(keras.Model(x2, y2)) == flops2
    x3 = keras.Input((4, 6, 6, 2))
    y3 = keras.layers.Conv3D(3, (1, 3, 3), padding="valid")(x3)  # 4 x 4 x 4 positions
    assert bench_inference.model_flops(keras.Model(x3, y3)) == 2 * (4 * 4 * 4 * 1 * 3 * 3 * 2 * 3)


def test_peak_fraction_divides_by_the_peak_of_the_precision():
    peaks = {"fp32": 100e9, "bf16": 200e9}
    assert bench_inference.peak_fraction(10.0, 5e9, "fp32", peaks) == "50%"
    assert bench_inference.peak_fraction(10.0, 5e9, "bf16", peaks) == "25%"
    assert bench_inference.peak_fraction(10.0, 5e9, "int8", peaks) == "25%"
    assert bench_inference.peak_fraction(10.0, 5e9, "fp32", {}) == "n/a"


def test_quick_run_prints_the_engine_table(capsys, monkeypatch):
    """--quick: the engine table for the shipped checkpoint, fp32 agreeing with Keras."""
    monkeypatch.setattr(bench_inference, "matmul_peak", lambda dtype, runs=1: 50e9)
    bench_inference.main(["--quick"])
    out = capsys.readouterr().out
    assert "| model | engine/precision | images/s | batch-1 ms | compile s" in out
    row = re.search(r"\| simple_cnn\.phantom \| (\w+)/fp32 \| ([\d.]+) \| ([\d.]+) \| [\d.]+ "
                    r"\| ([\d.e+-]+) \| (\d+)% \|", out)
    assert row, out[-2000:]
    assert float(row.group(2)) > 0 and float(row.group(3)) > 0
    assert float(row.group(4)) <= 1e-4
    assert "fp32 50.0, bf16 50.0 GFLOP/s" in out
    with pytest.raises(SystemExit):
        bench_inference.main(["--quick", "--batch", "x"])
