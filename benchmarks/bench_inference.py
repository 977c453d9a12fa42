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

Engines (issue 15): every zoo inference engine and precision installed here (``zoo.infer``:
TensorFlow fp32/bf16, ONNX Runtime fp32/int8, OpenVINO fp32/bf16/int8), per backbone and for the
3D ResNet-50 on volumes: images/s at ``--batch``, batch-1 latency, compile time and max |diff|
against Keras fp32, plus what ``zoo.compile_for_inference(engine="auto")`` picks and its ratio to
timm's best (target: >= 2x with avx512_bf16/AMX, >= 1.3x with AVX2 only). ``--train-steps N``
fine-tunes a ResNet-50 on phantoms for N steps and checks every engine/precision's agreement on
512 held-out phantoms (top-1 >= 99%, max |delta p| <= 0.02; fp32 1e-4); the same table is always
written for the shipped ``simple_cnn.phantom`` on the 200 held-out phantoms CI uses, with
images/s. bf16/int8 keep the stem and head in fp32 (``zoo.infer.engines.fp32_split``, named in
the tables). ``--no-engines`` skips
this part; ``--engines-only`` runs only it and prints the table without writing docs/.

Quick check that it runs (seconds; tests/infer/test_bench_inference.py runs it): ``python
benchmarks/bench_inference.py --quick``. The engine rows of more backbones, printed, one arch at a
time (about 6 min each on 2 cores with timm; ``--engines``/``--precisions`` narrow it):
``python benchmarks/bench_inference.py --engines-only --archs densenet121,inception_v3,vgg16
--batch 8 --volume 64 --window 1 --no-phantom --torch-python /path/to/torch-venv/bin/python``.
The full run (the lead's, on a quiet machine; writes docs/benchmarks.md):
``python benchmarks/bench_inference.py --torch-python /path/to/torch-venv/bin/python --archs
resnet50,densenet121,inception_v3,vgg16 --batch 8 --volume 64 --window 1 --train-steps 300``.
"""

from __future__ import annotations

import argparse
import importlib.util
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
    """Multiply-adds x 2 of every convolution (2D, 3D) and dense layer, from the layers' shapes."""
    import keras

    total = 0.0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D | keras.layers.Conv3D | keras.layers.DepthwiseConv2D):
            spatial = math.prod(layer.output.shape[1:-1])  # one MAC per kernel entry per position
            total += 2.0 * spatial * math.prod(layer.kernel.shape)
        elif isinstance(layer, keras.layers.Dense):
            total += 2.0 * math.prod(layer.kernel.shape)
    return total


def matmul_peak(dtype: str, n: int = 2048, runs: int = 5) -> float:
    """The CPU's measured matmul rate in FLOP/s (best of several runs of an n x n product)."""
    import tensorflow as tf

    a = tf.random.uniform((n, n), dtype=tf.float32)
    a = tf.cast(a, dtype)
    mm = tf.function(lambda u: tf.matmul(u, u))
    mm(a).numpy()
    best = 0.0
    for _ in range(runs):
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


ENGINE_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def latency_ms(run, x1, repeats: int = 20) -> float:
    """Median wall time of one batch-1 call, in ms (a clinic runs one study at a time)."""
    import numpy as np

    run(x1)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(x1)
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3


def engine_throughput(run, x, batch: int) -> float:
    """Best images/s over three timed windows of ``run`` (a zoo.infer runner), after a warm-up."""
    run(x)
    best = 0.0
    for _ in range(3):
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < WINDOW_S:
            run(x)
            n += batch
        best = max(best, n / (time.perf_counter() - start))
    return best


ONLY_ENGINES: tuple[str, ...] = ()  # --engines: measure only these (empty: every one installed)
ONLY_PRECISIONS: tuple[str, ...] = ()  # --precisions: likewise
AUTO_ROW = True  # --quick leaves out the auto row (it builds every installed engine again)


def engine_pairs():
    """(engine, precision, fp32_ends) installed and runnable here (bf16 with its stem and head
    fp32 and as one whole bf16 graph), and why the others are not."""
    from zoo.infer.engines import ENGINES, native_bf16

    pairs, skipped = [], []
    bf16_ok, device = native_bf16()
    for name, engine in ENGINES.items():
        if ONLY_ENGINES and name not in ONLY_ENGINES:
            continue
        reason = engine.missing()
        if reason:
            skipped.append(f"{name}: {reason}")
            continue
        for precision in engine.precisions:
            if ONLY_PRECISIONS and precision not in ONLY_PRECISIONS:
                continue
            if precision == "bf16" and not bf16_ok:
                skipped.append(f"{name}/bf16: {device}")
                continue
            pairs.append((name, precision, True))
            if precision == "bf16":
                pairs.append((name, precision, False))
    return pairs, skipped


def peak_fraction(ips: float, flops: float, precision: str, peaks: dict) -> str:
    """The run's FLOP/s as a fraction of the measured matmul peak of its precision (int8 against
    the bf16 peak: no int8 matmul is measured, so int8 may pass 100%)."""
    peak = peaks.get("fp32" if precision == "fp32" else "bf16")
    return f"{ips * flops / peak:.0%}" if peak else "n/a"


def bench_engines(label, build_model, x, batch, timm_best, peaks):
    """Rows of the engine table for one model: every engine/precision, then the auto choice."""
    import numpy as np

    from zoo.infer.engines import ENGINES, build_runner
    from zoo.infer.predictor import agreement, compile_for_inference, keras_outputs
    from zoo.infer.predictor import label as engine_label

    model = build_model()
    flops = model_flops(model)
    xn = np.asarray(x)
    reference = keras_outputs(model, xn)
    rows, speeds = [], {}
    for engine, precision, ends in engine_pairs()[0]:
        calibration = xn if precision != "fp32" else None
        name = engine_label(engine, precision, 1, ends)
        try:
            start = time.perf_counter()
            run = build_runner(engine, model, precision, batch, calibration, fp32_ends=ends)
            compile_s = time.perf_counter() - start
            ips = engine_throughput(run, xn, batch)
            delta = agreement(reference, run(xn)).max_delta
            if ENGINES.get(engine).static_batch:  # compiled for `batch`: batch 1 is another build
                run = build_runner(engine, model, precision, 1, calibration, fp32_ends=ends)
            ms = latency_ms(run, xn[:1])
        except Exception as e:  # report and go on: one engine's failure must not end the run
            rows.append(f"| {label} | {name} | failed: {str(e).splitlines()[0][:120]} | | | | | |")
            continue
        speeds[name] = ips
        vs = f"{ips / timm_best:.2f}x" if timm_best else "n/a"
        rows.append(f"| {label} | {name} | {ips:.1f} | {ms:.1f} | {compile_s:.1f} | {delta:.2e} "
                    f"| {peak_fraction(ips, flops, precision, peaks)} | {vs} |")
        print(rows[-1], flush=True)
    if not AUTO_ROW:
        return rows
    try:  # what a user gets: auto, with the same images as calibration data
        predictor = compile_for_inference(model, engine="auto", batch=batch, calibration_data=xn)
        key = predictor.label
        print(f"[{label}: auto measured (images/s) {predictor.timings}; refused {list(predictor.refused)}]",
              flush=True)
        ips = speeds.get(key) or engine_throughput(predictor.run, xn, batch)
        vs = f"{ips / timm_best:.2f}x" if timm_best else "n/a"
        rows.append(f"| {label} | **auto = {key}** | {ips:.1f} | | | {predictor.agreement.max_delta:.2e} "
                    f"| {peak_fraction(ips, flops, predictor.precision, peaks)} | {vs} |")
    except Exception as e:
        rows.append(f"| {label} | auto | failed: {str(e).splitlines()[0][:120]} | | | | | |")
    print(rows[-1], flush=True)
    return rows


def trained_agreement(steps: int) -> list[str]:
    """A ResNet-50 fine-tuned here on phantoms: every engine/precision against its Keras fp32 outputs."""
    import keras
    import numpy as np

    import zoo
    from zoo.data.synthetic import make_phantoms

    train = make_phantoms(2000, size=64, seed=0, contrast=(0.12, 0.4))
    held = make_phantoms(512, size=64, seed=2026, contrast=(0.12, 0.4)).images
    calibration = make_phantoms(200, size=64, seed=2027, contrast=(0.12, 0.4)).images
    model = zoo.load("resnet50", in_chans=1, num_classes=2, input_shape=(64, 64))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    epochs = max(1, steps * 32 // len(train.images))
    model.fit(train.images, train.labels, batch_size=32, epochs=epochs, verbose=0)
    reference = model.predict(held, verbose=0)
    accuracy = float(np.mean(reference.argmax(-1) == make_phantoms(512, size=64, seed=2026,
                                                                    contrast=(0.12, 0.4)).labels))
    header = (
        f"ResNet-50 trained {epochs} epoch(s) (Adam 1e-3, batch 32) on 2000 phantoms (held-out "
        f"accuracy {accuracy:.1%}); agreement with its Keras fp32 outputs on 512 held-out "
        "phantoms, calibrated and checked on 200 others; "
        + (
            ""
            if accuracy >= 0.9
            else "below 90% held-out accuracy, not yet a clinic-like checkpoint: raise "
            "--train-steps; "
        )
    )
    return [header, *agreement_rows(model, held, calibration, 32)]


def agreement_rows(model, held, calibration, batch: int, speed: bool = False) -> list[str]:
    """Every engine/precision on ``model`` against its Keras fp32 outputs on ``held`` images:
    accepted or refused by compile_for_inference (checked on ``calibration``), top-1 agreement,
    max |delta p| and, with ``speed``, images/s at ``batch``."""
    import numpy as np

    from zoo.errors import ZooError
    from zoo.infer.engines import build_runner, fp32_split
    from zoo.infer.predictor import keras_outputs
    from zoo.infer.predictor import label as engine_label

    reference = keras_outputs(model, held)
    rows = []
    for engine, precision, ends in engine_pairs()[0]:
        name = engine_label(engine, precision, 1, ends)
        try:
            predictor = zoo_compile(model, engine, precision, batch, calibration, ends)
            run, accepted = predictor.run, "yes"
        except ZooError as e:
            accepted = f"refused ({str(e).split(': ', 1)[-1].split('. Use')[0][:90]})"
            if getattr(e, "outputs", None) is None:
                rows.append(f"| {name} | {accepted} | | | |")
                continue
            run = build_runner(engine, model, precision, batch, calibration, fp32_ends=ends)
        out = np.concatenate([run(held[i : i + batch])[0] for i in range(0, len(held), batch)])
        top1 = float(np.mean(out.argmax(-1) == reference[0].argmax(-1)))
        ips = f"{engine_throughput(run, held[:batch], batch):.0f}" if speed else ""
        delta = np.abs(out - reference[0]).max()
        rows.append(f"| {name} | {accepted} | {top1:.1%} | {delta:.4f} | {ips} |")
        print(rows[-1], flush=True)
    kept = fp32_split(model).describe()
    return [f"bf16/int8 {kept} (\"whole graph\": nothing).\n", "| engine/precision | accepted | top-1 agreement "
            "| max abs delta p | images/s |", "|---|---|---|---|---|", *rows]


def zoo_compile(model, engine, precision, batch, calibration, fp32_ends=True):
    from zoo.infer.predictor import compile_for_inference

    return compile_for_inference(
        model, engine=engine, precision=precision, batch=batch, calibration_data=calibration,
        fp32_ends=fp32_ends,
    )


def phantom_agreement_rows(batch: int) -> list[str]:
    """The shipped simple_cnn.phantom on the 200 held-out phantoms the CI test uses."""
    import zoo
    from zoo.data.synthetic import make_phantoms

    held = make_phantoms(200, size=64, seed=2026, contrast=(0.12, 0.4)).images
    rows = agreement_rows(zoo.load("simple_cnn.phantom"), held, held, batch, speed=True)
    return [
        "Shipped `simple_cnn.phantom` on the 200 held-out phantoms of tests/infer (calibrated and "
        f"checked on them, batch {batch}); ",
        *rows,
    ]


def timed_rows(label, *bench_args):
    """bench_engines' rows for one model, with its wall time printed (to size a full run)."""
    start = time.perf_counter()
    rows = bench_engines(label, *bench_args)
    print(f"[{label}: {time.perf_counter() - start:.0f} s]", flush=True)
    return rows


def engines_body(args, timm_best_by_arch, peaks=None) -> str:
    import numpy as np
    import tensorflow as tf

    import zoo
    from zoo.train.precision import cpu_flags

    pairs, skipped = engine_pairs()
    flags = [f for f in ENGINE_FLAGS if f in cpu_flags()]
    tf_threads = (tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count(),
                  tf.config.threading.get_inter_op_parallelism_threads() or "auto")
    if peaks is None:
        runs = 1 if args.quick else 3
        peaks = {"fp32": matmul_peak("float32", runs=runs), "bf16": matmul_peak("bfloat16", runs=runs)}
    rows = []
    for arch in filter(None, args.archs.split(",")):
        size = 299 if arch == "inception_v3" else 224
        x = np.random.default_rng(0).uniform(0, 255, (args.batch, size, size, 3)).astype("float32")
        rows += timed_rows(arch, lambda a=arch, s=size: zoo.load(a, num_classes=1000, input_shape=(s, s)), x,
                           args.batch, timm_best_by_arch.get(arch), peaks)
    if args.volume:
        v = args.volume
        x = np.random.default_rng(0).uniform(0, 255, (args.batch, v, v, v, 1)).astype("float32")
        rows += timed_rows(f"resnet50_3d ({v}^3)", lambda: zoo.load("resnet50_3d", in_chans=1, num_classes=2,
                                                                     input_shape=(v, v, v)), x, args.batch, None, peaks)
    if args.quick:  # the shipped 64 x 64 checkpoint: seconds, to check that the table runs
        model = zoo.load("simple_cnn.phantom")
        x = np.random.default_rng(0).uniform(0, 255, (args.batch, *model.inputs[0].shape[1:])).astype("float32")
        rows += timed_rows("simple_cnn.phantom", lambda: model, x, args.batch, None, peaks)
    target = "2x" if {"avx512_bf16", "amx_bf16"} & cpu_flags() else "1.3x"
    body = (
        f"\n\n### Inference engines (zoo.infer)\n\nCPU flags: {', '.join(flags) or 'none of ' + ', '.join(ENGINE_FLAGS)}; "
        f"{os.cpu_count()} logical CPUs; TensorFlow intra/inter-op threads {tf_threads[0]}/{tf_threads[1]}; "
        "ONNX Runtime and OpenVINO at their defaults (one thread per core, one stream; `x2 streams`: "
        "OpenVINO's NUM_STREAMS with the batch split into one lane per stream). Batch "
        f"{args.batch} images/s (best of three {WINDOW_S:.1f}-s windows), batch-1 latency (median of 20 calls), "
        "compile time (export + conversion + compilation), max |diff| against Keras fp32 on the same random images "
        "(int8 is calibrated on them), `peak`: the model's analytic FLOPs x images/s over the measured 2048^2 "
        f"matmul rate of its precision (fp32 {peaks['fp32'] / 1e9:.1f}, bf16 {peaks['bf16'] / 1e9:.1f} GFLOP/s; "
        "int8 against bf16's), and the ratio to timm's fastest path. `auto` is "
        f"`zoo.compile_for_inference(model, calibration_data=...)`'s choice. Target for auto: >= {target} timm's best "
        "on this CPU.\n\n| model | engine/precision | images/s | batch-1 ms | compile s | max abs diff | peak "
        "| vs timm best |\n|---|---|---|---|---|---|---|---|\n" + "\n".join(rows)
        + ("\n\nNot measured here: " + "; ".join(skipped) if skipped else "")
    )
    if not (args.quick or args.no_phantom):
        body += "\n\n" + "\n".join(phantom_agreement_rows(args.batch))
    if args.train_steps:
        body += "\n\n" + "\n".join(trained_agreement(args.train_steps))
    return body


def main(argv=None):
    global WINDOW_S, ONLY_ENGINES, ONLY_PRECISIONS, AUTO_ROW
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torch-python", default=os.environ.get("BENCH_TORCH_PYTHON"),
                        help="a Python with torch and timm installed (e.g. a separate venv)")
    parser.add_argument("--archs", default=",".join(ARCHS))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--window", type=float, default=WINDOW_S, help="seconds per timed window")
    parser.add_argument("--no-engines", action="store_true", help="skip the zoo.infer engine table")
    parser.add_argument("--engines-only", action="store_true", help="only the zoo.infer engine table")
    parser.add_argument("--volume", type=int, default=64, help="edge of the 3D ResNet-50's volume (0: skip)")
    parser.add_argument("--engines", default="", help="only these zoo.infer engines (comma-separated)")
    parser.add_argument("--precisions", default="", help="only these precisions (comma-separated)")
    parser.add_argument("--no-phantom", action="store_true",
                        help="skip the shipped-checkpoint agreement table (e.g. when adding backbone rows)")
    parser.add_argument("--quick", action="store_true",
                        help="seconds: the engine table for the shipped 64^2 checkpoint on TensorFlow and OpenVINO")
    parser.add_argument("--train-steps", type=int, default=0,
                        help="fine-tune a ResNet-50 on phantoms this many steps and check engine agreement on it")
    args = parser.parse_args(argv)
    if args.quick:
        args.archs, args.volume, args.engines_only, args.train_steps = "", 0, True, 0
        args.window, args.engines = min(args.window, 0.2), args.engines or ("openvino" if importlib.util.find_spec("openvino") else "tensorflow")
        args.precisions, AUTO_ROW = args.precisions or "fp32,bf16", False
    WINDOW_S = args.window
    ONLY_ENGINES = tuple(filter(None, args.engines.split(",")))
    ONLY_PRECISIONS = tuple(filter(None, args.precisions.split(",")))

    import keras
    import numpy as np
    import tensorflow as tf

    from benchmarks._report import write_section

    if args.engines_only:
        timm = {}
        if args.torch_python:
            for arch in filter(None, args.archs.split(",")):
                result = run_timm(args.torch_python, ARCHS[arch][1], 299 if arch == "inception_v3" else 224, args.batch)
                timm[arch] = max(result.values()) if result else None
        print(engines_body(args, timm))  # a partial run: printed, docs/benchmarks.md left as it is
        return
    peak32, peak16 = matmul_peak("float32"), matmul_peak("bfloat16")
    timm_best_by_arch = {}
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
        timm_best_by_arch[arch] = timm_best
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
        + ("" if args.no_engines else engines_body(args, timm_best_by_arch, {"fp32": peak32, "bf16": peak16}))
    )
    print(write_section("bench_inference", "Inference speed: zoo vs keras.applications vs timm", body))


if __name__ == "__main__":
    main()
