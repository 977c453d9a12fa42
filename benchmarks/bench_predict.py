"""Studies per second of ``zoo predict`` on a folder of DICOM series, against decoding alone.

Run: ``python benchmarks/bench_predict.py [--studies 24 --slices 32 --size 128 --engine auto]``
(add ``--write-report`` to put the table into docs/benchmarks.md; ``--quick``: seconds, a check
that it runs). Measured in one run:

* data: ``--studies`` synthetic CT series (zoo.data.synthetic_dicom, one folder each, shuffled
  file names, real geometry) of ``--slices`` slices of ``--size``^2 pixels;
* decode: zoo.data.series.load_series on each folder (pydicom parse + pixel decode + geometry
  sort), nothing else;
* decode + fit: what zoo predict does to each series before the model (HU window, trilinear
  resize to the model's input), ``zoo.infer.predict_common._read_series``;
* zoo predict: ``predict_folder`` end to end (walk, header read for the SeriesInstanceUID,
  decode, fit, batched predict on ``--engine``, CSV), with a 3D model (simple_cnn3d, 2 classes,
  input 16x64x64; weights are random: throughput does not depend on them), once with the
  model's load and engine compile included (a clinic's one-off command) and once as the
  streaming rate after them (``summary.json``'s ``rows_per_s``).

The ratio zoo predict / decode says which stage is the bottleneck: near 1, decoding is.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def write_studies(root: Path, studies: int, slices: int, size: int) -> list[Path]:
    from zoo.data.synthetic_dicom import write_ct_series

    folders = []
    for i in range(studies):
        write_ct_series(root / f"study{i:04d}", n_slices=slices, size=size, seed=i)
        folders.append(root / f"study{i:04d}")
    return folders


def rate(fn, items) -> float:
    start = time.perf_counter()
    for item in items:
        fn(item)
    return len(items) / (time.perf_counter() - start)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=24)
    parser.add_argument("--slices", type=int, default=32)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--engine", default="auto")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--write-report", action="store_true")
    parser.add_argument("--quick", action="store_true",
                        help="seconds: 3 series of 16 slices 64^2 on TensorFlow, nothing written")
    args = parser.parse_args(argv)
    if args.quick:
        args.studies, args.slices, args.size = 3, 16, 64
        args.engine, args.write_report = "tensorflow", False

    import zoo
    from zoo.data.dicom import find_dicom_files
    from zoo.data.series import load_series
    from zoo.infer.cli import predict_folder
    from zoo.infer.predict_common import _read_series

    model = zoo.load("simple_cnn3d", in_chans=1, num_classes=2, input_shape=(16, 64, 64))
    shape, out_range = tuple(model.inputs[0].shape[1:]), (0.0, 255.0)
    with tempfile.TemporaryDirectory(prefix="bench-predict-") as tmp:
        folders = write_studies(Path(tmp) / "in", args.studies, args.slices, args.size)
        files = [find_dicom_files(f) for f in folders]
        load_series(files[0])  # warm the imports and the decoder
        decode = rate(lambda fs: load_series(fs, on_problem="ignore"), files)
        fit = rate(lambda fs: _read_series(fs, shape, out_range), files)
        predict_folder(model, folders[0], Path(tmp) / "warm", engine=args.engine,
                       batch=args.batch, progress=False)
        start = time.perf_counter()
        summary = predict_folder(model, Path(tmp) / "in", Path(tmp) / "out", engine=args.engine,
                                 batch=args.batch, progress=False)
        end_to_end = summary["predicted"] / (time.perf_counter() - start)
    rows = [("decode (load_series)", decode), ("decode + window + resize", fit),
            (f"zoo predict ({summary['engine']}, batch {args.batch}), model load and compile "
             "included", end_to_end),
            ("zoo predict, streaming only (summary rows_per_s)", summary["rows_per_s"])]
    table = ("| stage | studies/s | vs decode |\n|---|---:|---:|\n"
             + "\n".join(f"| {name} | {r:.2f} | {r / decode:.2f}x |" for name, r in rows))
    text = (f"{args.studies} synthetic CT series of {args.slices} slices {args.size}x{args.size}; "
            f"model simple_cnn3d 16x64x64x1.\n\n{table}\n")
    print(text)
    if args.write_report:
        from benchmarks._report import write_section

        print("written to", write_section("bench_predict", "zoo predict on DICOM studies", text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
