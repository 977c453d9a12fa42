"""Inference speed of the ImageNet backbones: zoo vs keras.applications vs PyTorch/timm, fp32 and bf16.

Run: `python benchmarks/bench_inference.py [--torch-python PATH] [--archs a,b] [--batch 8]`.
Everything is measured side by side in one run on one machine:

- keras.applications: the same architecture called through ``tf.function`` (its usual graph path);
- zoo: ``zoo.load`` (preprocessing inside the graph) through ``tf.function``, plain and with XLA
  (``jit_compile=True``), in fp32 and in bf16 (``mixed_bfloat16`` policy, logits kept float32);
- timm: ``timm.create_model`` in eval mode under ``torch.inference_mode`` with channels-last memory,
  fp32 and bf16 autocast, run by a second Python that has torch + timm (a separate venv, so the
  zoo's own environment stays torch-free). Skipped, and said so, when no such Python is given.

Throughput is images/s (batch ``--batch``, warm-up excluded, best of three timed windows). The
fraction of peak divides the model's analytic FLOPs (convolutions and dense layers counted from
the Keras layers) by the CPU's measured fp32 matmul rate. bf16 error is measured on the
same random images; top-1 agreement of bf16 with fp32 on the shipped, trained phantom checkpoint.
All networks carry random weights: no network access here, and speed does not depend on values.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ARCHS = {  # zoo name -> (keras.applications class, timm name)
    "resnet50": ("ResNet50", "resnet50"),
    "resnet101": ("ResNet101", "resnet101"),
    "resnet152": ("ResNet152", "resnet152"),
    "densenet121": ("DenseNet121", "densenet121"),
    "densenet169": ("DenseNet169", "densenet169"),
    "densenet201": ("DenseNet201", "densenet201"),
    "inception_v3": ("InceptionV3", "inception_v3"),
    "vgg16": ("VGG16", "vgg16"),
    "vgg19": ("VGG19", "vgg19"),
}
WINDOW_S = 2.0
PEAK_NOTE = (
    "The 2048 x 2048 `tf.matmul` rate is a floor for the CPU's peak, not its ceiling: oneDNN's convolutions "
    "with many channels (VGG, Inception) run faster than that product, so a fraction above 100% means the "
    "network runs at the CPU's practical peak, where the frameworks can only tie. On a CPU without native "
    "bf16 (no avx512_bf16 / AMX, as `zoo.train.precision` checks) bf16 gains nothing in TensorFlow and "
    "PyTorch's bf16 autocast falls far behind its fp32; the zoo's fastest path is then fp32, with or without XLA.")

TORCH_SCRIPT = r"""
import json, sys, time, torch, timm
name, size, batch, window = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
torch.set_num_threads(int(sys.argv[5]))
model = timm.create_model(name, pretrained=False, num_classes=1000).eval().to(memory_format=torch.channels_last)
x = torch.rand(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
out = {}
for precision in ("fp32", "bf16"):
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        for _ in range(2):
            model(x)
        best = 0.0
        for _ in range(3):
            n, t = 0, time.perf_counter()
            while time.perf_counter() - t < window:
                model(x); n += batch
            best = max(best, n / (time.perf_counter() - t))
    out[precision] = best
print(json.dumps(out))
"""


def throughput(fn, x, batch: int) -> float:
    """Best images/s over three timed windows, after two warm-up calls."""
    for _ in range(2):
        fn(x).numpy()
    best = 0.0
    for _ in range(3):
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < WINDOW_S:
            fn(x).numpy()
            n += batch
        best = max(best, n / (time.perf_counter() - start))
    return best


def model_flops(model) -> float:
    """Multiply-adds x 2 of every convolution and dense layer, from the layers' shapes."""
    import keras

    total = 0.0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D | keras.layers.DepthwiseConv2D):
            _, h, w, _ = layer.output.shape  # each output position costs one MAC per kernel entry
            total += 2.0 * h * w * math.prod(layer.kernel.shape)
        elif isinstance(layer, keras.layers.Dense):
            total += 2.0 * math.prod(layer.kernel.shape)
    return total


def matmul_peak(dtype: str, n: int = 2048) -> float:
    """The CPU's measured matmul rate in FLOP/s (best of several runs of an n x n product)."""
    import tensorflow as tf

    a = tf.random.uniform((n, n), dtype=tf.float32)
    a = tf.cast(a, dtype)
    mm = tf.function(lambda u: tf.matmul(u, u))
    mm(a).numpy()
    best = 0.0
    for _ in range(5):
        start, reps = time.perf_counter(), 0
        while time.perf_counter() - start < 1.0:
            mm(a).numpy()
            reps += 1
        best = max(best, reps * 2.0 * n**3 / (time.perf_counter() - start))
    return best


def run_timm(python: str, name: str, size: int, batch: int) -> dict | None:
    proc = subprocess.run([python, "-c", TORCH_SCRIPT, name, str(size), str(batch), str(WINDOW_S),
                           str(os.cpu_count())], capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"timm {name} failed: {proc.stderr.strip().splitlines()[-1:]}", flush=True)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def build_zoo(arch: str, size: int, bf16: bool):
    import keras

    import zoo

    keras.mixed_precision.set_dtype_policy("mixed_bfloat16" if bf16 else "float32")
    try:
        return zoo.load(arch, num_classes=1000, input_shape=(size, size), classifier_activation=None)
    finally:
        keras.mixed_precision.set_dtype_policy("float32")


def agreement(a, b) -> float:
    import numpy as np

    return float(np.mean(np.argmax(np.asarray(a, np.float32), -1) == np.argmax(np.asarray(b, np.float32), -1)))


def phantom_agreement() -> float:
    """bf16 against fp32 top-1 agreement of the shipped, trained simple_cnn on phantom images."""
    import keras

    import zoo
    from zoo.data.synthetic import make_phantoms

    x = make_phantoms(512, size=64, seed=7).images
    fp32 = zoo.load("simple_cnn", pretrained="phantom")
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    try:
        bf16 = zoo.load("simple_cnn", pretrained="phantom")
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    return agreement(fp32.predict(x, verbose=0), bf16.predict(x, verbose=0))


def main(argv=None):
    global WINDOW_S
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torch-python", default=os.environ.get("BENCH_TORCH_PYTHON"),
                        help="a Python with torch and timm installed (e.g. a separate venv)")
    parser.add_argument("--archs", default=",".join(ARCHS))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--window", type=float, default=WINDOW_S, help="seconds per timed window")
    args = parser.parse_args(argv)
    WINDOW_S = args.window

    import keras
    import numpy as np
    import tensorflow as tf

    from benchmarks._report import write_section

    peak32, peak16 = matmul_peak("float32"), matmul_peak("bfloat16")
    print(f"matmul peak: fp32 {peak32 / 1e9:.1f} GFLOP/s, bf16 {peak16 / 1e9:.1f} GFLOP/s", flush=True)
    rows, ratios = [], []
    for arch in args.archs.split(","):
        app, timm_name = ARCHS[arch]
        size = 299 if arch == "inception_v3" else 224
        rng = np.random.default_rng(0)
        x = tf.constant(rng.uniform(0, 255, (args.batch, size, size, 3)).astype("float32"))
        ref = getattr(keras.applications, app)(weights=None, input_shape=(size, size, 3), classifier_activation=None)
        k32 = throughput(tf.function(lambda v, m=ref: m(v, training=False)), x, args.batch)
        flops = model_flops(ref)
        del ref
        results = {}
        outs = {}
        for precision in ("fp32", "bf16"):
            model = build_zoo(arch, size, precision == "bf16")
            for xla in (False, True):
                fn = tf.function(lambda v, m=model: m(v, training=False), jit_compile=xla)
                results[(precision, xla)] = throughput(fn, x, args.batch)
            outs[precision] = model(x[:8], training=False)
            del model
        keras.backend.clear_session()
        timm = run_timm(args.torch_python, timm_name, size, args.batch) if args.torch_python else None
        best_key = max(results, key=results.get)
        best = results[best_key]
        timm_best = max(timm.values()) if timm else None
        frac = best * flops / (peak16 if best_key[0] == "bf16" else peak32)
        ref32 = np.asarray(outs["fp32"], np.float32)
        rel = float(np.max(np.abs(np.asarray(outs["bf16"], np.float32) - ref32)) / (np.ptp(ref32) + 1e-12))
        ratios.append(best / timm_best if timm_best else None)
        t32 = f"{timm['fp32']:.1f}" if timm else "n/a"
        t16 = f"{timm['bf16']:.1f}" if timm else "n/a"
        vs = f"{best / timm_best:.2f}x" if timm_best else "n/a"
        rows.append(
            f"| {arch} | {flops / 1e9:.1f} | {k32:.1f} | {results[('fp32', False)]:.1f} | {results[('fp32', True)]:.1f} | "
            f"{results[('bf16', False)]:.1f} | {results[('bf16', True)]:.1f} | {t32} | {t16} | "
            f"{best / k32:.2f}x | {vs} | {frac:.0%} | {rel:.3f} |")
        print(rows[-1], flush=True)
    phantom = phantom_agreement()
    import platform

    body = (
        f"Batch {args.batch}, images/s (best of three {WINDOW_S:.0f}-s windows), random weights, "
        f"{os.cpu_count()} CPU threads for every framework. Measured matmul peak: fp32 {peak32 / 1e9:.1f} GFLOP/s, "
        f"bf16 {peak16 / 1e9:.1f} GFLOP/s ({platform.machine()}). keras.applications and zoo run through "
        "`tf.function`; XLA = `jit_compile=True`; timm runs eager PyTorch in `inference_mode` with channels-last "
        "memory (bf16 = `torch.autocast`). `best/keras` and `best/timm` compare the zoo's fastest path with "
        "keras.applications fp32 and with timm's fastest path. `peak` is the zoo's best path as a fraction of the "
        "matmul peak of its precision. `bf16 err` is the largest |bf16 - fp32| logit difference over the fp32 "
        "logit range on 8 random images (random weights leave no meaningful top-1 to compare; the trained "
        "checkpoint below gives the top-1 agreement).\n\n"
        "| model | GFLOPs | keras fp32 | zoo fp32 | zoo fp32 XLA | zoo bf16 | zoo bf16 XLA | timm fp32 | timm bf16 "
        "| best/keras | best/timm | peak | bf16 err |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
        + "\n".join(rows)
        + f"\n\nTop-1 agreement of bf16 with fp32 on the shipped, trained `simple_cnn.phantom` checkpoint over 512 "
        f"phantom images: {phantom:.1%}."
        + "\n\n" + PEAK_NOTE
        + ("" if args.torch_python else "\n\ntimm was not measured in this run (no `--torch-python`).")
    )
    print(write_section("bench_inference", "Inference speed: zoo vs keras.applications vs timm", body))


if __name__ == "__main__":
    main()
