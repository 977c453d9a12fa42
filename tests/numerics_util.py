"""One comparison for deep-network outputs, with tolerances from float32 error analysis.

Why not a fixed ``rtol``/``atol``: two correct float32 computations of the same network (another
oneDNN kernel on AVX-512/AMX than on AVX2, TensorFlow against torch, a graph rebuilt from a
.keras file) sum in other orders, so they differ by rounding, and the difference grows with depth.
A tolerance tuned on one CPU fails on another (issue 11: vgg16, 1.0e-6 against 7.9e-7).

Error model. float32 has eps = 2**-23 = 1.19e-7. One layer computes dot products of length K
(3x3x512 = 4608 in a VGG conv); summing them in another order changes each by about
eps * sqrt(K) * (the sum of |terms|) for random-walk rounding, which for ReLU/BatchNorm networks
is a few ulps of the layer's largest output. Those relative perturbations pass through the
following layers at gain about one and accumulate over the network's depth L (the longest chain of
weighted layers; by convention the number in the name: vgg16 16, resnet50 50, densenet121 121,
inception_v3 48, googlenet 22, alexnet 8). The worst element adds them up (linear in L); the
norm, a sum over many elements with independent rounding, grows like a random walk (sqrt L):

    max |a - b| / max |b|  <=  ELEMENT * L * eps                      (ELEMENT = 8 ulps per layer)
    ||a - b|| / ||b||      <=  NORM * sqrt(max(1, L / 16))            (NORM = 1e-5, ~84 eps)

The elementwise bound is relative to the output's largest |value|, not to each element: small
outputs come out of cancelling sums and carry the absolute error of the large ones.

Measured (marker ``numerics``, all comparisons, on an AVX-512/AVX512_BF16 CPU under default
settings, TF_ENABLE_ONEDNN_OPTS=0 and ONEDNN_MAX_CPU_ISA=AVX2): the worst is vgg16 inflated to
3D against 2D under AVX2, 0.23 of the norm bound and 0.19 of the elementwise one; the issue's
AVX-512/AMX failure (vgg16, |diff| 1.0e-6 at max |b| 0.4) is 0.17 of the elementwise bound.

What must still fail: a wrong weight, a wrong preprocessing mode (caffe against torch), a
transposed kernel or a BatchNorm left out changes outputs by 1e-2 to 1 of their scale. The
loosest bounds used here (densenet201: 1.9e-4 elementwise, 3.5e-5 in norm) stay 50-300x below
1e-2, the usual ones (depth <= 50) 100-1000x; the parity tests check that a wrong preprocessing
mode fails by a factor of thousands at least (test_imagenet_backbones).

Reduced precision (``eps=BF16_EPS``: mixed_bfloat16, float32 variables and accumulation): the
rounding is of each layer's inputs, about one bf16 ulp of relative error per layer and no sqrt(K)
growth, so the bounds are L * eps elementwise and sqrt(L) * eps in norm.

Set NUMERICS_LOG=/some/file.jsonl to append each comparison's observed/allowed ratios there
(for measuring on a new CPU; off by default).
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

FLOAT32_EPS = float(np.finfo(np.float32).eps)  # 1.19e-7
BF16_EPS = 2.0**-7  # 7 stored mantissa bits
ELEMENT = 8.0  # ulps of the output's scale per layer, elementwise (float32)
NORM = 1e-5  # relative-norm bound up to depth 16 (float32)

# depth (longest chain of weighted layers) by architecture; the number in its name if it has one
DEPTH = {
    "alexnet": 8,
    "googlenet": 22,
    "inception_v3": 48,
    "vgg16": 16,
    "vgg19": 19,
    "resnet50": 50,
    "resnet101": 101,
    "resnet152": 152,
    "densenet121": 121,
    "densenet169": 169,
    "densenet201": 201,
    "simple_cnn": 11,
    "unet": 12,
    "unet3d": 12,
    "dilated_cnn": 10,
    "patch_cnn29": 5,
    "multiscale_patch_cnn": 5,
    "triplanar_cnn": 5,
}


def depth_of(arch: str, model=None) -> int:
    """Depth of a registered architecture (``resnet50_3d`` has its 2D parent's).

    An architecture not in DEPTH (one registered after this table was written) takes the count
    of ``model``'s layers with a kernel: an upper bound on its longest chain, so a looser but
    still safe tolerance, and a new model needs no entry here to be tested.
    """
    if arch.removesuffix("_3d") in DEPTH or model is None:
        return DEPTH[arch.removesuffix("_3d")]
    from zoo._keras_compat import all_layers

    weighted = [layer for layer in all_layers(model) if getattr(layer, "kernel", None) is not None]
    return max(1, len(weighted))


def tolerances(depth: int, eps: float = FLOAT32_EPS) -> tuple[float, float]:
    """(relative-norm bound, elementwise bound as a fraction of max |desired|) at ``depth``."""
    depth = max(int(depth), 1)
    if eps <= FLOAT32_EPS:  # float32 throughout: summation order, sqrt(K) ulps per layer
        return NORM * math.sqrt(max(1.0, depth / 16)), ELEMENT * depth * eps
    return math.sqrt(depth) * eps, depth * eps  # reduced-precision inputs, float32 accumulation


def _pairs(actual, desired):
    if isinstance(desired, dict):
        assert set(actual) == set(desired), (sorted(actual), sorted(desired))
        return [(str(k), actual[k], desired[k]) for k in sorted(desired)]
    if isinstance(desired, list | tuple):
        assert len(actual) == len(desired)
        return [(str(i), a, d) for i, (a, d) in enumerate(zip(actual, desired))]
    return [("", actual, desired)]


def assert_deep_close(
    actual, desired, depth: int, *, eps: float = FLOAT32_EPS, what: str = ""
) -> float:
    """Assert two outputs of a ``depth``-layer network agree to float32 rounding (see module doc).

    ``actual``/``desired`` may be arrays, tensors, or lists/dicts of them (multi-output models).
    Returns the worst observed/allowed ratio (< 1 passes), for reporting margins.
    """
    norm_tol, elem_tol = tolerances(depth, eps)
    worst = 0.0
    for key, a, d in _pairs(actual, desired):
        a, d = np.asarray(a, np.float64), np.asarray(d, np.float64)
        assert a.shape == d.shape, f"{what}{key}: shape {a.shape} != {d.shape}"
        assert np.all(np.isfinite(a)) and np.all(np.isfinite(d)), f"{what}{key}: non-finite values"
        diff = np.abs(a - d)
        scale = float(np.abs(d).max()) if d.size else 0.0
        ref_norm = float(np.linalg.norm(d))
        max_diff = float(diff.max()) if d.size else 0.0
        rel_norm = (
            float(np.linalg.norm(a - d)) / ref_norm if ref_norm else float(np.linalg.norm(a - d))
        )
        elem = max_diff / scale if scale else max_diff
        ratios = (rel_norm / norm_tol, elem / elem_tol)
        worst = max(worst, *ratios)
        if os.environ.get("NUMERICS_LOG"):
            with open(os.environ["NUMERICS_LOG"], "a") as f:
                f.write(
                    json.dumps(
                        {
                            "test": os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0],
                            "what": f"{what}{key}",
                            "depth": depth,
                            "eps": eps,
                            "rel_norm": rel_norm,
                            "elem": elem,
                            "norm_ratio": ratios[0],
                            "elem_ratio": ratios[1],
                        }
                    )
                    + "\n"
                )
        assert rel_norm <= norm_tol and elem <= elem_tol, (
            f"{what}{key}: ||a-b||/||b|| = {rel_norm:.3g} (allowed {norm_tol:.3g}), "
            f"max|a-b|/max|b| = {elem:.3g} (allowed {elem_tol:.3g}, depth {depth}, "
            f"eps {eps:.3g}); max|b| = {scale:.3g}"
        )
    return worst
