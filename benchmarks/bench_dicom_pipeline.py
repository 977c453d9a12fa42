"""Decoded slices per second: the zoo's DICOM pipeline vs a naive pydicom loop vs ResNet50 training.

Run: `python benchmarks/bench_dicom_pipeline.py [--slices N]`. All three are measured in one
run on the same cores:

* data: synthetic 512x512 CT slices (RLE-compressed, as archives often send them) written
  with zoo.data.synthetic_dicom, several series;
* naive baseline: one thread, `pydicom.dcmread` + `pixel_array` + rescale to HU + a
  3-window stack in numpy, no resize (less work than the pipeline does, so a conservative
  baseline);
* pipeline, cold: build `DicomDataset` (decode every file once into the on-disk cache; with
  `workers=None` it uses processes only when there are enough files to pay for starting them)
  and run one epoch of 224x224x3 batches of 32, everything included; the decode stage is also
  timed alone, and once more with explicit worker processes;
* pipeline, warm: a later epoch (the cache and the index are reused; what each training epoch
  after the first costs);
* training: ResNet50 (random init, 2 classes, 224x224x3) fit on in-memory batches of 16,
  images per second after a warm-up step.

Target: the pipeline keeps at least 5x ahead of training.
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


def naive_loop(paths) -> float:
    import numpy as np
    import pydicom

    windows = [(50.0, 400.0), (-600.0, 1500.0), (400.0, 1800.0)]
    t = time.perf_counter()
    for p in paths:
        ds = pydicom.dcmread(p)
        hu = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        np.stack([np.clip((hu - (c - 0.5)) / (w - 1) + 0.5, 0, 1) for c, w in windows], axis=-1)
    return len(paths) / (time.perf_counter() - t)


def training_rate(batch: int, steps: int) -> float:
    import numpy as np

    import zoo

    model = zoo.load("resnet50", num_classes=2, input_shape=(224, 224))
    model.compile("adam", "sparse_categorical_crossentropy")
    x = np.random.default_rng(0).uniform(0, 255, (batch, 224, 224, 3)).astype("float32")
    y = np.zeros(batch, "int32")
    model.train_on_batch(x, y)  # trace and warm up
    t = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return batch * steps / (time.perf_counter() - t)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--slices", type=int, default=240)
    parser.add_argument("--train-steps", type=int, default=3)
    parser.add_argument("--train-batch", type=int, default=16)
    args = parser.parse_args()

    import tensorflow as tf  # imported up front: a training process has it loaded already

    from benchmarks._report import write_section
    from zoo.data.pipeline import dicom_dataset
    from zoo.data.synthetic_dicom import write_ct_series

    root = Path(tempfile.mkdtemp(prefix="bench_dicom_"))
    per_series = 40
    n_series = max(1, args.slices // per_series)
    paths = []
    for k in range(n_series):
        paths += write_ct_series(root / "data" / f"s{k}", n_slices=per_series, size=512, compression="rle",
                                 seed=k).paths
    cores = os.cpu_count() or 1
    tf.constant(0)
    print(f"{len(paths)} RLE slices of 512x512 in {n_series} series; {cores} cores", flush=True)

    naive = naive_loop(paths)
    print(f"naive pydicom loop: {naive:.1f} slices/s", flush=True)

    def epoch(ds) -> int:
        n = 0
        for x in ds:
            n += int(x.shape[0])
        return n

    t = time.perf_counter()
    ds = dicom_dataset(root / "data", input_shape=(224, 224, 3), batch_size=32, cache_dir=root / "cache")
    built = time.perf_counter() - t
    decode = len(paths) / built
    n = epoch(ds)
    cold = n / (time.perf_counter() - t)
    print(f"pipeline decode stage ({ds.decode_processes} processes, into the cache): {decode:.1f} slices/s", flush=True)
    print(f"pipeline cold (decode + cache + epoch): {cold:.1f} slices/s", flush=True)
    t = time.perf_counter()
    n = epoch(ds)
    warm = n / (time.perf_counter() - t)
    print(f"pipeline warm epoch: {warm:.1f} slices/s", flush=True)

    t = time.perf_counter()
    pooled = dicom_dataset(root / "data", input_shape=(224, 224, 3), cache_dir=root / "cache_pool", workers=cores)
    pool_rate = len(paths) / (time.perf_counter() - t)
    print(f"decode stage with {pooled.decode_processes} worker processes: {pool_rate:.1f} slices/s", flush=True)

    train = training_rate(args.train_batch, args.train_steps)
    print(f"ResNet50 training: {train:.2f} images/s", flush=True)

    body = (
        f"{len(paths)} synthetic CT slices (512x512, RLE Lossless, {n_series} series) -> 224x224x3 in [0, 255] "
        f"(three CT windows), {cores} CPU cores (load average {os.getloadavg()[0]:.1f} at the end: shared "
        "with other jobs), one run. Naive baseline: single-threaded "
        "`dcmread` + `pixel_array` + rescale + window stack, no resize. Training: ResNet50 from "
        f"`zoo.load` (random init), batch {args.train_batch}, {args.train_steps} steps after a warm-up step.\n\n"
        "| what | slices (images) / s | vs naive | vs ResNet50 training (target >= 5x) |\n|---|---|---|---|\n"
        f"| naive pydicom loop | {naive:.1f} | 1.00x | {naive / train:.1f}x |\n"
        f"| pipeline, decode stage alone (workers=None chose {ds.decode_processes} process; writes the cache) | "
        f"{decode:.1f} | {decode / naive:.2f}x | {decode / train:.1f}x |\n"
        f"| pipeline, decode stage with workers={cores} ({pooled.decode_processes} spawned processes, start-up "
        f"included) | {pool_rate:.1f} | {pool_rate / naive:.2f}x | {pool_rate / train:.1f}x |\n"
        f"| pipeline, first epoch (decode stage + sampling, resize, windows, batching) | {cold:.1f} | "
        f"{cold / naive:.2f}x | {cold / train:.1f}x |\n"
        f"| pipeline, later epochs (from the cache) | {warm:.1f} | {warm / naive:.2f}x | {warm / train:.1f}x |\n"
        f"| ResNet50 training consumes | {train:.2f} | | 1.0x |\n"
    )
    print(write_section("bench_dicom_pipeline", "DICOM pipeline against pydicom and ResNet50 training", body))


if __name__ == "__main__":
    main()
