"""zoo.load build+load time against keras.applications for the same weights file, and import time.

Run: `python benchmarks/bench_load.py`. Both sides load the same legacy .h5 file (random
weights written from keras.applications, full default input size, no top); runs alternate
and the best of several is reported (the least
disturbed by other load on the machine). Target: zoo.load at most 1.2x keras.applications.
"""

from __future__ import annotations

import gc
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ARCHS = {"resnet50": "ResNet50", "densenet121": "DenseNet121", "inception_v3": "InceptionV3", "vgg16": "VGG16"}
REPEATS = 5


def _import_time(module: str, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", f"import {module}"], check=True,
                       env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    import h5py
    import keras
    from keras.src.legacy.saving import legacy_h5_format

    import zoo
    from benchmarks._report import write_section

    home = tempfile.mkdtemp()
    os.environ["ZOO_HOME"] = home
    (Path(home) / "cards").mkdir()
    rows = []
    for arch, app in ARCHS.items():
        size = 299 if arch == "inception_v3" else 224
        path = Path(home) / f"{arch}.h5"
        with h5py.File(path, "w") as f:
            legacy_h5_format.save_weights_to_hdf5_group(f, getattr(keras.applications, app)(weights=None, include_top=False))
        import hashlib

        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        mode = zoo.model_info(arch)["preprocess"]
        (Path(home) / "cards" / f"{arch}.toml").write_text(
            f'[{arch}.bench]\nurls = ["{path}"]\nsha256 = "{digest}"\nformat = "keras-legacy-h5"\n'
            f'input_size = [{size}, {size}, 3]\npreprocess = "{mode}"\nlicense = "x"\nsource = "bench"\n')
        zoo.fetch(f"{arch}.bench")  # first verification (hashing) happens once, like Keras' cache
        k_times, z_times = [], []
        for _ in range(REPEATS):
            for build, times in ((lambda a=app, p=path: getattr(keras.applications, a)(weights=str(p), include_top=False), k_times),
                                 (lambda a=arch: zoo.load(a, pretrained="bench", num_classes=0, pooling=None), z_times)):
                keras.backend.clear_session()  # both sides start from the same empty session and heap
                gc.collect()
                t = time.perf_counter()
                build()
                times.append(time.perf_counter() - t)
        k, z = min(k_times), min(z_times)
        rows.append(f"| {arch} | {size} | {k:.2f} | {z:.2f} | {z / k:.2f}x |")
        print(rows[-1], flush=True)
    tz, tk = _import_time("zoo"), _import_time("keras")
    body = (
        f"Best of {REPEATS} alternating runs, each from a cleared Keras session; both load the same legacy `.h5` (random weights, no top).\n\n"
        "| model | input | keras.applications (s) | zoo.load (s) | ratio (target <= 1.2x) |\n|---|---|---|---|---|\n"
        + "\n".join(rows)
        + f"\n\nImport time (fresh interpreter, median of 5): `import zoo` {tz:.2f} s, `import keras` {tk:.2f} s "
        f"(ratio {tz / tk:.2f}x; `import zoo` does not import TensorFlow)."
    )
    print(write_section("bench_load", "zoo.load against keras.applications", body))


if __name__ == "__main__":
    main()
