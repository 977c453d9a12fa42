"""``precision="fp32" | "bf16" | "fp16"``: Keras mixed-precision policies, checked per device.

Compute runs in the low precision, variables stay float32, and the classifier (the model's
output layers) stays float32 so softmax and the loss are computed in full precision. fp16
needs loss scaling (keras.optimizers.LossScaleOptimizer); bf16 has float32's exponent range
and does not.

Support rule (``device_support``): a GPU supports bf16 from compute capability 8.0 (Ampere)
and fp16 from 7.0 (Volta); a TPU supports bf16. On a CPU, TensorFlow *runs* bf16 kernels
everywhere, but without native instructions they are emulated and slower than float32, so
the zoo calls bf16 supported only where the CPU reports AVX-512 BF16 or AMX-BF16
(/proc/cpuinfo flags ``avx512_bf16`` or ``amx_bf16``), and fp16 never on a CPU. Asking for an
unsupported precision is an error rather than a silent slowdown; ``check=False`` skips it.
"""

from __future__ import annotations

import contextlib
import functools
import os

from zoo.errors import PrecisionError
from zoo.registry import Registry

POLICIES = Registry(
    "precision", {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"},
    argument="precision", show_choices=False, hint="Use 'fp32', 'bf16' or 'fp16'.",
)
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")



def check_precision(precision) -> str:
    return POLICIES.check(precision)


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags the kernel reports (empty where /proc/cpuinfo does not exist)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def onednn_caps_out_bf16() -> bool:
    """True when ONEDNN_MAX_CPU_ISA (or DNNL_MAX_CPU_ISA) caps oneDNN below AVX512_CORE_BF16.

    TensorFlow decides to send bfloat16 ops to oneDNN by its own CPU check, which ignores the cap;
    oneDNN then has no kernel for them and the op fails with a raw AbortedError.
    """
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "ALL"
    cap = cap.upper()
    onednn_on = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1").strip().lower() not in ("0", "false")
    return onednn_on and not any(isa in cap for isa in ("ALL", "BF16", "AMX", "FP16", "AVX10"))


def device_support(precision: str) -> tuple[bool, str]:
    """(supported, the device that decided it) for ``precision``, by the module docstring's rule."""
    import tensorflow as tf

    check_precision(precision)
    if precision == "fp32":
        return True, "every device"
    if tf.config.list_logical_devices("TPU"):
        return precision == "bf16", "TPU"
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        major, minor = details.get("compute_capability", (0, 0))
        need = (8, 0) if precision == "bf16" else (7, 0)
        return (major, minor) >= need, f"GPU with compute capability {major}.{minor}"
    if precision == "bf16":
        if onednn_caps_out_bf16():
            return False, "CPU (ONEDNN_MAX_CPU_ISA caps oneDNN below avx512_bf16)"
        native = sorted(set(CPU_BF16_FLAGS) & cpu_flags())
        found = "with " + ", ".join(native) if native else "no avx512_bf16/amx_bf16"
        return bool(native), f"CPU ({found})"
    return False, "CPU"


def require_support(precision: str) -> None:
    ok, device = device_support(precision)
    if not ok:
        raise PrecisionError(
            f"precision={precision!r} is not supported natively on this {device}: it would run "
            "emulated, slower than float32. Use precision='fp32' here (or 'bf16' on an AVX-512 "
            "BF16 / AMX CPU, an Ampere+ GPU or a TPU; 'fp16' on a Volta+ GPU), or pass "
            "check=False to run it anyway.")


@contextlib.contextmanager
def policy(precision: str = "fp32", check: bool = True):
    """Set the Keras global dtype policy for ``precision`` inside the block; restore it after."""
    import keras

    check_precision(precision)
    if check:
        require_support(precision)
    before = keras.config.dtype_policy()
    keras.config.set_dtype_policy(POLICIES[precision])
    try:
        yield POLICIES[precision]
    finally:
        keras.config.set_dtype_policy(before)


def _output_layer_names(model) -> set[str]:
    return set(model.output_names)


def model_config_with_policy(model, precision: str) -> dict:
    """The model's config with its float32 layers switched to ``precision``, outputs float32."""
    config = model.get_config()
    keep = _output_layer_names(model)
    target = POLICIES[precision]
    for layer in config["layers"]:
        cfg = layer["config"]
        if layer["class_name"] == "InputLayer":
            continue
        if layer["name"] in keep:
            cfg["dtype"] = "float32"
            continue
        dtype = cfg.get("dtype")
        name = dtype.get("config", {}).get("name") if isinstance(dtype, dict) else dtype
        if name in ("float32", "mixed_bfloat16", "mixed_float16", None):
            cfg["dtype"] = target
    return config


def rebuild(model, precision: str = "fp32", strategy=None, check: bool = True):
    """The same model and weights with ``precision``'s policy, variables created under ``strategy``.

    Used to train or run inference in low precision, and to move a model built outside a
    distribution strategy into one (tf.distribute variables must be created in its scope).
    """
    import keras

    check_precision(precision)
    if check:
        require_support(precision)
    config = model_config_with_policy(model, precision)
    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    with scope:
        clone = keras.Model.from_config(config)
        clone.set_weights(model.get_weights())
    for a, b in zip(model.layers, clone.layers, strict=True):
        b.trainable = a.trainable
    for attr in ("zoo_weights",):
        if hasattr(model, attr):
            setattr(clone, attr, getattr(model, attr))
    return clone


def wrap_optimizer(optimizer, precision: str):
    """fp16 needs dynamic loss scaling; the other precisions use the optimizer as is."""
    import keras

    if precision == "fp16" and not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer
