"""Inference engines: one Keras model -> a function from a float32 batch to its outputs.

Each engine turns the model as built (preprocessing inside, so it takes raw pixels) into a
runner ``run(x) -> [outputs...]`` for one precision:

- ``tensorflow``: ``tf.function`` over the model (fp32), or the model rebuilt under Keras'
  ``mixed_bfloat16`` policy with the stem and head float32 (bf16, only where the device runs
  bf16 natively). No int8 path.
- ``onnxruntime``: the model exported through tf2onnx (``zoo.export(format="onnx")``); int8 is
  onnxruntime's static post-training quantization (QDQ, per-channel weights) calibrated on the
  caller's ``calibration_data``. No bf16 path (onnxruntime's CPU kernels have no bf16 convolutions).
- ``openvino``: the model exported as OpenVINO IR (``zoo.export(format="openvino")``), compiled
  with ``INFERENCE_PRECISION_HINT`` f32 or bf16 (bf16 only on a CPU with avx512_bf16/AMX); int8
  compiles the same QDQ model onnxruntime's quantizer writes (OpenVINO runs QDQ graphs as int8).

Reduced precision keeps the precision-sensitive ends of the network in fp32 (``fp32_split``,
the one place that decides it): the *stem* (the raw-pixel input, the preprocessing inside the
model and every layer up to and including the first one that downsamples, e.g. the first pooling
or strided convolution) and the *head* (from the first layer without spatial axes, e.g. global
pooling, to the outputs). Raw pixel values (0..255, HU) rounded to bf16's 8-bit mantissa lose
more than any later layer does (measured per layer on the shipped ``simple_cnn.phantom``
checkpoint: preprocessing alone in bf16 moves p by 0.049, any single later layer by <= 0.015),
and the full-resolution layers feed every later error. On that checkpoint and its 200 held-out
phantoms this takes bf16's max |delta p| from 0.052 to 0.019 (TensorFlow) and from 0.033 to
0.015 (OpenVINO), inside the 0.02 target. TensorFlow keeps those layers float32 under the mixed
policy; onnxruntime and OpenVINO run the stem and head as fp32 sub-models around a
reduced-precision body (OpenVINO's CPU plugin re-creates the nodes it fuses and drops per-node
keep-precision runtime info on them, so the cut is made in the graph itself; marking the stem and
head ``disable_fp16_compression`` in the IR was tried on OpenVINO 2026.4 and its runtime model
still ran them in bf16). int8 gains too
(max |delta p| 0.14-0.16 -> 0.06) but still misses there: per-channel int8 weights alone move
that checkpoint's p by 0.04 and any one int8 convolution by 0.02-0.07, so the predictor refuses
int8 for it; models with flatter logits may pass. NNCF's post-training quantization does no
better there (max |delta p| 0.088-0.104 with or without its bias correction and mixed preset),
and its ``quantize_with_accuracy_control`` at a 0.015 budget reverts every int8 layer: no layer
of that checkpoint can be int8 within the target, so NNCF is not a dependency.

The cut has a price, and it is not always needed. On an AMX CPU OpenVINO runs ResNet-50's whole
graph in bf16 at about twice the images/s of the cut one (228 vs 121 at batch 8: the fp32 7x7
stem convolution and the copies between the three graphs cost as much as the bf16 body), and on
a ResNet-50 trained on phantoms the whole bf16 graph agreed better (max |delta p| 0.015) than
the cut one (0.028); on ``simple_cnn.phantom`` only the cut passes (0.035 whole). So
``fp32_ends=False`` builds the whole graph in bf16, and ``engine="auto"`` tries both and keeps
the fastest that agrees on the caller's data. int8 always keeps its ends.

Streams: OpenVINO can run a batch as ``streams`` parallel lanes (``NUM_STREAMS``, the CPU's
cores shared out among them, one infer request per lane, each lane a slice of the batch run from
its own thread; OpenVINO releases the GIL while it infers). On few cores fewer threads per
layer synchronise less, but each lane's slice is smaller; which wins depends on the model and
the CPU, so ``engine="auto"`` measures both (see ``predictor``). TensorFlow and ONNX Runtime run
one lane with every core.

Engines are registered in ``ENGINES``; an engine whose package is missing says which extra to
install. This module knows nothing of agreement checks or engine choice: see ``predictor``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
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
    build: Callable  # (model, precision, batch, data, workdir, streams[, fp32_ends]) -> Runner
    streams: bool = False  # runs a batch as parallel lanes (see the module docstring)
    static_batch: bool = False  # compiled for one batch size (a batch-1 runner is a new build)

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


# --- the layers that stay fp32 ---------------------------------------------------------------


@dataclass(frozen=True)
class Fp32Split:
    """A model cut into an fp32 stem, a reduced-precision body and an fp32 head (see module doc).

    ``stem_end`` / ``head_start`` name the layer whose output ends the stem and the layer whose
    input starts the head (None: no such cut, that end runs in the reduced precision).
    """

    stem: tuple[str, ...] = ()
    head: tuple[str, ...] = ()
    stem_end: str | None = None
    head_start: str | None = None

    @property
    def layers(self) -> frozenset[str]:
        return frozenset(self.stem + self.head)

    def describe(self) -> str:
        """What stays fp32, for the Predictor's note."""
        parts = []
        if self.stem:
            parts.append(f"stem {self.stem[0]}..{self.stem[-1]} ({len(self.stem)} layers)")
        if self.head:
            parts.append(f"head {', '.join(self.head)}")
        return "kept in fp32: " + ("; ".join(parts) if parts else "nothing (no cut found)")


def _downsamples(layer) -> bool:
    strides = getattr(layer, "strides", None)
    return isinstance(strides, tuple | list) and any(int(v) > 1 for v in strides)


def _submodel(inputs, outputs, name):
    """keras.Model between two tensors, or None when other paths bypass them (no clean cut)."""
    import keras

    try:
        return keras.Model(inputs, outputs, name=name)
    except (ValueError, KeyError, AttributeError):
        return None


def _own_layers(sub) -> tuple[str, ...]:
    return tuple(layer.name for layer in sub.layers if type(layer).__name__ != "InputLayer")


def fp32_split(model, fp32_ends: bool = True) -> Fp32Split:
    """The stem and head of ``model`` that reduced precision keeps in fp32 (module docstring);
    nothing with ``fp32_ends=False`` (the whole graph in the reduced precision)."""
    if not fp32_ends:
        return Fp32Split()
    layers = [layer for layer in model.layers if type(layer).__name__ != "InputLayer"]
    rank = len(model.inputs[0].shape)
    stem_end = next((layer for layer in layers if _downsamples(layer)), None)
    head_start = next(
        (
            layer
            for layer in layers
            if len(getattr(layer.input, "shape", ())) == rank and len(layer.output.shape) == 2
        ),
        None,
    )
    stem = stem_end and _submodel(model.input, stem_end.output, "fp32_stem")
    if stem and _submodel(stem_end.output, model.output, "rest") is None:
        stem = None  # a skip path bypasses the first downsampling layer: no clean cut there
    head = head_start and _submodel(head_start.input, model.output, "fp32_head")
    return Fp32Split(
        stem=_own_layers(stem) if stem else (),
        head=_own_layers(head) if head else (),
        stem_end=stem_end.name if stem else None,
        head_start=head_start.name if head else None,
    )


def split_parts(model, split: Fp32Split) -> list:
    """[(sub-model, reduced?)]: the stem (fp32), the body (reduced), the head (fp32) in order."""
    start = model.get_layer(split.stem_end).output if split.stem_end else model.input
    end = model.get_layer(split.head_start).input if split.head_start else model.output
    parts = []
    if split.stem_end:
        parts.append((_submodel(model.input, start, "fp32_stem"), False))
    parts.append(
        (_submodel(start, end, "reduced_body") if len(parts) or split.head_start else model, True)
    )
    if split.head_start:
        parts.append((_submodel(end, model.output, "fp32_head"), False))
    return parts


def _in_chunks(run: Runner, x: np.ndarray, batch: int) -> np.ndarray:
    return np.concatenate([run(x[i : i + batch])[0] for i in range(0, len(x), batch)])


def _split_runner(
    build_one: Callable, model, precision, batch, calibration_data, workdir, fp32_ends=True
):
    """``build_one(sub_model, precision, batch, data, folder)`` per part, chained into one runner.

    The body is calibrated on what the fp32 stem makes of the calibration data. Keyword
    arguments of the chained runner (an OpenVINO ``lane``) reach every part.
    """
    runners, data = [], calibration_data
    for i, (sub, reduced) in enumerate(split_parts(model, fp32_split(model, fp32_ends))):
        folder = workdir / f"part{i}"
        folder.mkdir()
        run = build_one(
            sub, precision if reduced else "fp32", batch, data if reduced else None, folder
        )
        runners.append(run)
        if not reduced and i == 0 and precision == "int8":
            data = _in_chunks(run, np.asarray(data[:CALIBRATION_SAMPLES], np.float32), batch)

    def chained(x, **lane):
        outputs = [x]
        for run in runners:
            outputs = run(outputs[0], **lane)
        return outputs

    return chained


# --- tensorflow --------------------------------------------------------------------------------


def _bf16_keeping_fp32(model, fp32_ends=True):
    """The model rebuilt under the mixed bf16 policy, with ``fp32_split``'s layers float32."""
    import keras

    from zoo.train.precision import model_config_with_policy

    keep = fp32_split(model, fp32_ends).layers
    config = model_config_with_policy(model, "bf16")
    for layer in config["layers"]:
        if layer["name"] in keep:
            layer["config"]["dtype"] = "float32"
    clone = keras.Model.from_config(config)
    clone.set_weights(model.get_weights())
    return clone


def _build_tensorflow(
    model, precision, batch, calibration_data, workdir, streams=1, fp32_ends=True
) -> Runner:
    import tensorflow as tf

    if precision == "bf16":
        _require_native_bf16("tensorflow")
        model = _bf16_keeping_fp32(model, fp32_ends)
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


def _onnxruntime_part(model, precision, batch, calibration_data, workdir) -> Runner:
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


def _build_onnxruntime(
    model, precision, batch, calibration_data, workdir, streams=1, fp32_ends=True
) -> Runner:
    if precision == "fp32":
        return _onnxruntime_part(model, precision, batch, None, workdir)
    return _split_runner(
        _onnxruntime_part, model, precision, batch, calibration_data, workdir, fp32_ends
    )


# --- openvino ----------------------------------------------------------------------------------


def _openvino_part(model, precision, batch, calibration_data, workdir, streams=1) -> Runner:
    """One OpenVINO graph compiled for ``streams`` lanes of ``ceil(batch / streams)`` inputs."""
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
    shape = list(model.inputs[0].shape[1:])
    per_lane = -(-batch // streams)
    if None not in shape:  # a static batch lets OpenVINO plan every buffer once
        graph.reshape({graph.inputs[0].get_any_name(): [per_lane, *shape]})
    hint = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}[precision]  # int8: the QDQ nodes decide
    config = {"INFERENCE_PRECISION_HINT": hint}
    if streams > 1:
        config["NUM_STREAMS"] = streams
    compiled = core.compile_model(graph, "CPU", config)
    requests = [compiled.create_infer_request() for _ in range(streams)]
    static = None not in shape

    def run(x, lane=0):
        n = len(x)
        if n > per_lane:  # e.g. the int8 body's calibration data, a batch at a time
            parts = [run(x[i : i + per_lane], lane) for i in range(0, n, per_lane)]
            return [np.concatenate(p) for p in zip(*parts, strict=True)]
        if static and n != per_lane:  # pad the last chunk to the compiled batch
            x = np.concatenate([x, np.zeros((per_lane - n, *x.shape[1:]), x.dtype)])
        result = requests[lane].infer({0: x})
        return [np.array(result[o], np.float32)[:n] for o in compiled.outputs]

    return run


def in_lanes(run: Callable, streams: int) -> Runner:
    """``run(x, lane=i)`` over ``streams`` slices of a batch at once, outputs in order."""
    if streams == 1:
        return run
    pool = ThreadPoolExecutor(streams, thread_name_prefix="zoo-infer-lane")

    def lanes(x):
        size = -(-len(x) // streams)
        slices = [x[i : i + size] for i in range(0, len(x), size)]
        parts = list(pool.map(lambda k: run(slices[k], lane=k), range(len(slices))))
        return [np.concatenate(p) for p in zip(*parts, strict=True)]

    return lanes


def _build_openvino(
    model, precision, batch, calibration_data, workdir, streams=1, fp32_ends=True
) -> Runner:
    if precision == "bf16":
        _require_native_bf16("openvino")
    streams = max(1, min(streams, batch))
    if precision == "fp32":
        return in_lanes(_openvino_part(model, precision, batch, None, workdir, streams), streams)

    def part(sub, p, b, data, folder):
        return _openvino_part(sub, p, b, data, folder, streams)

    return in_lanes(
        _split_runner(part, model, precision, batch, calibration_data, workdir, fp32_ends),
        streams,
    )


ENGINES = Registry(
    "inference engine",
    {
        "tensorflow": Engine("tensorflow", None, "tensorflow", ("fp32", "bf16"), _build_tensorflow),
        "onnxruntime": Engine(
            "onnxruntime", "onnxruntime", "medzoo[onnx]", ("fp32", "int8"), _build_onnxruntime
        ),
        "openvino": Engine(
            "openvino",
            "openvino",
            "medzoo[openvino]",
            ("fp32", "bf16", "int8"),
            _build_openvino,
            streams=True,
            static_batch=True,
        ),
    },
    argument="engine",
    hint="Use 'auto' to pick the fastest one installed.",
)


def stream_choices(engine: str, batch: int) -> tuple[int, ...]:
    """The lane counts worth measuring for ``engine`` at ``batch`` here: 1, and one per core."""
    lanes = min(os.cpu_count() or 1, batch)
    return (1, lanes) if ENGINES.get(engine).streams and lanes > 1 else (1,)


def build_runner(
    engine: str,
    model,
    precision: str,
    batch: int,
    calibration_data=None,
    streams: int = 1,
    fp32_ends: bool = True,
) -> Runner:
    """A runner of ``model`` on ``engine`` at ``precision`` in ``streams`` parallel lanes (an
    engine without lanes runs one; files go to a temporary folder). ``fp32_ends=False`` runs a
    bf16 model's stem and head in bf16 too (one graph: faster, but checked like any other)."""
    if not fp32_ends and precision == "int8":
        raise InvalidArgumentError(
            "precision='int8' with fp32_ends=False: int8 always keeps the stem and head fp32 "
            "(8-bit raw pixels would lose most of a CT's grey levels); use fp32_ends=True, or "
            "bf16 for a whole reduced-precision graph."
        )
    spec = ENGINES.get(engine)
    spec.require(precision)
    if precision != "fp32":
        need_calibration(precision, calibration_data)
    with tempfile.TemporaryDirectory(
        prefix="zoo-infer-"
    ) as tmp:  # engines hold their graphs in memory
        lanes = streams if spec.streams else 1
        whole = {} if fp32_ends else {"fp32_ends": False}  # a builder without it keeps its ends
        return spec.build(model, precision, batch, calibration_data, Path(tmp), lanes, **whole)
