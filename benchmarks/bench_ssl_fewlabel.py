"""Few-label accuracy after each pretext task against random initialisation (simple_cnn, phantoms).

Run: `python benchmarks/bench_ssl_fewlabel.py` (about 10 CPU minutes on 2 cores; `--quick` for a
smoke run). Every pretext task pretrains simple_cnn on the same unlabelled 32 x 32 phantoms;
the downstream task is lesion present / absent on fresh phantoms of the same kind, scored on
500 test images with 1% and 10% of a 1000-image labelled pool: a linear probe and k-NN on the
frozen encoder (5 label draws each), and fine-tuning the whole network (3 seeds). Random init
is the same network, built with the same seeds. The table goes into docs/benchmarks.md.
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

TASKS = {  # task: (epochs, unlabelled images, options)
    "rotation": (3, 384, {}),
    "simclr": (4, 768, {"temperature": 0.2}),
    "byol": (4, 768, {}),
    "genesis2d": (4, 768, {}),
    "inpainting": (4, 768, {}),
    "colorization": (4, 768, {}),
}
FRACTIONS = (0.01, 0.1)


def fmt(stats) -> str:
    mean, std = stats
    return f"{mean:.3f} ± {std:.3f}"


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="two tasks, one epoch: a smoke run, not written to docs")
    parser.add_argument("--tasks", nargs="*", default=list(TASKS))
    parser.add_argument("--no-finetune", action="store_true")
    args = parser.parse_args(argv)


    import zoo.ssl
    from zoo.data.synthetic import make_phantoms
    from zoo.ssl.demo import PHANTOMS
    from zoo.ssl.evaluate import finetune_scores, frozen_scores, summarize

    os.environ["ZOO_HOME"] = tempfile.mkdtemp()
    t_start = time.process_time()
    w_start = time.time()
    pool = make_phantoms(1000, seed=11, **PHANTOMS)
    test = make_phantoms(500, seed=12, **PHANTOMS)
    train, held = (pool.images, pool.labels), (test.images, test.labels)
    tasks = args.tasks[:2] if args.quick else args.tasks
    weights = {"random init": None}
    pretrain_s = {}
    for task in tasks:
        epochs, n, options = TASKS[task]
        unlabelled = make_phantoms(n, seed=10, **PHANTOMS).images
        t = time.time()
        r = zoo.ssl.pretrain(task, "simple_cnn", unlabelled, epochs=1 if args.quick else epochs, batch_size=64,
                             tag=f"bench_{task}", verbose=0, **options)
        pretrain_s[task] = time.time() - t
        weights[task] = Path(r.card.resolved_urls()[0])
        print(f"{task}: pretrained in {pretrain_s[task]:.0f} s, final loss {r.history[-1]:.4f}", flush=True)

    seeds_probe, seeds_ft = (0, 1, 2, 3, 4), (0, 1, 2)
    rows, results = [], {}
    for name, w in weights.items():
        t = time.time()
        frozen = frozen_scores("simple_cnn", w, train, held, FRACTIONS, seeds_probe)
        res = {"linear": summarize(frozen["linear"]), "knn": summarize(frozen["knn"])}
        if not args.no_finetune:
            res["finetune"] = summarize(finetune_scores("simple_cnn", w, train, held, FRACTIONS, seeds_ft,
                                                        epochs=10, min_steps=40))
        results[name] = res
        print(name, {k: {f: fmt(s) for f, s in v.items()} for k, v in res.items()}, f"{time.time() - t:.0f} s", flush=True)

    base = results["random init"]
    protocols = [p for p in ("linear", "knn", "finetune") if p in base]
    for name, res in results.items():
        cells = []
        for p in protocols:
            for f in FRACTIONS:
                mean, std = res[p][f]
                b_mean, b_std = base[p][f]
                mark = " **" if name != "random init" and mean - b_mean > max(std, b_std) else ""
                cells.append(f"{mean:.3f} ± {std:.3f}{mark}")
        extra = f"{pretrain_s[name]:.0f}" if name in pretrain_s else "–"
        rows.append(f"| {name} | {extra} | " + " | ".join(cells) + " |")
    beat = sorted({name for name, res in results.items() if name != "random init" and any(
        res[p][f][0] - base[p][f][0] > max(res[p][f][1], base[p][f][1]) for p in protocols for f in FRACTIONS)})
    header = " | ".join(f"{p} {int(f * 100)}%" for p in protocols for f in FRACTIONS)
    cpu_min = (time.process_time() - t_start) / 60
    body = (
        "simple_cnn pretrained on unlabelled 32 x 32 phantoms (zoo.data.synthetic, lesion contrast 0.1-0.3), then "
        "lesion present/absent with 1% (10 images) and 10% (100 images) of a 1000-image labelled pool, "
        "tested on 500 fresh phantoms. Mean ± std over label draws (5 for the frozen linear probe and k-NN, "
        "3 for fine-tuning the whole network, which also re-seeds the head). ** = beats random init by more "
        "than the larger of the two spreads.\n\n"
        f"| encoder | pretrain (s) | {header} |\n|---|---|" + "---|" * (len(protocols) * len(FRACTIONS)) + "\n"
        + "\n".join(rows)
        + f"\n\nBeat random init by more than the spread (in at least one column): {', '.join(beat) or 'none'}. "
        f"Did not: {', '.join(sorted(set(tasks) - set(beat))) or 'none'}. "
        f"Total {cpu_min:.1f} CPU minutes, {(time.time() - w_start) / 60:.1f} wall minutes. "
        "Not benchmarked here: relative_position and jigsaw (simple_cnn needs 32-px tiles, so 100-px images) and "
        "the volume tasks (slice_order, subject, genesis3d), whose downstream task would differ."
    )
    print(body)
    if not args.quick:
        from benchmarks._report import write_section

        print(write_section("bench_ssl_fewlabel", "Self-supervised pretraining: few-label accuracy", body))
    return results


if __name__ == "__main__":
    main()
