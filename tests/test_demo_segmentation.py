"""``zoo demo segmentation`` at its tiny size (every step once), run as a user would, offline.

One subprocess runs the demo twice with the same seed, the second time with ``--overwrite`` into
the same folder (op determinism is process-wide, so it stays out of the test process). The
files are then read back here through the zoo's readers and compared with the generator.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import zoo
from zoo.cli import main
from zoo.data.synthetic_dicom import lesion_ct
from zoo.demo.segmentation import SIZES, SPACING, WRITER

SEED = 3
RUN_TWICE = """
import shutil, sys
from zoo.cli import main
out, keep, seed = sys.argv[1:4]
args = ["demo", "segmentation", "--out", out, "--size", "tiny", "--seed", seed]
assert main(args) == 0
shutil.copy(out + "/summary.json", keep)
sys.exit(main(args + ["--overwrite"]))
"""


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """(demo folder, first run's summary, second run's summary, stdout)."""
    root = tmp_path_factory.mktemp("segdemo")
    out, keep = root / "demo", root / "first_summary.json"
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "ZOO_HOME": str(root / "home"), "ZOO_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", RUN_TWICE, str(out), str(keep), str(SEED)], capture_output=True,
                          text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, json.loads(keep.read_text()), json.loads((out / "summary.json").read_text()), proc.stdout


def test_same_seed_same_numbers_and_overwrite_replaces_the_demo(demo):
    _, first, second, stdout = demo
    first.pop("seconds"), second.pop("seconds")
    assert first == second
    assert stdout.count("round trips exact") == 2 and stdout.count("inflated encoder:") == 2


def test_both_runs_report_dice_in_0_1(demo):
    out, summary, _, _ = demo
    assert set(summary["runs"]) == {"from scratch", "inflated encoder"}
    for run in summary["runs"].values():
        for split in ("val", "test"):
            assert 0.0 <= run[split]["dice"] <= 1.0
            assert run[split]["hd95_mm"] is None or run[split]["hd95_mm"] >= 0.0
        assert [c["case"] for c in run["test_cases"]] == ["case_03"]
        assert all(0.0 <= c["dice"] <= 1.0 for c in run["test_cases"])
    assert summary["io_exact"] == {"dicom_hu": True, "dicom_seg": True, "nifti_image": True, "nifti_mask": True}
    # each run trained (its run folder, one epoch of history) and kept its encoder's origin
    origins = {}
    for name in ("from_scratch", "inflated_encoder"):
        record = json.loads((out / "runs" / name / "run.json").read_text())
        assert record["task"] == "segmentation" and len(record["history"]) == SIZES["tiny"].epochs
        origins[name] = zoo.weights_origin(zoo.load_model(out / "runs" / name / "best.keras"))
    card = zoo.get_card("simple_cnn_3d.phantom_inflated")
    assert origins == {"from_scratch": None, "inflated_encoder": {
        "card": card.name, "sha256": card.sha256, "part": "simple_cnn_3d_features"}}


def test_files_read_back_as_generated(demo):
    """Every case as DICOM series + SEG and NIfTI image + label map, equal to lesion_ct's arrays."""
    out, _, _, _ = demo
    tiny = SIZES["tiny"]
    data = out / "data"
    splits = ["train"] * tiny.train + ["val"] * tiny.val + ["test"] * tiny.test
    for i, split in enumerate(splits):
        name = f"case_{i:02d}"
        hu, labels = lesion_ct(tiny.shape, SPACING, seed=(SEED, i))
        series = zoo.load_series(data / "dicom" / name)
        assert len(list((data / "dicom" / name).glob("*.dcm"))) == tiny.shape[0]
        np.testing.assert_array_equal(series.array, hu)
        np.testing.assert_allclose(series.spacing, SPACING)
        np.testing.assert_array_equal(zoo.read_mask(data / "dicom" / f"{name}_seg.dcm", reference=series).array,
                                      labels)
        nifti = zoo.read_nifti(data / "nifti" / split / "images" / f"{name}.nii.gz")
        np.testing.assert_array_equal(nifti.array, hu)
        np.testing.assert_array_equal(zoo.read_mask(data / "nifti" / split / "masks" / f"{name}.nii.gz",
                                                    reference=nifti).array, labels)
    manifest = json.loads((out / ".zoo-manifest.json").read_text())
    assert manifest["writer"] == WRITER and "summary.json" in manifest["files"]


def test_zoo_evaluate_on_the_nifti_test_cases_gives_the_demos_test_dice(demo):
    """The saved HU-input model (the window inside) through zoo evaluate's path on data/nifti/test: the
    same Dice as the demo's own scoring of the windowed test volumes."""
    from zoo.infer.evaluate import evaluate_segmentation

    out, summary, _, _ = demo
    for name, run in (("inflated_encoder", "inflated encoder"), ("from_scratch", "from scratch")):
        model = zoo.load_model(out / "models" / f"{name}.keras")
        assert model.inputs[0].shape[1:] == (*SIZES["tiny"].patch, 1)
        report = evaluate_segmentation(model, out / "data" / "nifti" / "test", n_boot=10)
        [row] = report["cases"]
        np.testing.assert_allclose(row["dice"], summary["runs"][run]["test"]["dice"], rtol=1e-6)


def test_figure_is_a_png_with_both_runs(demo):
    import matplotlib.image

    out, summary, _, _ = demo
    png = matplotlib.image.imread(out / "segmentation.png")
    assert png.ndim == 3 and png.shape[1] > png.shape[0] > 200  # two panels side by side
    assert summary["figure"]["case"] == "case_03"


def test_nothing_is_overwritten_without_overwrite(demo, tmp_path, capsys):
    out, _, _, _ = demo
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert main(["demo", "segmentation", "--out", str(out), "--size", "tiny"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("a user's file")
    assert main(["demo", "segmentation", "--out", str(mine), "--size", "tiny", "--overwrite"]) == 2
    assert "notes.txt" in capsys.readouterr().err and (mine / "notes.txt").read_text() == "a user's file"


def test_plain_demo_keeps_its_options():
    from zoo.cli import build_parser

    args = build_parser().parse_args(["demo", "--out", "x", "--labels", "10"])
    assert (args.func.__name__, args.out, args.labels, args.demo) == ("_demo", "x", 10, None)
    args = build_parser().parse_args(["demo", "segmentation"])
    assert (args.func.__name__, args.out, args.seed, args.overwrite, args.size) == (
        "_demo_segmentation", "demo_segmentation", 0, False, "default")


@pytest.mark.skipif(not os.environ.get("RUN_BENCH_QUICK"), reason=(
    "bench_segmentation --quick takes about 30 s on 2 cores (four models traced and trained, the "
    "sliding-window rows), over this file's share of the suite; RUN_BENCH_QUICK=1 runs it"))
def test_bench_segmentation_quick_runs():
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.run([sys.executable, "benchmarks/bench_segmentation.py", "--quick"], capture_output=True,
                          text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("Dice") >= 4 and "zoo sliding_window, tf.function" in proc.stdout
