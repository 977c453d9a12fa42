"""The fine-tuning recipe on the demo task (3 seeds), and stage 1 epoch time with feature caching.

Run: `python benchmarks/bench_finetune.py`.

Recipe: the demo's fine-tuning step (zoo.demo.transfer_step, the code `zoo demo` runs) for
seeds 0, 1, 2: the shipped checkpoint as is, zoo.finetune's two stages (test accuracy after
stage 1 alone, from a stage-1-only run with the same seed, and at the end), and the same
network from scratch; plus what the old bilinear augmentation does to the validation images,
and the same recipe on 1000 labels as a ceiling for the task.

Caching: both sides are the same ``zoo.finetune`` call
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


SEEDS = (0, 1, 2)


def _flags() -> str:
    from zoo.train.precision import cpu_flags

    flags = cpu_flags()
    amx = any(f.startswith("amx") for f in flags)
    return f"avx2 {'yes' if 'avx2' in flags else 'no'}, avx512_bf16 {'yes' if 'avx512_bf16' in flags else 'no'}, " \
           f"amx {'yes' if amx else 'no'}"


def _augmentation_effect() -> str:
    """Old default (bilinear translation/rotation/zoom) against the recipe's Augment, on 200 validation phantoms."""
    import keras
    import numpy as np

    import zoo
    from zoo.data.synthetic import make_phantoms
    from zoo.demo import TARGET_TASK
    from zoo.train.finetune import Augment, _AugmentedBatches

    val = make_phantoms(200, seed=3, **TARGET_TASK)
    x = val.images
    old = x
    for layer in [keras.layers.RandomTranslation(0.05, 0.05, fill_mode="nearest", seed=0),
                  keras.layers.RandomRotation(0.02, fill_mode="nearest", seed=1),
                  keras.layers.RandomZoom(0.05, fill_mode="nearest", seed=2)]:
        old = layer(old, training=True)
    old = keras.ops.convert_to_numpy(old)
    batches = _AugmentedBatches(x, val.labels, 200, 0, None, Augment(), (0.0, 255.0))
    new = np.concatenate([b[0] for b in batches.dataset(0).as_numpy_iterator()])
    new_labels = val.labels[batches.order(0)]
    model = zoo.load("simple_cnn.phantom")
    rough = lambda im: float(np.std(np.diff(im, axis=2)))  # noqa: E731
    acc = lambda im, y: float(np.mean(keras.ops.convert_to_numpy(model(im)).argmax(-1) == y))  # noqa: E731
    rows = [("as given", x, val.labels, 0.0),
            ("old default: bilinear translate/rotate/zoom", old, val.labels, float(np.abs(old - x).mean())),
            ("recipe: Augment() (whole-pixel shifts, gain/offset jitter)", new, new_labels,
             float(np.abs(new - x[batches.order(0)]).mean()))]
    return ("| images | mean abs change (grey levels) | pixel-to-pixel std | checkpoint accuracy |\n|---|---|---|---|\n"
            + "\n".join(f"| {name} | {change:.1f} | {rough(im):.1f} | {acc(im, y):.3f} |"
                        for name, im, y, change in rows))


def _recipe() -> tuple[str, list[dict]]:
    import tempfile
    import time

    from zoo.demo import transfer_data, transfer_step
    from zoo.train.finetune import deterministic, finetune

    rows = []
    for seed in SEEDS:
        with tempfile.TemporaryDirectory() as tmp:
            deterministic(seed)
            t0 = time.perf_counter()
            r = transfer_step(Path(tmp), 80, 12, seed, export=False)
            seconds = time.perf_counter() - t0
            deterministic(seed)
            train, val, test = transfer_data(80, seed)
            stage1 = finetune("simple_cnn.phantom", train, val, epochs=(6, 0), batch_size=16, seed=seed, verbose=0,
                              patience=4, strategy="cpu", out_dir=Path(tmp) / "stage1")
            s1 = float((stage1.model.predict(test.images, verbose=0).argmax(-1) == test.labels).mean())
        rows.append({"seed": seed, "as_is": r["checkpoint_as_is"], "scratch": r["from_scratch"], "stage1": s1,
                     "finetuned": r["finetuned"], "kept": r["stage2_kept"], "seconds": seconds})
        print(rows[-1], flush=True)
    return _flags(), rows


def _ceiling() -> float:
    import tempfile

    from zoo.data.synthetic import make_phantoms
    from zoo.demo import TARGET_TASK, transfer_data
    from zoo.train.finetune import deterministic, finetune

    deterministic(0)
    train, val = make_phantoms(1000, seed=500, **TARGET_TASK), make_phantoms(200, seed=501, **TARGET_TASK)
    test = transfer_data(80, 0)[2]
    with tempfile.TemporaryDirectory() as tmp:
        r = finetune("simple_cnn.phantom", train, val, epochs=(3, 6), batch_size=32, verbose=0, strategy="cpu",
                     out_dir=tmp)
        return float((r.model.predict(test.images, verbose=0).argmax(-1) == test.labels).mean())


def main():
    import numpy as np

    from benchmarks._report import write_section

    effect = _augmentation_effect()
    print(effect, flush=True)
    flags, recipe = _recipe()
    ceiling = _ceiling()
    print("ceiling", ceiling, flush=True)
    mean = {k: float(np.mean([r[k] for r in recipe])) for k in ("as_is", "scratch", "stage1", "finetuned", "seconds")}
    table = "\n".join(
        f"| {r['seed']} | {r['as_is']:.3f} | {r['scratch']:.3f} | {r['stage1']:.3f} | {r['finetuned']:.3f} | "
        f"{'yes' if r['kept'] else 'no (stage 1 kept)'} | {r['finetuned'] - r['as_is']:+.3f} | "
        f"{r['finetuned'] - r['scratch']:+.3f} | {r['seconds']:.0f} |" for r in recipe)
    table += (f"\n| **mean** | **{mean['as_is']:.3f}** | **{mean['scratch']:.3f}** | **{mean['stage1']:.3f}** | "
              f"**{mean['finetuned']:.3f}** | | **{mean['finetuned'] - mean['as_is']:+.3f}** (target +0.05) | "
              f"**{mean['finetuned'] - mean['scratch']:+.3f}** (target +0.10) | {mean['seconds']:.0f} |")
    recipe_body = (
        f"CPU flags: {flags}. The demo's fine-tuning step (`zoo demo`, 80 labelled 64x64 phantoms of the harder target "
        "task, 40 for validation, 600 for test; `zoo.finetune` defaults: stage 1 head at 1e-3, stage 2 whole backbone "
        "at 1e-4 with BatchNorm frozen, AdamW, batch 16, whole-pixel shifts and intensity jitter in both stages, stage 2 "
        "kept only if it lowers val_loss without lowering val_accuracy; from scratch: every layer at 1e-3). Test accuracy; stage 1: a stage-1-only "
        "run with the same seed. Every number repeats exactly for the same seed (op determinism).\n\n"
        "| seed | checkpoint as is | from scratch | fine-tuned, stage 1 | fine-tuned, end | stage 2 kept | "
        "vs as is | vs scratch | seconds |\n|---|---|---|---|---|---|---|---|---|\n" + table + "\n\n"
        f"Ceiling for the task: the same recipe on 1000 target labels (epochs 3+6, batch 32, seed 0) reaches "
        f"{ceiling:.3f} on seed 0's test set (as is {recipe[0]['as_is']:.3f}), so the +0.05 target over the checkpoint "
        "as is is beyond what more labels give on this task.\n\n"
        "Why the old default augmentation hurt: it resamples (bilinear), which low-pass filters the noise and the "
        "small faint lesions, so stage 2 trained on a blurred domain and was validated on a sharp one "
        "(200 validation phantoms, shipped checkpoint; whole-pixel shifts move edges, so their mean "
        "change is large without any blur: the pixel-to-pixel std is the blur measure; the checkpoint's drop "
        "on the recipe's views comes mostly from the intensity jitter):\n\n" + effect)

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
    body = recipe_body + "\n\n### Stage 1: feature caching\n\n" + (
        f"Stage 1 of `zoo.finetune` (frozen backbone, new head; AdamW, batch {BATCH}, {EPOCHS} epochs, grey phantoms, "
        "random-init backbone) with and without `cache_features`, one after the other in one process. Epoch time: "
        "median of epochs 2..N (epoch 1 includes tracing). The feature pass is paid once; break-even is the number "
        "of epochs after which caching is ahead. Head weight difference: max |cached - uncached| after stage 1.\n\n"
        "| backbone | input | images | uncached epoch (s) | cached epoch (s) | ratio (target >= 10x) | "
        "feature pass (s) | break-even (epochs) | head weight diff |\n|---|---|---|---|---|---|---|---|---|\n"
        + "\n".join(rows))
    print(write_section("bench_finetune", "Fine-tuning: the recipe on the demo task, and feature caching", body))


if __name__ == "__main__":
    main()
