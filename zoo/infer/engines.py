"""Inference engines: one Keras model -> a function from a float32 batch to its outputs.

Each engine turns the model as built (preprocessing inside, so it takes raw pixels) into a
runner ``run(x) -> [outputs...]`` for one precision:

- ``tensorflow``: ``tf.function`` over the model (fp32), or the model rebuilt under Keras'
  ``mixed_bfloat16`` policy (bf16, only where the device runs bf16 natively). No int8 path.
- ``onnxruntime``: the model exported through tf2onnx (``zoo.export(format="onnx")``); int8 is
  onnxruntime's static post-training quantization (QDQ, per-channel weights) calibrated on the
  caller's ``calibration_data``. No bf16 path (onnxruntime's CPU kernels have no bf16 convolutions).
- ``openvino``: the model exported as OpenVINO IR (``zoo.export(format="openvino")``), compiled
  with ``INFERENCE_PRECISION_HINT`` f32 or bf16 (bf16 only on a CPU with avx512_bf16/AMX); int8
  compiles the same QDQ model onnxruntime's quantizer writes (OpenVINO runs QDQ graphs as int8).

Engines are registered in ``ENGINES``; an engine whose package is missing says which extra to
install. This module knows nothing of agreement checks or engine choice: see ``predictor``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zoo.errors import InvalidArgumentError, OptionalDependencyError, PrecisionError
from zoo.registry import Registry

PRECISIONS = ("fp32", "bf16", "int8")
CALIBRATION_SAMPLES = 128  # int8 ranges are calibrated on at most this many inputs

Runner = Callable[[np.ndarray], list]


@dataclass(frozen=True)
class Engine:
    """An inference engine: its package, the precisions it runs, and how it builds a runner."""

    name: str
    package: str | None  # the import that must work (None: always there)
    extra: str  # the pip requirement that installs it
    precisions: tuple[str, ...]
    build: Callable  # (model, precision, batch, calibration_data, workdir) -> Runner

    def missing(self) -> str | None:
        """Why this engine cannot run here (a missing package), or None when it can."""
        if self.package is None:
            return None
        import importlib

        try:
            importlib.import_module(self.package)
        except ImportError as e:
            return f'{self.package} is not installed ({e}); `pip install "{self.extra}"`'
        return None

    def require(self, precision: str) -> None:
        reason = self.missing()
        if reason:
            raise OptionalDependencyError(
                f"engine={self.name!r}: {reason}, or use engine='tensorflow'."
            )
        if precision not in self.precisions:
            others = [e.name for e in ENGINES.values() if precision in e.precisions]
            raise InvalidArgumentError(
                f"engine={self.name!r} has no {precision} path (it runs "
                f"{', '.join(self.precisions)}); use "
                f"precision={self.precisions[0]!r} or an engine that runs {precision}: "
                f"{', '.join(others)}."
            )


def _outputs(result) -> list:
    if isinstance(result, dict):
        return [np.asarray(v) for v in result.values()]
    if isinstance(result, list | tuple):
        return [np.asarray(v) for v in result]
    return [np.asarray(result)]


def native_bf16() -> tuple[bool, str]:
    """(native bf16 here?, the device that decided) by zoo.train.precision's rule."""
    from zoo.train.precision import device_support

    return device_support("bf16")


def _require_native_bf16(engine: str) -> None:
    ok, device = native_bf16()
    if not ok:
        raise PrecisionError(
            f"engine={engine!r}, precision='bf16': this {device} has no native bf16, so bf16 "
            "would run emulated, slower than fp32. Use precision='fp32' (or 'int8' with "
            "calibration_data on engine='onnxruntime' / 'openvino')."
        )


# --- tensorflow --------------------------------------------------------------------------------


def _build_tensorflow(model, precision, batch, calibration_data, workdir) -> Runner:
    import tensorflow as tf

    if precision == "bf16":
        from zoo.train.precision import rebuild

        _require_native_bf16("tensorflow")
        model = rebuild(model, "bf16", check=False)
    spec = tf.TensorSpec((None, *model.inputs[0].shape[1:]), tf.float32)
    fn = tf.function(
        lambda v: model(v, training=False), input_signature=[spec], reduce_retracing=True
    )

    def run(x):
        return [np.asarray(o, np.float32) for o in _outputs(fn(tf.constant(x)))]

    return run


# --- onnxruntime -------------------------------------------------------------------------------


def _export(model, path: Path, fmt: str) -> Path:
    from zoo.export import export

    return export(model, path, format=fmt)


class _Calibration:
    """onnxruntime's calibration reader: the first CALIBRATION_SAMPLES inputs, 8 at a time."""

    def __init__(self, name: str, data: np.ndarray):
        self.batches = iter(
            [{name: data[i : i + 8]} for i in range(0, min(len(data), CALIBRATION_SAMPLES), 8)]
        )

    def get_next(self):
        return next(self.batches, None)


def need_calibration(precision: str, calibration_data) -> None:
    """A reduced precision is calibrated and checked on the caller's data: refuse it without."""
    if calibration_data is None:
        raise InvalidArgumentError(
            f"precision={precision!r} needs calibration_data: a few hundred typical inputs, as "
            "the model takes them, to calibrate int8 ranges and to check agreement with the "
            "fp32 Keras model; or use "
            "precision='fp32'."
        )


def quantize_onnx(onnx_path: Path, calibration_data, out: Path) -> Path:
    """Static int8 quantization (QDQ, per-channel int8 weights, int8 activations) of ONNX."""
    try:
        from onnxruntime.quantization import (
            CalibrationDataReader,
            QuantFormat,
            QuantType,
            quantize_static,
        )
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as e:
        raise OptionalDependencyError(
            f"precision='int8' quantizes with onnxruntime.quantization ({e}): "
            "`pip install \"medzoo[onnx]\"`, or use precision='fp32'."
        ) from None
    need_calibration("int8", calibration_data)
    prepared = out.with_name(out.stem + "_prep.onnx")
    quant_pre_process(str(onnx_path), str(prepared))

    class Reader(_Calibration, CalibrationDataReader):
        pass

    quantize_static(
        str(prepared),
        str(out),
        Reader("image", np.asarray(calibration_data, np.float32)),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
    )
    return out


def _build_onnxruntime(model, precision, batch, calibration_data, workdir) -> Runner:
    import onnxruntime as ort

    path = _export(model, workdir / "model.onnx", "onnx")
    if precision == "int8":
        path = quantize_onnx(path, calibration_data, workdir / "model_int8.onnx")
    providers = [
        p
        for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
        if p in ort.get_available_providers()
    ]
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=providers)
    name = session.get_inputs()[0].name

    def run(x):
        return [np.asarray(o, np.float32) for o in session.run(None, {name: x})]

    return run


# --- openvino ----------------------------------------------------------------------------------


def _build_openvino(model, precision, batch, calibration_data, workdir) -> Runner:
    import openvino as ov

    from zoo.export import OPENVINO_XML

    core = ov.Core()
    if precision == "int8":  # OpenVINO runs onnxruntime's QDQ graph with int8 kernels
        onnx_path = _export(model, workdir / "model.onnx", "onnx")
        graph = core.read_model(
            str(quantize_onnx(onnx_path, calibration_data, workdir / "model_int8.onnx"))
        )
    else:
        graph = core.read_model(
            str(_export(model, workdir / "openvino", "openvino") / OPENVINO_XML)
        )
    if precision == "bf16":
        _require_native_bf16("openvino")
    shape = list(model.inputs[0].shape[1:])
    if None not in shape:  # a static batch lets OpenVINO plan every buffer once
        graph.reshape({graph.inputs[0].get_any_name(): [batch, *shape]})
    hint = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}[precision]  # int8: the QDQ nodes decide
    compiled = core.compile_model(graph, "CPU", {"INFERENCE_PRECISION_HINT": hint})
    request = compiled.create_infer_request()
    static = None not in shape

    def run(x):
        n = len(x)
        if static and n != batch:  # pad the last chunk to the compiled batch
            x = np.concatenate([x, np.zeros((batch - n, *x.shape[1:]), x.dtype)])
        result = request.infer({0: x})
        return [np.array(result[o], np.float32)[:n] for o in compiled.outputs]

    return run


ENGINES = Registry(
    "inference engine",
    {
        "tensorflow": Engine("tensorflow", None, "tensorflow", ("fp32", "bf16"), _build_tensorflow),
        "onnxruntime": Engine(
            "onnxruntime", "onnxruntime", "medzoo[onnx]", ("fp32", "int8"), _build_onnxruntime
        ),
        "openvino": Engine(
            "openvino", "openvino", "medzoo[openvino]", ("fp32", "bf16", "int8"), _build_openvino
        ),
    },
    argument="engine",
    hint="Use 'auto' to pick the fastest one installed.",
)


def build_runner(engine: str, model, precision: str, batch: int, calibration_data=None) -> Runner:
    """A runner of ``model`` on ``engine`` at ``precision`` (files in a temporary folder)."""
    spec = ENGINES.get(engine)
    spec.require(precision)
    if precision != "fp32":
        need_calibration(precision, calibration_data)
    with tempfile.TemporaryDirectory(
        prefix="zoo-infer-"
    ) as tmp:  # engines hold their graphs in memory
        return spec.build(model, precision, batch, calibration_data, Path(tmp))
