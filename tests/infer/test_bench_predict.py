"""benchmarks/bench_predict.py --quick: decode vs zoo predict studies/s on synthetic DICOM series."""

from __future__ import annotations

import re

from benchmarks import bench_predict


def test_quick_run_measures_every_stage(capsys):
    assert bench_predict.main(["--quick"]) == 0
    out = capsys.readouterr().out
    rates = dict(re.findall(r"\| ([^|]+?) \| ([\d.]+) \| [\d.]+x \|", out))
    assert len(rates) == 4, out
    assert all(float(r) > 0 for r in rates.values())
    assert float(rates["decode (load_series)"]) >= float(rates["decode + window + resize"]) * 0.5
    assert "3 synthetic CT series of 16 slices 64x64" in out
