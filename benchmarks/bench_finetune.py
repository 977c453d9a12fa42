"""Fine-tuning stage 1 epoch time with feature caching against pushing images through the frozen backbone.

Run: `python benchmarks/bench_finetune.py`. Both sides are the same ``zoo.finetune`` call
(stage 1 only, same seed, data order and model), once with ``cache_features=True`` and once
with ``False``; the per-epoch time is the median over the epochs after the first (the first
includes tracing). The cached side also pays the one-time feature pass, reported separately
with the break-even epoch count. Target: cached epochs at least 10x faster, same head weights.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

CASES = [("simple_cnn", 64, 256), ("resnet50", 96, 128)]  # (arch, image size, training images)
EPOCHS = 4
BATCH = 32


def _run(arch, size, n, cached, out):
    import keras

    import zoo
    from zoo.data.synthetic import make_phantoms
    from zoo.train.finetune import finetune

    keras.utils.set_random_seed(0)
    model = zoo.load(arch, in_chans=1, num_classes=2, input_shape=(size, size))  # random init: no download needed
    train, val = make_phantoms(n, size=size, seed=1), make_phantoms(max(32, n // 4), size=size, seed=2)
    result = finetune(model, train, val, epochs=(EPOCHS, 0), batch_size=BATCH, cache_features=cached, augment=False,
                      patience=EPOCHS, seed=0, out_dir=out, strategy="cpu", verbose=0)
    record = json.loads(result.record.read_text())
    epochs = [row["seconds"] for row in result.history]
    return {"epoch": statistics.median(epochs[1:]), "first": epochs[0],
            "cache": record["stage1"].get("cache_seconds", 0.0),
            "head": [w.copy() for w in model.get_layer("head_fc").get_weights()],
            "val_loss": result.history[-1]["val_loss"]}


def main():
    import numpy as np

    from benchmarks._report import write_section

    rows = []
    for arch, size, n in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            cached = _run(arch, size, n, True, Path(tmp) / "cached")
            plain = _run(arch, size, n, False, Path(tmp) / "plain")
        ratio = plain["epoch"] / cached["epoch"]
        diff = max(float(np.abs(a - b).max()) for a, b in zip(cached["head"], plain["head"], strict=True))
        even = cached["cache"] / max(plain["epoch"] - cached["epoch"], 1e-9)
        rows.append(f"| {arch} | {size}x{size} | {n} | {plain['epoch']:.3f} | {cached['epoch']:.4f} | "
                    f"**{ratio:.0f}x** | {cached['cache']:.2f} | {even:.1f} | {diff:.1e} |")
        print(rows[-1], flush=True)
    body = (
        f"Stage 1 of `zoo.finetune` (frozen backbone, new head; AdamW, batch {BATCH}, {EPOCHS} epochs, grey phantoms, "
        "random-init backbone) with and without `cache_features`, one after the other in one process. Epoch time: "
        "median of epochs 2..N (epoch 1 includes tracing). The feature pass is paid once; break-even is the number "
        "of epochs after which caching is ahead. Head weight difference: max |cached - uncached| after stage 1.\n\n"
        "| backbone | input | images | uncached epoch (s) | cached epoch (s) | ratio (target >= 10x) | "
        "feature pass (s) | break-even (epochs) | head weight diff |\n|---|---|---|---|---|---|---|---|---|\n"
        + "\n".join(rows))
    print(write_section("bench_finetune", "Fine-tuning stage 1: feature caching", body))


if __name__ == "__main__":
    main()
