"""Training throughput of the zoo's engine vs Keras ``Model.fit`` vs a PyTorch loop, side by side.

Run: `python benchmarks/bench_engine.py [--torch-python PATH] [--archs resnet50,densenet121]
[--size 160] [--batch 16] [--steps 12]`; `--quick` checks every path in seconds (tiny sizes, no
report written). Do not run the full benchmark on a busy machine: it is meant for a quiet one.

Measured in one process on the same cores (the PyTorch loop in a second Python, as
bench_inference does, so the zoo's environment can stay torch-free):

- images/s of one training step (SGD with momentum, sparse cross-entropy, random images and
  labels, the same input size and batch) for the engine (``zoo.train.engine.Engine`` with a
  ``Classification`` task), Keras ``fit`` (``jit_compile=False``, as the engine) and PyTorch
  (timm's model of the same name, else torchvision's; channels-last, ``torch.set_num_threads`` =
  cores, ``torch.autocast`` for bf16), in fp32 and bf16 (Keras ``mixed_bfloat16``);
- per-step overhead on a tiny model (a Dense layer on 8 features): ms/step of the engine and of
  ``fit``; the issue's target is engine <= 1.1x fit;
- MirroredStrategy over 2 logical CPUs against one device for one model (the all-reduce is
  amortised only by a model with enough work per step);
- the tf.data service (zoo.train.data_service): a decode-like pipeline (512x512 uint16 slices,
  windowed and resized to 224x224x3) read locally and through 1 and 2 in-process workers on
  127.0.0.1 (the workers share this machine's cores: the gain on one machine is bounded by them;
  workers on other machines add their own).

Each number is the best of ``--repeats`` timed runs of ``--steps`` steps after a warm-up (tracing).
The table goes to docs/benchmarks.md (section bench_engine) with the CPU flags.
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

FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile")
TIMM_NAMES = {"resnet50": "resnet50", "densenet121": "densenet121"}

TORCH_SCRIPT = r"""
import json, sys, time, torch
name, size, batch, steps, repeats, threads, precisions = sys.argv[1:8]
size, batch, steps, repeats = int(size), int(batch), int(steps), int(repeats)
torch.set_num_threads(int(threads))
try:
    import timm
    model, source = timm.create_model(name, pretrained=False, num_classes=10), "timm " + timm.__version__
except Exception:  # not installed, or built for another torch
    try:
        import torchvision
        model, source = getattr(torchvision.models, name)(num_classes=10), "torchvision " + torchvision.__version__
    except Exception as err:
        print(json.dumps({"error": "neither timm nor torchvision imports: " + repr(err)[:120]})); sys.exit(0)
model = model.train().to(memory_format=torch.channels_last)
opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
x = torch.rand(batch, 3, size, size).mul(255).contiguous(memory_format=torch.channels_last)
y = torch.randint(0, 10, (batch,))
def step(bf16):
    opt.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward(); opt.step()
out = {"source": source, "torch": torch.__version__}
for precision in precisions.split(","):
    bf16 = precision == "bf16"
    for _ in range(2):
        step(bf16)
    best = 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(steps):
            step(bf16)
        best = max(best, steps * batch / (time.perf_counter() - t))
    out[precision] = best
print(json.dumps(out))
"""


def logical_cpus(n: int = 2) -> None:
    """Split the CPU into ``n`` logical devices (before TensorFlow initialises) for the Mirrored row."""
    import tensorflow as tf

    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * n)


def best_rate(run, steps: int, batch: int, repeats: int) -> float:
    """Best images/s over ``repeats`` calls of ``run(steps)`` (after one warm-up call)."""
    run(2)
    best = 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        run(steps)
        best = max(best, steps * batch / (time.perf_counter() - t))
    return best


def data(size: int, batch: int, channels: int = 3, classes: int = 10):
    import numpy as np

    rng = np.random.default_rng(0)
    return (rng.uniform(0, 255, (batch, size, size, channels)).astype("float32"),
            rng.integers(0, classes, batch).astype("int32"))


def build(build_model, strategy=None):
    import keras
    import tensorflow as tf

    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = build_model()
        optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
    return model, optimizer


def engine_rate(build_model, x, y, steps, repeats, strategy=None) -> float:
    import tensorflow as tf

    from zoo.train.engine import Engine
    from zoo.train.tasks import Classification

    model, optimizer = build(build_model, strategy)
    engine = Engine(Classification(model), optimizer, strategy)
    batch = tf.data.Dataset.from_tensors((x, y)).cache()

    def run(n):
        engine.epoch, engine.history = 0, []
        engine.fit(batch.repeat(n), epochs=1)

    return best_rate(run, steps, len(x), repeats)


def fit_rate(build_model, x, y, steps, repeats) -> float:
    import tensorflow as tf

    model, optimizer = build(build_model)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", jit_compile=False)
    batch = tf.data.Dataset.from_tensors((x, y)).cache()
    return best_rate(lambda n: model.fit(batch.repeat(n), epochs=1, verbose=0), steps, len(x), repeats)


def torch_rates(python: str | None, arch: str, size: int, batch: int, steps: int, repeats: int) -> dict:
    if not python:
        return {"error": "no --torch-python"}
    proc = subprocess.run([python, "-c", TORCH_SCRIPT, TIMM_NAMES.get(arch, arch), str(size), str(batch), str(steps),
                           str(repeats), str(os.cpu_count()), "fp32,bf16"],
                          capture_output=True, text=True, timeout=3600)
    if proc.returncode:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1][:200]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_throughput(args) -> tuple[list[str], list[str]]:
    import zoo
    from zoo.train.precision import policy

    rows, notes = [], []
    for arch in args.archs.split(","):
        x, y = data(args.size, args.batch)
        torch = torch_rates(args.torch_python, arch, args.size, args.batch, args.steps, args.repeats)
        if "error" in torch:
            notes.append(f"PyTorch not measured for {arch}: {torch['error']}.")
        else:
            notes.append(f"PyTorch side for {arch}: {torch['source']}, torch {torch['torch']}.")
        for precision in ("fp32", "bf16"):
            with policy(precision, check=False):
                def make(a=arch):
                    return zoo.load(a, num_classes=10, input_shape=(args.size, args.size))

                eng = engine_rate(make, x, y, args.steps, args.repeats)
                fit = fit_rate(make, x, y, args.steps, args.repeats)
            pt = torch.get(precision)
            vs = f"{eng / pt:.2f}x" if pt else "n/a"
            rows.append(f"| {arch} | {precision} | {eng:.1f} | {fit:.1f} | {pt:.1f} | {eng / fit:.2f}x | {vs} |"
                        if pt else f"| {arch} | {precision} | {eng:.1f} | {fit:.1f} | n/a | {eng / fit:.2f}x | n/a |")
            print(rows[-1], flush=True)
    return rows, notes


def bench_overhead(args) -> str:
    import keras

    def tiny():
        inputs = keras.Input((8,))
        return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(inputs))

    x, y = data(1, 32)
    x = x.reshape(32, 3)[:, :1].repeat(8, 1)
    steps = args.steps * 20
    eng = engine_rate(tiny, x, y, steps, args.repeats)
    fit = fit_rate(tiny, x, y, steps, args.repeats)
    ms_engine, ms_fit = 32e3 / eng, 32e3 / fit
    row = f"| tiny Dense (8 -> 10), batch 32, {steps} steps | {ms_engine:.3f} | {ms_fit:.3f} | {ms_engine / ms_fit:.2f}x |"
    print(row, flush=True)
    return row


def bench_mirrored(args) -> str:
    import tensorflow as tf

    import zoo

    arch, size = args.mirrored_arch, args.size
    x, y = data(size, args.batch)

    def make():
        return zoo.load(arch, num_classes=10, input_shape=(size, size))

    one = engine_rate(make, x, y, args.steps, args.repeats, tf.distribute.OneDeviceStrategy("/cpu:0"))
    mirrored = engine_rate(make, x, y, args.steps, args.repeats,
                           tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")]))
    row = f"| {arch} {size}px, batch {args.batch} | {one:.1f} | {mirrored:.1f} | {mirrored / one:.2f}x |"
    print(row, flush=True)
    return row


def decode_pipeline(n: int, edge: int, out: int):
    """A decode-like tf.data pipeline: uint16 CT slices, windowed, resized and tiled to 3 channels."""
    import tensorflow as tf

    def slice_(i):
        image = tf.random.stateless_uniform([edge, edge, 1], seed=tf.stack([i, i]), maxval=4096, dtype=tf.int32)
        image = tf.cast(image, tf.float32) - 1024.0
        image = tf.clip_by_value((image + 160.0) / 400.0, 0.0, 1.0) * 255.0
        return tf.tile(tf.image.resize(image, [out, out]), [1, 1, 3])

    return tf.data.Dataset.range(n).map(slice_).batch(16)


def bench_service(args) -> list[str]:
    from zoo.train.data_service import DataService

    n, edge, out = args.slices, args.slice_edge, args.slice_out

    def rate(make):
        best = 0.0
        for _ in range(args.repeats):
            t = time.perf_counter()
            count = sum(int(b.shape[0]) for b in make())
            assert count == n, f"{count} slices delivered of {n}"
            best = max(best, n / (time.perf_counter() - t))
        return best

    rows = [f"| local tf.data (no service) | {rate(lambda: decode_pipeline(n, edge, out)):.1f} |"]
    for workers in (1, 2):
        with DataService(workers) as service:
            value = rate(lambda s=service: s.distribute(decode_pipeline(n, edge, out)))
        rows.append(f"| tf.data service, {workers} worker{'s' if workers > 1 else ''} on 127.0.0.1 | {value:.1f} |")
    for row in rows:
        print(row, flush=True)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, every path once, no report (a check)")
    parser.add_argument("--torch-python", default=os.environ.get("BENCH_TORCH_PYTHON", sys.executable),
                        help="a Python with torch and timm (or torchvision); default: this one")
    parser.add_argument("--archs", default="resnet50,densenet121")
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=12, help="timed steps per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--mirrored-arch", default="resnet50")
    parser.add_argument("--slices", type=int, default=512)
    parser.add_argument("--slice-edge", type=int, default=512)
    parser.add_argument("--slice-out", type=int, default=224)
    parser.add_argument("--only", choices=("overhead",),
                        help="run only this row and print it (no report): a quick before/after check")
    args = parser.parse_args(argv)
    if args.quick:
        args.archs, args.size, args.batch, args.steps, args.repeats = "resnet50", 32, 2, 2, 1
        args.mirrored_arch, args.slices, args.slice_edge, args.slice_out = "simple_cnn", 32, 64, 32
    logical_cpus(2)
    if args.only == "overhead":
        bench_overhead(args)
        return 0

    import tensorflow as tf

    from zoo.train.precision import cpu_flags

    throughput, notes = bench_throughput(args)
    overhead = bench_overhead(args)
    mirrored = bench_mirrored(args)
    service = bench_service(args)
    flags = [f for f in FLAGS if f in cpu_flags()]
    body = (
        f"CPU flags: {', '.join(flags) or 'none of ' + ', '.join(FLAGS)}; {os.cpu_count()} logical CPUs; "
        f"TensorFlow {tf.__version__}. Input {args.size}x{args.size}x3, batch {args.batch}, SGD (momentum 0.9), "
        f"10 classes; images/s best of {args.repeats} runs of {args.steps} steps after a warm-up. bf16 is Keras "
        "`mixed_bfloat16` / `torch.autocast(bfloat16)`. The process holds 2 logical CPU devices (for the Mirrored "
        "row); the other rows run on the default device.\n\n"
        "| model | precision | engine | Keras fit | PyTorch | engine/fit | engine/PyTorch |\n"
        "|---|---|---|---|---|---|---|\n" + "\n".join(throughput) + "\n\n" + " ".join(notes) + "\n\n"
        "Per-step overhead (target: engine <= 1.1x fit):\n\n| model | engine ms/step | fit ms/step | engine/fit |\n"
        "|---|---|---|---|\n" + overhead + "\n\n"
        "MirroredStrategy over 2 logical CPUs against one device (engine images/s):\n\n"
        "| model | one device | Mirrored (2 logical CPUs) | ratio |\n|---|---|---|---|\n" + mirrored + "\n\n"
        f"tf.data service (zoo.train.data_service): {args.slices} slices {args.slice_edge}x{args.slice_edge} "
        f"-> {args.slice_out}x{args.slice_out}x3, batches of 16, slices/s (in-process workers share the cores):\n\n"
        "| input | slices/s |\n|---|---|\n" + "\n".join(service) + "\n"
    )
    if args.quick:
        print("\n--quick: a check of every path; docs/benchmarks.md is not written.")
        return 0
    from benchmarks._report import write_section

    print(f"wrote {write_section('bench_engine', 'Training engine vs Keras fit vs PyTorch', body)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
