"""GPU readiness in one run (< 5 minutes on a GPU machine): the paths CI can only test with faked devices.

Run: `python benchmarks/gpu_check.py [--no-report]` on a machine with GPUs. Where TensorFlow sees
no GPU it says so and exits 0 without touching docs/benchmarks.md.

Checks, each a row (status, number, note) of a table written to docs/benchmarks.md (section gpu_check):

1. the engine's training step (ResNet-50, 128 px, batch 32, SGD) on one GPU in fp32, bf16 and
   fp16 with dynamic loss scaling: images/s, finite losses, the fp16 loss scale in use;
2. MirroredStrategy over all visible GPUs against one GPU (images/s at the same per-GPU batch);
3. TF32 on and off: a 4096^2 float32 matmul's TFLOP/s and its error against float64;
4. a SavedModel export (``zoo.export``) and reload: the reloaded outputs against Keras;
5. the inference engines (``zoo.compile_for_inference``) on the GPU: images/s and agreement.

A check that fails is reported as FAIL with its error (the others still run); the exit code is
the number of failed checks.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SIZE, BATCH, STEPS = 128, 32, 10


def gpus() -> list:
    import tensorflow as tf

    return tf.config.list_physical_devices("GPU")


def _rate(engine, x, y, steps: int) -> tuple[float, float]:
    """(images/s over ``steps`` steps after a warm-up, last loss)."""
    import tensorflow as tf

    batch = tf.data.Dataset.from_tensors((x, y)).cache()
    engine.fit(batch.repeat(2), epochs=1)
    engine.epoch, engine.history = 0, []
    start = time.perf_counter()
    history = engine.fit(batch.repeat(steps), epochs=1)
    return steps * len(x) * engine.replicas / (time.perf_counter() - start), history[-1]["loss"]


def _engine(precision: str, strategy, per_replica: int):
    import keras
    import numpy as np

    import zoo
    from zoo.train.engine import Engine
    from zoo.train.precision import policy, wrap_optimizer
    from zoo.train.tasks import Classification

    with policy(precision, check=False), strategy.scope():
        keras.utils.set_random_seed(0)
        model = zoo.load("resnet50", num_classes=10, input_shape=(SIZE, SIZE))
        optimizer = wrap_optimizer(keras.optimizers.SGD(0.01, momentum=0.9), precision)
    engine = Engine(Classification(model), optimizer, strategy)
    rng = np.random.default_rng(0)
    n = per_replica * engine.replicas
    x = rng.uniform(0, 255, (n, SIZE, SIZE, 3)).astype("float32")
    y = rng.integers(0, 10, n).astype("int32")
    return engine, optimizer, x, y


def check_precisions(rows: list) -> None:
    import numpy as np
    import tensorflow as tf

    one = tf.distribute.OneDeviceStrategy("/gpu:0")
    for precision in ("fp32", "bf16", "fp16"):
        engine, optimizer, x, y = _engine(precision, one, BATCH)
        rate, loss = _rate(engine, x, y, STEPS)
        ok = bool(np.isfinite(loss))
        note = f"loss {loss:.4f}"
        if precision == "fp16":
            scale = float(optimizer.dynamic_scale.numpy())
            ok = ok and isinstance(optimizer, __import__("keras").optimizers.LossScaleOptimizer)
            note += f", loss scale {scale:g}"
        rows.append((f"engine step, ResNet-50 {SIZE}px batch {BATCH}, {precision}", ok, f"{rate:.1f} images/s", note))


def check_mirrored(rows: list) -> None:
    import tensorflow as tf

    devices = [f"/gpu:{i}" for i in range(len(gpus()))]
    one, _, x, y = _engine("fp32", tf.distribute.OneDeviceStrategy(devices[0]), BATCH)
    single = _rate(one, x, y, STEPS)[0]
    if len(devices) == 1:
        rows.append(("MirroredStrategy vs one GPU", True, f"{single:.1f} images/s", "one GPU visible: nothing to mirror"))
        return
    many, _, x, y = _engine("fp32", tf.distribute.MirroredStrategy(devices), BATCH)
    mirrored = _rate(many, x, y, STEPS)[0]
    rows.append((f"MirroredStrategy over {len(devices)} GPUs vs one", mirrored > single,
                 f"{mirrored:.1f} vs {single:.1f} images/s", f"{mirrored / single:.2f}x with {len(devices)} GPUs"))


def check_tf32(rows: list) -> None:
    import numpy as np
    import tensorflow as tf

    n = 4096
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n)).astype("float32"), rng.standard_normal((n, n)).astype("float32")
    exact = a[:256].astype(np.float64) @ b.astype(np.float64)
    was = tf.config.experimental.tensor_float_32_execution_enabled()
    try:
        for enabled in (False, True):
            tf.config.experimental.enable_tensor_float_32_execution(enabled)
            with tf.device("/gpu:0"):
                ta, tb = tf.constant(a), tf.constant(b)
                tf.matmul(ta, tb).numpy()
                start = time.perf_counter()
                for _ in range(10):
                    out = tf.matmul(ta, tb)
                out.numpy()
                seconds = (time.perf_counter() - start) / 10
            err = float(np.abs(out.numpy()[:256] - exact).max() / np.abs(exact).max())
            rows.append((f"TF32 {'on' if enabled else 'off'}: float32 matmul {n}^2", True,
                         f"{2 * n ** 3 / seconds / 1e12:.1f} TFLOP/s", f"max rel. error vs float64 {err:.1e}"))
    finally:
        tf.config.experimental.enable_tensor_float_32_execution(was)


def _small_model():
    import keras

    import zoo

    keras.utils.set_random_seed(0)
    return zoo.load("resnet50", num_classes=10, input_shape=(SIZE, SIZE))


def check_savedmodel(rows: list) -> None:
    import numpy as np
    import tensorflow as tf

    import zoo

    model = _small_model()
    x = np.random.default_rng(1).uniform(0, 255, (4, SIZE, SIZE, 3)).astype("float32")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "resnet50_savedmodel"
        zoo.export(model, path, "saved_model")
        loaded = tf.saved_model.load(str(path))
        fn = loaded.signatures["serving_default"]
        with tf.device("/gpu:0"):
            out = list(fn(tf.constant(x)).values())[0].numpy()
    ref = model(x, training=False).numpy()
    diff = float(np.abs(out - ref).max())
    rows.append(("SavedModel export + reload on GPU", diff < 1e-3, f"max |diff| {diff:.2e}", "zoo.export(..., 'saved_model')"))


def check_inference(rows: list) -> None:
    import numpy as np

    import zoo
    from zoo.infer.engines import ENGINES

    model = _small_model()
    data = np.random.default_rng(2).uniform(0, 255, (64, SIZE, SIZE, 3)).astype("float32")
    for name, engine in ENGINES.items():
        reason = engine.missing()
        if reason:
            rows.append((f"inference engine {name}", True, "not installed", reason))
            continue
        for precision in ("fp32", "bf16"):
            if precision not in engine.precisions:
                continue
            try:
                predictor = zoo.compile_for_inference(model, engine=name, precision=precision, batch=BATCH,
                                                      calibration_data=data)
                predictor(data[:BATCH])
                start = time.perf_counter()
                for _ in range(5):
                    predictor(data[:BATCH])
                rate = 5 * BATCH / (time.perf_counter() - start)
                rows.append((f"inference {name}/{precision}", True, f"{rate:.1f} images/s",
                             f"agreement {predictor.agreement}"))
            except Exception as err:  # noqa: BLE001 (reported in the table)
                rows.append((f"inference {name}/{precision}", False, "error", f"{type(err).__name__}: {err}"[:160]))


CHECKS = (check_precisions, check_mirrored, check_tf32, check_savedmodel, check_inference)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-report", action="store_true", help="print the table only")
    args = parser.parse_args(argv)
    found = gpus()
    if not found:
        print("gpu_check: no GPU is visible to TensorFlow on this machine; nothing to check "
              "(run it where `tf.config.list_physical_devices('GPU')` lists one).")
        return 0
    import tensorflow as tf

    for gpu in found:
        tf.config.experimental.set_memory_growth(gpu, True)
    rows: list[tuple[str, bool, str, str]] = []
    started = time.perf_counter()
    for check in CHECKS:
        try:
            check(rows)
        except Exception as err:  # noqa: BLE001 (a failed check is a row; the others still run)
            traceback.print_exc()
            rows.append((check.__name__, False, "error", f"{type(err).__name__}: {err}"[:160]))
        for row in rows[-3:]:
            print(row, flush=True)
    failed = sum(not ok for _, ok, _, _ in rows)
    details = tf.config.experimental.get_device_details(found[0])
    body = (f"{len(found)} GPU(s): {details.get('device_name', '?')} (compute capability "
            f"{details.get('compute_capability', '?')}); TensorFlow {tf.__version__}; "
            f"{time.perf_counter() - started:.0f} s in all.\n\n| check | status | result | note |\n|---|---|---|---|\n"
            + "\n".join(f"| {name} | {'ok' if ok else 'FAIL'} | {value} | {note} |" for name, ok, value, note in rows))
    print(body)
    if not args.no_report:
        from benchmarks._report import write_section

        print(f"wrote {write_section('gpu_check', 'GPU readiness', body)}")
    return failed


if __name__ == "__main__":
    sys.exit(main())
