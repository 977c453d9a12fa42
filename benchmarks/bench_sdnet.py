"""SDNet vs a U-Net with the same labelled masks: Dice on held-out phantoms, 1, 5 and 20 labels.

Run: `python benchmarks/bench_sdnet.py [--seeds 0,1,2] [--epochs 16]`; `--quick` checks every path
in seconds (tiny data, one seed, no report written). About 10 minutes on 2 cores.

Data (``zoo.data.synthetic.make_phantoms``, 32 x 32, every phantom with one lesion, pixel values
divided by 255): per seed, a pool of 20 labelled phantoms (the first 1, 5 or 20 are used), 240
unlabelled phantoms and 100 held-out test phantoms, each drawn with its own generator seed.
Models: the zoo's ``unet`` (depth 2, 8 base filters, two softmax classes) trained on the
labelled images only, and ``zoo.semi.fit_sdnet``: the registered ``sdnet`` segmenter
(zoo.models.sdnet: the same U-Net as anatomy encoder, 8 anatomy channels, plus a segmentor), a
modality encoder sampled by the shared ``zoo.layers.vae.Sampling`` and a FiLM decoder, trained
on the labelled and the unlabelled images (default loss weights: Dice 10, L1 reconstruction 1, KL 0.01). Both see
the same labelled batches (4 per step, cycled), the same soft Dice loss (background included),
Adam at 1e-3 and the same number of steps (``--epochs`` passes over the unlabelled set at 8
unlabelled images per step). Test Dice: the hard Dice of the arg-max lesion mask per test image,
averaged over the test images; then mean and standard deviation over the seeds.
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
SIZE, DEPTH, BASE = 32, 2, 8
LEARNING_RATE = 1e-3


def data(seed: int, quick: bool) -> dict:
    """Labelled pool, unlabelled set and test set: independent phantom draws per seed."""
    from zoo.data.synthetic import make_phantoms

    n_pool, n_unl, n_test = (4, 16, 8) if quick else (20, 240, 100)
    out = {}
    for k, (name, n) in enumerate((("pool", n_pool), ("unlabelled", n_unl), ("test", n_test))):
        p = make_phantoms(n, size=SIZE, seed=1000 * seed + k, positive_fraction=1.0)
        out[name] = (p.images / 255.0, p.masks.astype(np.int32))
    return out


def test_dice(model, x, y) -> float:
    from zoo.metrics.segmentation import dice

    pred = np.argmax(model.predict(x, batch_size=50, verbose=0), -1)
    return float(np.mean(dice(y, pred, axis=(1, 2))))


def train_unet(stream, epochs: int, seed: int):
    """The zoo's U-Net on the labelled batches of ``stream`` alone, the same steps as SDNet."""
    import keras

    from zoo.models.factory import load
    from zoo.train.engine import Engine
    from zoo.train.tasks import Segmentation

    keras.utils.set_random_seed(seed)
    model = load("unet", in_chans=1, input_shape=(SIZE, SIZE, 1), num_classes=2, depth=DEPTH,
                 base_filters=BASE)

    def labelled(epoch):
        return stream.dataset(epoch).map(lambda x, y, w: (x["labelled"], y, w))

    Engine(Segmentation(model, loss="dice"), keras.optimizers.Adam(LEARNING_RATE)).fit(
        labelled, epochs)
    return model


def run_one(seed: int, n: int, d: dict, epochs: int) -> dict:
    from zoo.semi.sdnet import PairedStream, fit_sdnet

    (px, py), (ux, _), (tx, ty) = d["pool"], d["unlabelled"], d["test"]
    x, y = px[:n].astype(np.float32), py[:n]
    u = ux.astype(np.float32)
    t0 = time.process_time()
    stream = PairedStream(x, y, u, 4, 8, seed)
    unet = train_unet(stream, epochs, seed)
    t1 = time.process_time()
    sd = fit_sdnet(x, y, u, epochs=epochs, batch_size=4, unlabelled_batch_size=8, seed=seed,
                   learning_rate=LEARNING_RATE, depth=DEPTH, base_filters=BASE,
                   input_range=(0.0, 1.0))
    t2 = time.process_time()
    tx = tx.astype(np.float32)
    row = {"unet": test_dice(unet, tx, ty), "sdnet": test_dice(sd.segmenter, tx, ty),
           "unet_s": t1 - t0, "sdnet_s": t2 - t1, "steps": len(stream) * epochs,
           "unet_params": unet.count_params(), "sdnet_params": sum(
               m.count_params() for m in (sd.net.segmenter, sd.net.modality, sd.net.decoder))}
    print(f"seed {seed} n={n}: U-Net Dice {row['unet']:.3f} ({row['unet_s']:.0f} CPU s), "
          f"SDNet Dice {row['sdnet']:.3f} ({row['sdnet_s']:.0f} CPU s)", flush=True)
    return row


def table(results: dict, counts) -> list[str]:
    lines = []
    for n in counts:
        rows = results[n]
        u = np.array([r["unet"] for r in rows])
        s = np.array([r["sdnet"] for r in rows])
        diff = s - u
        if len(rows) > 1 and abs(diff.mean()) > u.std() + s.std():
            verdict = "SDNet higher" if diff.mean() > 0 else "U-Net higher"
        else:
            verdict = "within the spread"
        lines.append(
            f"| {n} | {u.mean():.3f} ± {u.std():.3f} | {s.mean():.3f} ± {s.std():.3f} | "
            f"{diff.mean():+.3f} ± {diff.std():.3f} | {verdict} | {rows[0]['steps']} | "
            f"{np.mean([r['unet_s'] for r in rows]):.0f} / {np.mean([r['sdnet_s'] for r in rows]):.0f} |")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="every path once, tiny; no report")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=16)
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    counts = (1, 5, 20)
    if args.quick:
        seeds, counts, args.epochs = seeds[:1], (1, 4), 1

    import tensorflow as tf

    from zoo.train.precision import cpu_flags

    results: dict = {n: [] for n in counts}
    for seed in seeds:
        d = data(seed, args.quick)
        for n in counts:
            results[n].append(run_one(seed, n, d, args.epochs))
    first = results[counts[0]][0]
    flags = [f for f in FLAGS if f in cpu_flags()]
    body = (
        f"CPU flags: {', '.join(flags) or 'none of ' + ', '.join(FLAGS)}; {os.cpu_count()} logical "
        f"CPUs; TensorFlow {tf.__version__}.\n\n"
        "Setup in the module docstring: 32 x 32 phantoms, one lesion each; 240 unlabelled and 100 "
        f"held-out test phantoms per seed; seeds {seeds}. U-Net: `unet` depth 2, 8 base filters "
        f"({first['unet_params']:,} parameters), labelled images only. SDNet: the same U-Net as "
        f"anatomy encoder plus segmentor, modality encoder and decoder ({first['sdnet_params']:,} "
        "parameters), labelled + unlabelled. Test Dice mean ± standard deviation over the seeds; "
        "the difference is SDNet minus U-Net per seed. A difference is called a gain only where "
        "its mean exceeds the sum of the two standard deviations.\n\n"
        "| labelled images | U-Net test Dice | SDNet test Dice | difference | verdict | steps | "
        "CPU s (U-Net / SDNet) |\n|---|---|---|---|---|---|---|\n"
        + "\n".join(table(results, counts)) + "\n"
    )
    print(body)
    if args.quick:
        print("\n--quick: a check of every path; docs/benchmarks.md is not written.")
        return 0
    from benchmarks._report import write_section

    print(f"wrote {write_section('bench_sdnet', 'SDNet vs U-Net with few labelled masks', body)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
