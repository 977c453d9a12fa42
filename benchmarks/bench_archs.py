"""Forward speed of the new 2D architectures against named baselines, side by side in one run.

Run: `python benchmarks/bench_archs.py` (needs torch for the first table).
1. zoo AlexNet / GoogLeNet (Keras, converted weights) against the same networks in PyTorch
   (torchvision's layout, tests/models/torchvision_modules.py), same weights, same threads.
2. U-Net up-sampling: the zoo's separable LinearUpsampling (one layer for 2D and 3D) against
   Keras' own UpSampling2D(interpolation="bilinear") in an otherwise identical U-Net.
Median of alternating timed runs after a warm-up; images per second, batch 8.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "models")]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPEATS, BATCH = 5, 8


def _rate(fn, n) -> float:
    t = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t)


def _alternate(a, b, n):
    a(), b()  # warm-up (graph tracing, allocation)
    ra, rb = [], []
    for _ in range(REPEATS):
        ra.append(_rate(a, n))
        rb.append(_rate(b, n))
    return statistics.median(ra), statistics.median(rb)


def _keras_call(model, x):
    import tensorflow as tf

    run, xs = tf.function(lambda v: model(v, training=False)), tf.constant(x)
    return lambda: run(xs).numpy()


def _torch_call(net, x):
    import torch

    xt = torch.from_numpy(x).float()

    def call():
        with torch.inference_mode():
            net(xt)

    return call


def torch_rows():
    import numpy as np
    import torch
    from torchvision_modules import AlexNet, GoogLeNet, randomise

    import zoo
    from zoo.weights.convert_torch import convert_state_dict

    torch.set_num_threads(os.cpu_count())  # TensorFlow uses every core by default too
    rows = []
    for arch, net in (("alexnet", AlexNet()), ("googlenet", GoogLeNet(aux_logits=False))):
        net = randomise(net)
        model = zoo.load(arch, include_top=True, classifier_activation=None)  # the 1000-class top, no weights
        convert_state_dict(model, {k: v.numpy() for k, v in net.state_dict().items()})
        x = np.random.default_rng(0).uniform(0, 255, (BATCH, 224, 224, 3)).astype("float32")
        keras_fwd, torch_fwd = _keras_call(model, x), _torch_call(net, x.transpose(0, 3, 1, 2) / 255.0)
        k, t = _alternate(keras_fwd, torch_fwd, BATCH)
        rows.append(f"| {arch} | 224 | {t:.1f} | {k:.1f} | {k / t:.2f}x |")
        print(rows[-1], flush=True)
    return rows


def upsampling_rows():
    import keras
    import numpy as np

    from zoo.layers.resample import LinearUpsampling

    rows = []
    for size in (128, 256):
        x = np.random.default_rng(0).uniform(0, 1, (BATCH, size // 8, size // 8, 32)).astype("float32")
        models = []
        for layer in (LinearUpsampling, lambda name: keras.layers.UpSampling2D(2, interpolation="bilinear", name=name)):
            inp = keras.Input((size // 8, size // 8, 32))
            y = inp
            for i in range(3):  # a decoder's three x2 steps on a 32-channel map
                y = keras.layers.Conv2D(32, 3, padding="same", name=f"c{i}")(layer(name=f"up{i}")(y))
            models.append(keras.Model(inp, y))
        models[1].set_weights(models[0].get_weights())
        ours, theirs = (_keras_call(m, x) for m in models)
        np.testing.assert_allclose(ours(), theirs(), rtol=1e-4, atol=1e-5)  # the same interpolation
        ra, rb = _alternate(ours, theirs, BATCH)
        rows.append(f"| {size // 8} -> {size} | {rb:.1f} | {ra:.1f} | {ra / rb:.2f}x |")
        print(rows[-1], flush=True)
    return rows


def main():
    from benchmarks._report import write_section

    body = []
    try:
        import torch  # noqa: F401

        rows = torch_rows()
        body += ["Forward pass, same random weights converted from the torch module; batch "
                 f"{BATCH}, CPU, median of {REPEATS} alternating runs.\n",
                 "| model | input | PyTorch (img/s) | zoo Keras (img/s) | ratio (Keras / PyTorch) |",
                 "|---|---|---|---|---|", *rows, ""]
    except ImportError:
        body.append("PyTorch is not installed: the torch comparison was not run.\n")
    rows = upsampling_rows()
    body += ["Three x2 up-sampling + 3x3 conv steps on a 32-channel map (a U-Net decoder), batch "
             f"{BATCH}; baseline Keras' UpSampling2D(interpolation='bilinear').\n",
             "| steps | Keras bilinear (img/s) | zoo LinearUpsampling (img/s) | ratio |", "|---|---|---|---|", *rows]
    print(write_section("bench_archs", "New architectures: speed against named baselines", "\n".join(body)))


if __name__ == "__main__":
    main()
