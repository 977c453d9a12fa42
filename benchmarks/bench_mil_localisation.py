"""Weak-label localisation: each MIL pooling trained from image labels only, graded on hidden masks.

Run: `python benchmarks/bench_mil_localisation.py` (about 8 CPU minutes on 2 cores; `--quick`
for a smoke run). Every pooling gets the same small backbone (simple_cnn's first three stages,
widths 8/16/32, stride-8 map = 8 x 8 instances on 64 x 64 phantoms), the same data, seeds and
optimiser; only the head differs. Reported (mean +- sd over seeds, test set of fresh phantoms):
bag ROC AUC, pointing-game accuracy (map maximum on a lesion, within 2 px, positive images),
and pixel-level ROC AUC of the bilinearly upsampled instance map against the lesion masks.
The chance row scores uniform random maps and bag scores with the same code; the last row adds
the area constraint (a prior, still no masks) to global average pooling.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

POOLINGS = {
    "max": ("max", {}),
    "avg (GAP / CAM)": ("avg", {}),
    "lse r=5": ("lse", {"r": 5.0}),
    "lse learnable r": ("lse", {"r": 5.0, "learnable": True}),
    "weldon k=10%": ("weldon", {"k_max": 0.1, "k_min": 0.1}),
    "wildcat M=4 k=10% a=0.7": ("wildcat", {"k_max": 0.1, "k_min": 0.1, "alpha": 0.7, "maps_per_class": 4}),
    "two-sided lse b=5": ("two_sided_lse", {"beta_pos": 5.0, "beta_neg": 5.0}),
    "attention": ("attention", {"units": 32}),
    "gated attention": ("gated_attention", {"units": 32}),
    "avg + area constraint [1%, 15%]": ("avg", {}, {"area": (0.01, 0.15)}),
}


def _cell(values):
    return f"{statistics.mean(values):.3f} +- {statistics.stdev(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def main(argv=None):
    import numpy as np

    from benchmarks._report import write_section
    from zoo.data.localisation import make_localisation_task
    from zoo.demo.mil import TASK, TOLERANCE, score, train_and_score

    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--train", type=int, default=256)
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="1 seed, 2 epochs, no report")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.epochs, args.train, args.test = 1, 2, 96, 64
    t0 = time.time()
    results = {name: [] for name in ["chance (random maps)", *POOLINGS]}
    for seed in range(args.seeds):
        train = make_localisation_task(args.train, seed=seed, **TASK)
        test = make_localisation_task(args.test, seed=1000 + seed, **TASK)
        rng = np.random.default_rng(seed)
        results["chance (random maps)"].append(
            list(score(rng.random(len(test.labels)), rng.random(test.masks.shape), test).values()))
        for name, (pooling, options, *priors) in POOLINGS.items():
            t = time.time()
            _, scores = train_and_score(pooling, options, train, test, args.epochs, seed, priors=dict(*priors))
            results[name].append([scores["bag_auc"], scores["pointing_game"], scores["pixel_auc"]])
            print(f"seed {seed} {name:26s} bag AUC {results[name][-1][0]:.3f} pointing {results[name][-1][1]:.3f} "
                  f"pixel AUC {results[name][-1][2]:.3f}  ({time.time() - t:.0f} s)", flush=True)
    total = time.time() - t0
    rows = [f"| {name} | " + " | ".join(_cell([r[i] for r in runs]) for i in range(3)) + " |"
            for name, runs in results.items()]
    body = (
        f"Synthetic task `make_localisation_task` (64 x 64 phantoms, half positive, 1-3 lesions of 1-5% of the image, "
        f"contrast {TASK['contrast']}); {args.train} training / {args.test} test images per seed, {args.seeds} seeds; "
        f"backbone simple_cnn stages 1-3 (widths 8/16/32, stride-8 map, 8 x 8 instances), 1x1 instance classifier, "
        f"Adam 3e-3, {args.epochs} epochs, batch 32, image labels only: bag cross-entropy (the last row adds "
        f"the area constraint of Jia et al. 2017 on the instance maps, weight 1). "
        f"Pointing game within {TOLERANCE} px on positive test images; pixel AUC pooled over positive test images. "
        f"Mean +- sd over seeds; total {total / 60:.1f} min.\n\n"
        "| pooling | bag AUC | pointing game | pixel AUC |\n|---|---|---|---|\n" + "\n".join(rows)
    )
    print(body)
    if not args.quick:
        print(write_section("bench_mil_localisation", "Weak-label localisation with MIL poolings", body))


if __name__ == "__main__":
    main()
