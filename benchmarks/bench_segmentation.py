"""Segmentation: Dice on the synthetic lesion task at a fixed CPU budget, and sliding-window speed
against MONAI.

Run: `python benchmarks/bench_segmentation.py [--monai-python PATH] [--budget 120] [--seeds 0,1,2]`;
`--quick` checks every path in seconds (tiny data and models, one seed, no report written).
Do not run the full benchmark on a busy machine: it is meant for a quiet one (about 20 minutes on
2 cores). PATH is a second Python with torch and MONAI (a separate venv, so the zoo's own
environment stays torch-free), e.g. `python -m venv /tmp/monaivenv && /tmp/monaivenv/bin/pip
install torch monai --index-url https://download.pytorch.org/whl/cpu --extra-index-url
https://pypi.org/simple`; without it the MONAI column is left out, and said so.

1. Dice at a fixed budget. The task is ``zoo demo segmentation``'s: CT volumes 32 x 64 x 64 at
   (2, 1, 1) mm with hyperdense lesions (``zoo.data.synthetic_dicom.lesion_ct``), 8 for
   training and 4 for test per seed, windowed to [0, 255] grey values. Four models train on
   foreground-oversampled samples (``segmentation_dataset``, fg_fraction 0.5, flips and 90-degree
   turns) with the same engine, loss (Dice + cross-entropy), AdamW (2e-3) and batch size, each
   until it has used ``--budget`` CPU seconds (``time.process_time``: every thread of this
   process, so other load on the machine does not shorten it; the first step, which traces the
   graph, is not counted): a 2D U-Net on axial slices (``unet``, depth 3, 16 filters), a 3D U-Net
   (``unet3d``, depth 3, 16 filters), and the demo's 3D U-Net on the first three stages of
   ``simple_cnn_3d``, from random weights and with the encoder inflated from
   ``simple_cnn.phantom`` (``simple_cnn_3d.phantom_inflated``). Test Dice and HD95 (mm) of the
   whole volumes (sliding window, overlap 0.5; the 2D model slice by slice) are averaged over the
   4 test volumes, then mean and standard deviation over the seeds.
2. Sliding-window throughput. One volume (64 x 128 x 128) through windows of 32 x 64 x 64, overlap
   0.5, Gaussian blending, 4 windows per call: ``zoo.infer.sliding.sliding_window`` (the function
   ``zoo.infer.segment`` uses) on a Keras 3D U-Net (``unet3d``, depth 4, 8 base filters, instance
   norm), called as a Keras model and as a ``tf.function``, against MONAI's
   ``sliding_window_inference`` on ``BasicUNet`` with the same widths (8, 16, 32, 64, 128), two
   3x3x3 convolutions per level, instance norm, ReLU and transposed-convolution up-sampling, in
   ``torch.inference_mode`` with ``torch.set_num_threads`` = the cores. Voxels/s of the whole
   volume (best of ``--repeats`` after a warm-up) and, to tell the network from the stitching,
   voxels/s of the network alone on one call of 4 windows.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")
LEARNING_RATE = 2e-3
STEPS_PER_EPOCH = 4  # the budget is checked between these short epochs: small overshoot

MONAI_SCRIPT = r"""
import json, sys, time, torch, monai
from monai.inferers import sliding_window_inference
from monai.networks.nets import BasicUNet
shape, roi, widths = (json.loads(a) for a in sys.argv[1:4])
overlap, batch, repeats, threads = float(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
torch.set_num_threads(threads)
torch.manual_seed(0)
net = BasicUNet(spatial_dims=3, in_channels=1, out_channels=2, features=(*widths, widths[0]), act="relu",
                norm=("instance", {"affine": True}), bias=False, upsample="deconv").eval()
predict = lambda w: torch.softmax(net(w), 1)
x = torch.rand(1, 1, *shape) * 255
windows = torch.rand(batch, 1, *roi) * 255
def best(fn, n):
    fn()
    times = []
    for _ in range(n):
        t = time.perf_counter(); fn(); times.append(time.perf_counter() - t)
    return min(times)
with torch.inference_mode():
    whole = best(lambda: sliding_window_inference(x, roi, batch, predict, overlap=overlap, mode="gaussian"), repeats)
    network = best(lambda: predict(windows), repeats)
n = 1
for s in shape: n *= s
w = batch
for s in roi: w *= s
print(json.dumps({"params": sum(p.numel() for p in net.parameters()), "whole_s": whole, "voxels_s": n / whole,
                  "network_voxels_s": w / network, "torch": torch.__version__, "monai": monai.__version__}))
"""


# --- 1. Dice at a fixed CPU budget ----------------------------------------------------------------


def lesion_cases(n_train: int, n_test: int, shape, seed: int):
    """(train, test): lists of (grey image (Z, Y, X, 1) in [0, 255], labels (Z, Y, X)) of the
    demo's task; every volume seeded by (seed, index)."""
    import numpy as np

    from zoo.data.synthetic_dicom import lesion_ct
    from zoo.data.windows import window
    from zoo.demo.segmentation import SPACING, WINDOW

    cases = []
    for i in range(n_train + n_test):
        hu, labels = lesion_ct(shape, SPACING, seed=(seed, 1000 + i))
        cases.append(((window(hu, WINDOW) * np.float32(255))[..., None], labels.astype("int32")))
    return cases[:n_train], cases[n_train:]


def models(quick: bool) -> dict:
    """name -> (build(), sampler, patch size): the four models of the Dice table."""
    import zoo
    from zoo.demo.segmentation import DECODER_NORM, SIZES

    demo = SIZES["tiny" if quick else "default"]
    patch3, patch2 = demo.patch, demo.patch[1:]
    plain = dict(in_chans=1, num_classes=2, classifier_activation="softmax", norm="instance",
                 depth=2 if quick else 3, base_filters=4 if quick else 16)

    def encoder_unet(weights):
        return lambda: zoo.load("unet3d", input_shape=patch3, in_chans=1, num_classes=2,
                                classifier_activation="softmax", encoder="simple_cnn_3d",
                                encoder_weights=weights, encoder_depth=demo.encoder_depth,
                                decoder_filters=demo.decoder_filters, norm=DECODER_NORM)

    return {
        "U-Net 2D (axial slices)": (lambda: zoo.load("unet", input_shape=patch2, **plain),
                                    "slice", patch2),
        "U-Net 3D": (lambda: zoo.load("unet3d", input_shape=patch3, **plain), "patch", patch3),
        "3D U-Net, simple_cnn_3d encoder, random init": (encoder_unet(None), "patch", patch3),
        "3D U-Net, encoder inflated from simple_cnn.phantom": (encoder_unet("phantom_inflated"),
                                                               "patch", patch3),
    }


def budget_hook(seconds: float):
    """An engine hook that stops training once ``seconds`` of process CPU time have been used
    after the first step (which traces the graph); ``steps`` and ``used`` say how far it got."""
    from zoo.train.engine import Hook

    class Budget(Hook):
        start, steps, used = None, 0, 0.0

        def on_batch_end(self, engine, step, logs):
            now = time.process_time()
            if self.start is None:
                self.start = now
                return
            self.steps, self.used = self.steps + 1, now - self.start
            if self.used >= seconds:
                engine.stop = True

    return Budget()


def train_for(build, sampler, patch, train, budget: float, batch: int, seed: int):
    """(model, steps, CPU seconds used): ``build()`` trained on the zoo's engine until ``budget``."""
    import keras

    from zoo.data.seg_dataset import segmentation_dataset
    from zoo.train.engine import Engine
    from zoo.train.tasks import make_task

    keras.utils.set_random_seed(seed)
    model = build()
    stream = segmentation_dataset(train, sampler, patch_size=patch, fg_fraction=0.5,
                                  augment=("flip", "rot90"), batch_size=batch, samples_per_case=8,
                                  seed=seed, num_classes=2, repeat=True)
    optimizer = keras.optimizers.AdamW(LEARNING_RATE, weight_decay=1e-4)
    budget = budget_hook(budget)
    engine = Engine(make_task("segmentation", model, loss="dice_ce"), optimizer, hooks=[budget])
    engine.fit(lambda epoch: stream.take(STEPS_PER_EPOCH), epochs=10**6)
    return model, budget.steps + 1, budget.used


def test_scores(model, sampler, patch, test) -> tuple[float, float]:
    """(mean Dice, mean HD95 mm over the cases where it is defined) of whole test volumes."""
    import numpy as np

    from zoo.demo.segmentation import SPACING
    from zoo.infer.segment import segment
    from zoo.infer.sliding import sliding_window
    from zoo.metrics import segmentation_report

    pairs = []
    for image, labels in test:
        if sampler == "slice":  # the slices as a batch, each through the 2D model
            predicted = sliding_window(model, image, roi=patch, overlap=0.5).argmax(-1)
        else:
            predicted = segment(model, image, roi=patch, overlap=0.5).labels
        pairs.append((labels, predicted))
    row = segmentation_report(pairs, 2, spacing=SPACING, n_boot=10)["classes"][1]
    return float(row["dice"]["value"]), float(np.nan_to_num(row["hd95_mm"]["value"], nan=np.inf))


def bench_dice(args) -> list[str]:
    import numpy as np

    from zoo.demo.segmentation import SIZES

    demo = SIZES["tiny" if args.quick else "default"]
    results: dict = {}
    for seed in args.seeds:
        train, test = lesion_cases(demo.train, demo.test, demo.shape, seed)
        for name, (build, sampler, patch) in models(args.quick).items():
            batch = 4 * demo.batch_size if sampler == "slice" else demo.batch_size
            t = time.perf_counter()
            model, steps, used = train_for(build, sampler, patch, train, args.budget, batch, seed)
            dice, hd95 = test_scores(model, sampler, patch, test)
            results.setdefault(name, []).append((dice, hd95, steps, used, model.count_params()))
            print(f"seed {seed} {name}: Dice {dice:.3f}, HD95 {hd95:.1f} mm, {steps} steps in "
                  f"{used:.0f} CPU s ({time.perf_counter() - t:.0f} s wall)", flush=True)
    rows = []
    for name, runs in results.items():
        d, h, steps, used, params = (np.array(v, float) for v in zip(*runs))
        spread = (lambda v: f" ± {v.std(ddof=1):.3f}") if len(d) > 1 else (lambda v: "")
        rows.append(f"| {name} | {int(params[0]):,} | {d.mean():.3f}{spread(d)} | "
                    f"{h.mean():.1f} | {steps.mean():.0f} | {used.mean():.0f} |")
    return rows


# --- 2. Sliding-window throughput ---------------------------------------------------------------


def best_seconds(fn, repeats: int) -> float:
    fn()  # warm-up: tracing, allocation
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def zoo_sliding(shape, roi, widths, overlap, batch, repeats) -> list[dict]:
    import keras
    import numpy as np
    import tensorflow as tf

    import zoo
    from zoo.infer.sliding import sliding_window

    keras.utils.set_random_seed(0)
    model = zoo.load("unet3d", input_shape=roi, in_chans=1, num_classes=2, depth=len(widths) - 1,
                     base_filters=widths[0], norm="instance", classifier_activation="softmax")
    graph = tf.function(lambda w: model(w, training=False), reduce_retracing=True)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (1, *shape, 1)).astype("float32")
    windows = rng.uniform(0, 255, (batch, *roi, 1)).astype("float32")
    out = []
    for how, fn in (("Keras model", model), ("tf.function", lambda w: graph(w).numpy())):
        whole = best_seconds(lambda f=fn: sliding_window(f, x, roi, overlap, "gaussian",
                                                          batch=batch), repeats)
        network = best_seconds(lambda f=fn: np.asarray(f(windows)), repeats)
        out.append({"name": f"zoo sliding_window, {how}", "params": model.count_params(),
                    "whole_s": whole, "voxels_s": np.prod(shape) / whole,
                    "network_voxels_s": batch * np.prod(roi) / network})
    return out


def monai_sliding(python, shape, roi, widths, overlap, batch, repeats) -> dict:
    if not python:
        return {"error": "no --monai-python given"}
    proc = subprocess.run([python, "-c", MONAI_SCRIPT, json.dumps(list(shape)), json.dumps(list(roi)),
                           json.dumps(list(widths)), str(overlap), str(batch), str(repeats),
                           str(os.cpu_count())], capture_output=True, text=True, timeout=3600)
    if proc.returncode:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1][:200]}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["name"] = f"MONAI sliding_window_inference, BasicUNet (torch {result['torch']}, MONAI {result['monai']})"
    return result


def bench_sliding(args) -> tuple[list[str], str]:
    # BasicUNet has 4 poolings: 5 widths, windows divisible by 16
    shape, roi, widths = ((32, 64, 64), (16, 32, 32), (2, 4, 8, 16, 32)) if args.quick else (
        (64, 128, 128), (32, 64, 64), (8, 16, 32, 64, 128))
    overlap, batch = 0.5, 4
    results = zoo_sliding(shape, roi, widths, overlap, batch, args.repeats)
    monai = monai_sliding(args.monai_python, shape, roi, widths, overlap, batch, args.repeats)
    note = ""
    if "error" in monai:
        note = f"MONAI not measured: {monai['error']}."
        print(note, flush=True)
    else:
        results.append(monai)
    rows = []
    for r in results:
        rows.append(f"| {r['name']} | {int(r['params']):,} | {r['network_voxels_s'] / 1e6:.2f} | "
                    f"{r['voxels_s'] / 1e6:.2f} | {r['whole_s']:.2f} |")
        print(rows[-1], flush=True)
    setup = (f"volume {' x '.join(map(str, shape))}, windows {' x '.join(map(str, roi))}, overlap "
             f"{overlap}, Gaussian blending, {batch} windows per call, widths {widths}")
    return rows, setup + (f". {note}" if note else "")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="every path once, tiny; no report")
    parser.add_argument("--monai-python", default=None, help="a Python with torch and MONAI")
    parser.add_argument("--budget", type=float, default=120.0, help="CPU seconds per model")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    args.seeds = [int(s) for s in args.seeds.split(",")]
    if args.quick:
        args.budget, args.seeds, args.repeats = 0.5, args.seeds[:1], 1

    import tensorflow as tf

    from zoo.train.precision import cpu_flags

    dice = bench_dice(args)
    sliding, setup = bench_sliding(args)
    flags = [f for f in FLAGS if f in cpu_flags()]
    body = (
        f"CPU flags: {', '.join(flags) or 'none of ' + ', '.join(FLAGS)}; {os.cpu_count()} logical CPUs; "
        f"TensorFlow {tf.__version__}.\n\n"
        f"### Dice on the synthetic lesion task at {args.budget:.0f} CPU seconds per model\n\n"
        f"`zoo demo segmentation`'s data and recipe (module docstring); seeds {args.seeds}; test Dice "
        "mean ± standard deviation over the seeds (each the mean of 4 test volumes), HD95 the mean over "
        "seeds of the mean over volumes.\n\n"
        "| model | parameters | test Dice | test HD95 (mm) | steps | CPU s used |\n"
        "|---|---|---|---|---|---|\n" + "\n".join(dice) + "\n\n"
        f"### Sliding-window inference, zoo vs MONAI\n\n{setup}. Voxels/s in millions.\n\n"
        "| implementation | parameters | network alone (Mvox/s) | whole volume (Mvox/s) | s per volume |\n"
        "|---|---|---|---|---|\n" + "\n".join(sliding) + "\n"
    )
    if args.quick:
        print("\n--quick: a check of every path; docs/benchmarks.md is not written.")
        return 0
    from benchmarks._report import write_section

    print(f"wrote {write_section('bench_segmentation', 'Segmentation: Dice at a fixed budget, sliding window vs MONAI', body)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
