"""Few-label accuracy after each pretext task against random initialisation (simple_cnn, phantoms).

Run: `python benchmarks/bench_ssl_fewlabel.py` (`--quick` for a smoke run; `--reuse ZOO_HOME` evaluates
the bench_* encoders an earlier run pretrained). Every pretext task pretrains simple_cnn on the same
unlabelled 32 x 32 phantoms; the downstream task is lesion present / absent on fresh phantoms of the
same kind, scored on 500 test images with 1% and 10% of a 1000-image labelled pool: a linear probe
and k-NN on the frozen encoder (5 label draws), then fine-tuning the whole network with 10% of the
labels (2 seeds). Random init is the same network and protocol. The table goes into docs/benchmarks.md,
rewritten after the frozen phase and again after fine-tuning.
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


def table(results: dict, pretrain_s: dict, protocols: list[str], fractions: dict, tasks: list[str]) -> tuple[str, list]:
    """The markdown rows, and the tasks that beat random init by more than the larger spread somewhere."""
    base = results["random init"]
    cols = [(p, f) for p in protocols for f in fractions[p]]
    rows, beat = [], []
    for name, res in results.items():
        cells, wins = [], False
        for p, f in cols:
            mean, std = res[p][f]
            b_mean, b_std = base[p][f]
            win = name != "random init" and mean - b_mean > max(std, b_std)
            wins |= win
            cells.append(f"{mean:.3f} ± {std:.3f}{' **' if win else ''}")
        if wins:
            beat.append(name)
        rows.append(f"| {name} | {pretrain_s.get(name, '–')} | " + " | ".join(cells) + " |")
    header = " | ".join(f"{p} {f * 100:g}%" for p, f in cols)
    text = (f"| encoder | pretrain (s) | {header} |\n|---|---|" + "---|" * len(cols) + "\n" + "\n".join(rows)
            + f"\n\nBeat random init by more than the spread (in at least one column): {', '.join(beat) or 'none'}. "
            f"Did not: {', '.join(t for t in tasks if t not in beat) or 'none'}.")
    return text, beat


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="two tasks, one epoch: a smoke run, not written to docs")
    parser.add_argument("--tasks", nargs="*", default=list(TASKS))
    parser.add_argument("--reuse", help="a ZOO_HOME of an earlier run whose bench_* cards to evaluate instead of pretraining")
    parser.add_argument("--finetune-seeds", type=int, default=2, help="0 skips fine-tuning")
    args = parser.parse_args(argv)

    import zoo.ssl
    from zoo.data.synthetic import make_phantoms
    from zoo.demo.ssl import PHANTOMS
    from zoo.ssl.evaluate import finetune_scores, frozen_scores, summarize

    os.environ["ZOO_HOME"] = args.reuse or tempfile.mkdtemp()
    t_start, w_start = time.process_time(), time.time()
    pool = make_phantoms(1000, seed=11, **PHANTOMS)
    test = make_phantoms(500, seed=12, **PHANTOMS)
    train, held = (pool.images, pool.labels), (test.images, test.labels)
    tasks = args.tasks[:2] if args.quick else args.tasks
    weights, pretrain_s = {"random init": None}, {}
    for task in tasks:
        epochs, n, options = TASKS[task]
        if args.reuse:
            card = zoo.get_card(f"simple_cnn.bench_{task}")
            weights[task] = Path(card.resolved_urls()[0])
            pretrain_s[task] = f"{card.extra['pretrain_seconds']:.0f}" if "pretrain_seconds" in card.extra else "earlier run"
            continue
        unlabelled = make_phantoms(n, seed=10, **PHANTOMS).images
        r = zoo.ssl.pretrain(task, "simple_cnn", unlabelled, epochs=1 if args.quick else epochs, batch_size=64,
                             tag=f"bench_{task}", verbose=0, **options)
        pretrain_s[task] = f"{r.seconds:.0f}"
        weights[task] = Path(r.card.resolved_urls()[0])
        print(f"{task}: pretrained in {r.seconds:.0f} s, final loss {r.history[-1]:.4f}", flush=True)

    intro = (
        "simple_cnn pretrained without labels on 32 x 32 phantoms (zoo.data.synthetic, lesion contrast 0.1-0.3; "
        f"{', '.join(f'{t} {TASKS[t][0]} epochs on {TASKS[t][1]} images' for t in tasks)}; batch 64, Adam 1e-3), "
        "then lesion present/absent with 1% (10 images) and 10% (100 images) of a 1000-image labelled pool, "
        "tested on 500 fresh phantoms. Frozen encoder: linear probe (logistic regression) and 5-NN, "
        "mean ± std over 5 label draws. ** = beats random init by more than the larger of the two spreads.\n\n")
    tail = ("\n\nNot benchmarked: relative_position and jigsaw (simple_cnn needs 32-px tiles, so 100-px images) and "
            "the volume tasks (slice_order, subject, genesis3d), whose downstream task would differ; they are "
            "trained one epoch each by tests/ssl/test_tasks.py.")

    def report(results, protocols, fractions, extra=""):
        text, _ = table(results, pretrain_s, protocols, fractions, tasks)
        body = (intro + extra + text + f" CPU {(time.process_time() - t_start) / 60:.1f} min, wall "
                f"{(time.time() - w_start) / 60:.1f} min for this run" + (" (evaluation only; pretraining reused)" if args.reuse else "")
                + " on a machine shared with other jobs." + tail)
        print(body, flush=True)
        if not args.quick:
            from benchmarks._report import write_section

            write_section("bench_ssl_fewlabel", "Self-supervised pretraining: few-label accuracy", body)

    results = {}
    for name, w in weights.items():
        frozen = frozen_scores("simple_cnn", w, train, held, FRACTIONS, (0, 1, 2, 3, 4))
        results[name] = {"linear": summarize(frozen["linear"]), "knn": summarize(frozen["knn"])}
        print(name, results[name], flush=True)
    fractions = {"linear": FRACTIONS, "knn": FRACTIONS}
    report(results, ["linear", "knn"], fractions)
    if args.finetune_seeds:
        seeds = tuple(range(args.finetune_seeds))
        for name, w in weights.items():
            results[name]["finetune"] = summarize(finetune_scores("simple_cnn", w, train, held, (0.1,), seeds,
                                                                  epochs=10, min_steps=40))
            print(name, results[name]["finetune"], flush=True)
        fractions["finetune"] = (0.1,)
        report(results, ["linear", "knn", "finetune"], fractions,
               f"Fine-tune: the whole network with a fresh head, Adam 1e-3, 10 epochs, 10% labels, {len(seeds)} seeds "
               "(label draw and head initialisation).\n\n")
    return results


if __name__ == "__main__":
    main()
