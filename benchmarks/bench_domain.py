"""Domain adaptation on the scanner-shift phantoms: accuracy and Dice on the new scanner.

Run: `python benchmarks/bench_domain.py [--seeds 0,1,2]`; `--quick` checks every path in seconds
(tiny data, one epoch, one seed, no report written). About 10 minutes on 2 cores.

Data (``zoo.data.scanner_shift``): 32 x 32 phantoms. Per seed, labelled source-scanner images
(``SOURCE_SCANNER``: white noise 0.05) for training, unlabelled target-scanner images
(``TARGET_SCANNER``: contrast x0.6 about the tissue level, gamma 1.3, brightness -0.08, Gaussian
blur 0.8 px, noise 0.08) for adaptation, and a separate labelled target test set (plus a source
test set, to show the gap). Two tasks: lesion present / absent (``simple_cnn``, accuracy) and
lesion segmentation (``unet`` depth 2, 8 filters, instance norm, 2 classes, mean Dice of the lesion over the
test images that hold one, ``zoo.metrics.segmentation.dice``).

Methods, the same network, optimizer (Adam 1e-3), batch size and epochs:

- source only: the supervised task (``zoo.train.tasks``) on the source images;
- histogram matching: that model, with each target test image matched to the pooled source
  training pixels (``zoo.domain.harmonise.match_histograms``);
- z-score: trained and tested on per-image z-scores in the Otsu foreground, mapped to 128 + 40 z;
- gradient reversal (DANN): ``zoo.domain.fit_adversarial`` with the discriminator on several
  depths (``SETUPS``: classification stage3, stage4; segmentation enc3, dec2), lambda by DANN's
  schedule up to 1 (Ganin et al.), domain weight 1.

simple_cnn scales [0, 255] inputs itself; the U-Net (preprocess "none") is given [0, 255] mapped
to [-1, 1] (``net_input``), the same fixed map for every method.

Mean +- standard deviation over seeds; a method is said to beat source only only where the
difference of the means exceeds the larger of the two standard deviations.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")
SIZE = 32
LEARNING_RATE = 1e-3
ZSCALE = (128.0, 40.0)
SETUPS = {  # task: (arch, options, discriminator layers, DANN's largest lambda)
    "classification": ("simple_cnn", {"num_classes": 2}, ["stage3_relu2", "stage4_relu2"], 1.0),
    # instance norm: no moving statistics to converge in a few hundred steps (BatchNorm's
    # momentum 0.99 leaves inference-mode outputs far from the trained ones at this length)
    "segmentation": ("unet", {"num_classes": 2, "depth": 2, "base_filters": 8, "norm": "instance"},
                     ["enc3_2_relu", "dec2_2_relu"], 1.0),
}
METHODS = ("source only", "histogram matching", "z-score", "gradient reversal")


def domains(seed: int, n_train: int, n_test: int) -> dict:
    """Source train (labelled), target train (unlabelled), target and source test sets."""
    from zoo.data.scanner_shift import make_scanner_shift

    train = make_scanner_shift(n_train, SIZE, seed=1000 * seed + 1)
    unlabelled = make_scanner_shift(n_train, SIZE, seed=1000 * seed + 2)
    test = make_scanner_shift(n_test, SIZE, seed=1000 * seed + 3)
    return {"source": train.source, "target": unlabelled.target.images,
            "test": test.target, "source_test": test.source}


def net_input(task: str, images: np.ndarray) -> np.ndarray:
    """What the network is given: simple_cnn scales [0, 255] itself (its preprocess layer); the
    U-Net takes inputs as they are (preprocess "none"), so it gets [0, 255] mapped to [-1, 1]."""
    return images / np.float32(127.5) - 1 if task == "segmentation" else images


def labels(phantoms, task: str) -> np.ndarray:
    return phantoms.labels if task == "classification" else phantoms.masks.astype(np.int32)


def build(task: str, seed: int):
    import keras

    import zoo

    arch, options, *_ = SETUPS[task]
    keras.utils.set_random_seed(seed)
    return zoo.load(arch, input_shape=(SIZE, SIZE, 1), **options)


def train_supervised(task: str, x, y, seed: int, epochs: int, batch: int):
    import keras

    from zoo.train.batches import Batches
    from zoo.train.engine import Engine
    from zoo.train.tasks import make_task

    model = build(task, seed)
    engine = Engine(make_task(task, model), keras.optimizers.Adam(LEARNING_RATE))
    engine.fit(Batches(x, y, batch, seed=seed), epochs)
    return model


def train_dann(task: str, x, y, xt, seed: int, epochs: int, batch: int):
    from zoo.domain.adversarial import fit_adversarial
    from zoo.domain.discriminator import task_model

    model = build(task, seed)
    _, _, layers, max_lambda = SETUPS[task]
    adapted, _ = fit_adversarial(model, layers, x, y, xt, task=task, epochs=epochs,
                                 batch_size=batch, learning_rate=LEARNING_RATE, seed=seed,
                                 max_lambda=max_lambda)
    return task_model(adapted)


def score(task: str, model, images, phantoms) -> float:
    from zoo.metrics.segmentation import dice

    images = net_input(task, images)
    probs = np.concatenate([np.asarray(model(images[i:i + 100], training=False))
                            for i in range(0, len(images), 100)])
    pred = probs.argmax(-1)
    if task == "classification":
        return float(np.mean(pred == phantoms.labels))
    has = phantoms.masks.reshape(len(pred), -1).any(1)
    return float(np.mean(dice(phantoms.masks[has], pred[has] == 1, axis=(1, 2))))


def run_seed(task: str, seed: int, n_train: int, n_test: int, epochs: int, batch: int) -> dict:
    """Every method's target-test score (and source-test for source only) for one seed."""
    from zoo.domain.harmonise import harmonise

    d = domains(seed, n_train, n_test)
    xs, ys, test = d["source"].images, labels(d["source"], task), d["test"]
    out, seconds = {}, {}
    t = time.perf_counter()
    base = train_supervised(task, net_input(task, xs), ys, seed, epochs, batch)
    seconds["source only"] = time.perf_counter() - t
    out["source only"] = score(task, base, test.images, test)
    out["source only (source test)"] = score(task, base, d["source_test"].images, d["source_test"])
    matched = harmonise(test.images, "histogram", reference=xs[..., 0].ravel())
    out["histogram matching"] = score(task, base, matched, test)
    seconds["histogram matching"] = 0.0
    t = time.perf_counter()
    zs = net_input(task, harmonise(xs, "zscore", scale=ZSCALE))
    zmodel = train_supervised(task, zs, ys, seed, epochs, batch)
    seconds["z-score"] = time.perf_counter() - t
    out["z-score"] = score(task, zmodel, harmonise(test.images, "zscore", scale=ZSCALE), test)
    t = time.perf_counter()
    dann = train_dann(task, net_input(task, xs), ys, net_input(task, d["target"]), seed, epochs,
                      batch)
    seconds["gradient reversal"] = time.perf_counter() - t
    out["gradient reversal"] = score(task, dann, test.images, test)
    return {"scores": out, "seconds": seconds}


def summary(runs: list[dict], task: str) -> tuple[list[str], list[str]]:
    """Markdown rows and the methods that beat source only by more than the spread."""
    metric = "accuracy" if task == "classification" else "Dice"
    base = np.array([r["scores"]["source only"] for r in runs])
    rows, claims = [], []
    src = np.array([r["scores"]["source only (source test)"] for r in runs])
    rows.append(f"| {task} | source only, on the source test set | {src.mean():.3f} ± "
                f"{src.std():.3f} | reference | - |")
    for method in METHODS:
        vals = np.array([r["scores"][method] for r in runs])
        secs = np.mean([r["seconds"][method] for r in runs])
        diff = vals.mean() - base.mean()
        spread = max(vals.std(), base.std())
        if method == "source only":
            verdict = "baseline"
        elif len(runs) < 2:
            verdict = f"{diff:+.3f} (one seed: no claim)"
        elif abs(diff) > spread:
            verdict = f"{'better' if diff > 0 else 'worse'} ({diff:+.3f} > spread {spread:.3f})"
            claims.append(f"{method} {'beats' if diff > 0 else 'is below'} source only on "
                          f"{task} {metric} by {diff:+.3f}")
        else:
            verdict = f"within the spread ({diff:+.3f}, spread {spread:.3f})"
        rows.append(f"| {task} | {method} | {vals.mean():.3f} ± {vals.std():.3f} | {verdict} | "
                    f"{secs:.0f} |")
    return rows, claims


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--quick", action="store_true", help="every path once, tiny; no report")
    args = parser.parse_args(argv)
    seeds = [0] if args.quick else [int(s) for s in args.seeds.split(",")]
    sizes = dict(n_train=16, n_test=8, epochs=1, batch=8) if args.quick else dict(
        n_train=600, n_test=300, epochs=8, batch=32)
    import tensorflow as tf

    from zoo.train.precision import cpu_flags

    t0 = time.perf_counter()
    rows, claims = [], []
    for task in SETUPS:
        runs = []
        for seed in seeds:
            runs.append(run_seed(task, seed, **sizes))
            print(task, seed, {k: round(v, 3) for k, v in runs[-1]["scores"].items()}, flush=True)
        r, c = summary(runs, task)
        rows += r
        claims += c
    print("\n".join(rows))
    total = time.perf_counter() - t0
    print(f"total {total:.0f} s")
    if args.quick:
        print("\n--quick: a check of every path; docs/benchmarks.md is not written.")
        return
    flags = [f for f in FLAGS if f in cpu_flags()]
    body = (
        f"CPU flags: {', '.join(flags) or 'none of ' + ', '.join(FLAGS)}; {os.cpu_count()} logical "
        f"CPUs; TensorFlow {tf.__version__}; {total / 60:.1f} minutes.\n\n"
        "Scanner-shift phantoms (`zoo.data.scanner_shift`, 32 x 32): labelled source-scanner "
        f"images ({sizes['n_train']}), unlabelled target-scanner images ({sizes['n_train']}), "
        f"a separate target test set ({sizes['n_test']}); {sizes['epochs']} epochs, batch "
        f"{sizes['batch']}, Adam {LEARNING_RATE}; seeds {seeds}. Classification: `simple_cnn`, "
        "accuracy; segmentation: `unet` (depth 2, 8 filters, instance norm), mean lesion Dice over test images "
        "with a lesion. Scores on the target test set, mean ± standard deviation over the seeds; "
        "a method is called better or worse only when the difference of the means exceeds the "
        "larger standard deviation. Seconds: training time per seed.\n\n"
        "| task | method | target score | vs source only | s |\n|---|---|---|---|---|\n"
        + "\n".join(rows) + "\n\n"
        + ("Claims: " + "; ".join(claims) + "." if claims else
           "No method differs from source only by more than the spread.") + "\n"
    )
    from benchmarks._report import write_section

    print(f"wrote {write_section('bench_domain', 'Domain adaptation', body)}")


if __name__ == "__main__":
    main()
