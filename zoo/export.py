"""``zoo.export``: a trained model as a SavedModel, a TFLite flatbuffer or an ONNX file.

Every format serves the model as built, preprocessing included, so deployment feeds raw
pixel values: one input named ``image`` (float32, any batch size) and outputs named after
the model's output layers (``head_fc`` for a zoo classifier), or ``output_names``.
Next to each export, ``<name>.json`` (inside a SavedModel folder: ``zoo_export.json``)
records the signature, the input contract and the library versions.

``zoo.export`` is this module, and calling it calls ``export``: ``import zoo.export as m`` gives
the module (``m.FORMATS``, ``m.check_serializable``), ``zoo.export(model, path)`` exports, and
``from zoo.export import export`` gives the function.

Before exporting, every layer must round-trip through its config in Keras' safe mode: the
exported graph must never be the only copy of a model nobody can rebuild or fine-tune again.
"""

from __future__ import annotations

import inspect
import json
import sys
import tempfile
import types
from pathlib import Path

from zoo._keras_compat import all_layers
from zoo.errors import ExportError, InvalidArgumentError, OptionalDependencyError, ZooError
from zoo.outputs import check_target, staged
from zoo.registry import Registry

FORMATS = ("saved_model", "tflite", "onnx", "openvino")
_FORMATS = Registry("export format", FORMATS, argument="format")
QUANTIZE = (None, "dynamic", "int8")
ONNX_OPSET = 17


def check_serializable(model) -> None:
    """ExportError naming the first layer lost by get_config -> from_config (safe mode)."""
    import keras

    for layer in all_layers(model):
        if isinstance(layer, keras.layers.InputLayer):
            continue
        try:
            config = keras.saving.serialize_keras_object(layer)
            keras.saving.deserialize_keras_object(config, safe_mode=True)
        except (NotImplementedError, TypeError, ValueError, AttributeError) as e:
            raise ExportError(
                f"layer {layer.name!r} ({type(layer).__name__}) of model {model.name!r} cannot be "
                f"rebuilt from its config ({str(e).strip().splitlines()[0][:200]}). Decorate the "
                "class with @keras.saving.register_keras_serializable(package=...) and give it "
                "get_config() returning its __init__ arguments (and no Lambda layers); then "
                "export again."
            ) from None


def _signature(model, input_name: str, output_names):
    import tensorflow as tf

    names = list(output_names) if output_names else list(model.output_names)
    if len(names) != len(model.outputs) or len(set(names)) != len(names):
        raise InvalidArgumentError(
            f"output_names={output_names!r}: give {len(model.outputs)} distinct names."
        )
    if len(model.inputs) != 1:
        raise ExportError(
            f"model {model.name!r} has {len(model.inputs)} inputs; export serves one-input models."
        )
    spec = tf.TensorSpec((None, *model.inputs[0].shape[1:]), tf.float32, name=input_name)

    def serve(image):
        outputs = model(image, training=False)
        outputs = outputs if isinstance(outputs, list | tuple) else [outputs]
        return {n: tf.cast(o, tf.float32) for n, o in zip(names, outputs, strict=True)}

    return serve, spec, names


def _write_saved_model(model, path: Path, serve, spec) -> None:
    import keras

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(name="serving_default", fn=serve, input_signature=[spec])
    archive.write_out(str(path), verbose=False)


def _representative(data, model):
    import numpy as np

    if data is None:
        raise ExportError(
            "quantize='int8' needs representative_data: a few hundred typical inputs (array of "
            f"shape (N, {', '.join(str(s) for s in model.inputs[0].shape[1:])})) to calibrate the "
            "int8 ranges."
        )
    x = np.asarray(data, dtype=np.float32)
    if x.shape[1:] != tuple(model.inputs[0].shape[1:]) and None not in model.inputs[0].shape[1:]:
        raise ExportError(
            f"representative_data has shape {x.shape}; the model takes (N, "
            f"{tuple(model.inputs[0].shape[1:])})."
        )

    def gen():
        for i in range(min(len(x), 500)):
            yield [x[i:i + 1]]

    return gen


def _write_tflite(model, path: Path, serve, spec, quantize, representative) -> None:
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as tmp:
        _write_saved_model(model, Path(tmp) / "sm", serve, spec)
        converter = tf.lite.TFLiteConverter.from_saved_model(
            str(Path(tmp) / "sm"), signature_keys=["serving_default"]
        )
        if quantize:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        # full-integer kernels; float32 in and out so callers feed raw pixels
        if quantize == "int8":
            converter.representative_dataset = representative
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        try:
            path.write_bytes(converter.convert())
        except Exception as e:  # the converter raises ConverterError or bare Exceptions from C++
            raise ExportError(
                f"TFLite conversion of {model.name!r} failed "
                f"({str(e).strip().splitlines()[0][:300]}). Try quantize=None or 'dynamic', or "
                "format='saved_model'."
            ) from None


def _write_onnx(model, path: Path, serve, spec, names) -> None:
    import tensorflow as tf

    try:
        import tf2onnx
    except ImportError as e:
        raise OptionalDependencyError(
            f"format='onnx' needs tf2onnx ({e}): `pip install \"medzoo[onnx]\"` (tf2onnx 1.17 "
            "converts TensorFlow 2.21 graphs), or export format='saved_model'."
        ) from None
    fn = tf.function(serve, input_signature=[spec])
    try:
        proto, _ = tf2onnx.convert.from_function(fn, input_signature=[spec], opset=ONNX_OPSET)
    except Exception as e:  # tf2onnx raises plain Exceptions for unsupported ops
        raise ExportError(
            f"tf2onnx could not convert {model.name!r} ({str(e).strip().splitlines()[0][:300]}); "
            "export format='saved_model' instead."
        ) from None
    # tf2onnx names outputs after graph tensors (Identity:0); give them the signature's names
    concrete = fn.get_concrete_function()
    by_tensor = dict(
        zip(
            [t.name for t in concrete.outputs],
            tf.nest.flatten(concrete.structured_outputs, expand_composites=False),
            strict=False,
        )
    )
    renames = {}
    for out in proto.graph.output:
        tensor = by_tensor.get(out.name)
        key = next(
            (
                k
                for k, v in concrete.structured_outputs.items()
                if tensor is not None and v.name == tensor.name
            ),
            None,
        )
        renames[out.name] = key or names[len(renames)]
    for node in proto.graph.node:
        node.output[:] = [renames.get(o, o) for o in node.output]
        node.input[:] = [renames.get(i, i) for i in node.input]
    for out in proto.graph.output:
        out.name = renames[out.name]
    path.write_bytes(proto.SerializeToString())


OPENVINO_XML = "model.xml"


def _write_openvino(model, path: Path, serve, spec) -> None:
    """A folder with OpenVINO IR (``model.xml`` + ``model.bin``, float32 weights), converted from a
    SavedModel of the same signature, so its input ``image`` takes raw pixels like the others."""
    try:
        import openvino as ov
    except ImportError as e:
        raise OptionalDependencyError(
            f"format='openvino' needs OpenVINO ({e}): `pip install \"medzoo[openvino]\"` (openvino "
            "2026.4 reads TensorFlow 2.21 SavedModels), or export format='saved_model' or 'onnx'."
        ) from None
    with tempfile.TemporaryDirectory() as tmp:
        _write_saved_model(model, Path(tmp) / "sm", serve, spec)
        try:  # the runtime's TensorFlow frontend: no converter tool, no telemetry, no network
            converted = ov.Core().read_model(str(Path(tmp) / "sm"))
        except Exception as e:  # OpenVINO's frontends raise their own (C++) exception types
            raise ExportError(
                f"OpenVINO could not convert {model.name!r} "
                f"({str(e).strip().splitlines()[0][:300]}); export format='saved_model' or 'onnx' "
                "instead."
            ) from None
    path.mkdir()
    ov.save_model(converted, str(path / OPENVINO_XML), compress_to_fp16=False)


def _metadata(model, fmt, quantize, input_name, names) -> dict:
    import keras
    import tensorflow as tf

    from zoo.layers.preprocess import input_contract

    try:
        contract = input_contract(model)
    except InvalidArgumentError:
        contract = None
    return {
        "format": fmt,
        "quantize": quantize,
        "model": model.name,
        "inputs": {input_name: {"shape": [None, *model.inputs[0].shape[1:]], "dtype": "float32"}},
        "outputs": {
            n: {"shape": [None, *t.shape[1:]], "dtype": "float32"}
            for n, t in zip(names, model.outputs, strict=True)
        },
        "input_contract": contract,
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
    }


def export(model, path, format: str = "saved_model", quantize=None, representative_data=None, *,
           input_name: str = "image", output_names=None, overwrite: bool = False) -> Path:
    """Write ``model`` to ``path`` as ``format``, with its input contract in the metadata.

    Args:
        model: a Keras model (a zoo model: raw pixels in, preprocessing inside).
        path: the output folder (saved_model, openvino) or file (tflite, onnx; a ``.json``
            sidecar beside it).
        format: ``"saved_model"``, ``"tflite"``, ``"onnx"`` or ``"openvino"`` (below).
        quantize: tflite only: ``None``, ``"dynamic"`` or ``"int8"``.
        representative_data: images to calibrate ``quantize="int8"``.
        input_name: the serving signature's input name.
        output_names: names of the outputs (default the model's).
        overwrite: replace an earlier zoo export at ``path`` (never other files).

    Returns:
        The ``Path`` written.

    Raises:
        UnknownNameError: unknown format. InvalidArgumentError: not a Keras model, bad
            quantize settings. ExportError: a layer that does not round-trip, or a converter
            failure. OutputError: ``path`` exists and is not a previous export (or no
            ``overwrite``). OptionalDependencyError: the format's extra is missing.

    saved_model: a folder loadable with ``tf.saved_model.load``; signature ``serving_default``
        takes ``image`` and returns a dict of named outputs.
    tflite: ``quantize=None`` (float32), ``"dynamic"`` (int8 weights, float activations) or
        ``"int8"`` (full-integer kernels calibrated on ``representative_data``; float32 in/out).
    onnx: through tf2onnx (opset 17); no quantization here (use onnxruntime.quantization).
    openvino: a folder with ``model.xml`` + ``model.bin`` (OpenVINO IR, float32), read with
        ``openvino.Core().read_model(path / "model.xml")``; needs the ``openvino`` extra.

    The model and every argument are checked before the disk is touched; the export is written
    beside ``path`` and swapped in only when complete. An existing ``path`` is replaced only with
    ``overwrite=True`` and only if it is a previous zoo export (see :mod:`zoo.outputs`).
    """
    _FORMATS.check(format)
    if quantize not in QUANTIZE:
        raise InvalidArgumentError(f"quantize={quantize!r}: use None, 'dynamic' or 'int8'.")
    if quantize and format != "tflite":
        raise InvalidArgumentError(
            f"quantize={quantize!r} applies to format='tflite' only (got {format!r})."
        )
    if not hasattr(model, "inputs") or not hasattr(model, "get_config"):
        raise InvalidArgumentError(
            f"export: {model!r} is not a Keras model; load it first (zoo.load / zoo.load_model)."
        )
    representative = _representative(representative_data, model) if quantize == "int8" else None
    check_serializable(model)
    serve, spec, names = _signature(model, input_name, output_names)
    path = Path(path)
    targets = (
        [path]
        if format in ("saved_model", "openvino")
        else [path, path.with_name(path.name + ".json")]
    )
    for target in targets:  # refuse before the (slow) conversion, not only at the swap
        check_target(target, overwrite=overwrite)
    meta = _metadata(model, format, quantize, input_name, names)
    with staged(targets, writer="zoo.export", overwrite=overwrite) as tmp:
        if format in ("saved_model", "openvino"):
            (_write_saved_model if format == "saved_model" else _write_openvino)(
                model, tmp[0], serve, spec
            )
            (tmp[0] / "zoo_export.json").write_text(json.dumps(meta, indent=2))
        else:
            writer = _write_tflite if format == "tflite" else _write_onnx
            args = (quantize, representative) if format == "tflite" else (names,)
            writer(model, tmp[0], serve, spec, *args)
            tmp[1].write_text(json.dumps(meta, indent=2))
    return path


def _run_cli(args) -> int:
    import numpy as np

    from zoo.models.factory import load
    from zoo.saving import load_model

    source = Path(args.model)
    if source.suffix == ".keras" and not source.is_file():
        raise ZooError(
            f"zoo export: {args.model!r} does not exist; give a .keras file written by zoo "
            "finetune or zoo.save, or a zoo model name such as simple_cnn.phantom."
        )
    model = load_model(source) if source.suffix == ".keras" else load(args.model)
    representative = np.load(args.representative_data) if args.representative_data else None
    path = export(
        model,
        args.out,
        format=args.format,
        quantize=args.quantize,
        representative_data=representative,
        overwrite=args.overwrite,
    )
    print(f"{args.format} written to {path}")
    return 0


def add_export_parser(sub) -> None:
    """Register ``zoo export`` on the CLI's subparsers."""
    p = sub.add_parser(
        "export",
        help="write a .keras model (or a zoo model name) as SavedModel, TFLite, ONNX or OpenVINO",
    )
    p.add_argument(
        "model",
        help="a .keras file (e.g. finetune_out/best.keras) or a zoo name such as "
        "simple_cnn.phantom",
    )
    p.add_argument("out", help="output path (a folder for saved_model)")
    p.add_argument("--format", choices=FORMATS, default="saved_model")
    p.add_argument("--quantize", choices=["dynamic", "int8"], default=None, help="TFLite only")
    p.add_argument(
        "--representative-data",
        help=".npy array of typical inputs (N, H, W, C) for --quantize int8",
    )
    p.add_argument("--overwrite", action="store_true",
                   help="replace a previous zoo export at OUT (never files the zoo did not write)")
    p.set_defaults(func=_run_cli)


class _CallableModule(types.ModuleType):
    """This module's type: calling ``zoo.export`` calls ``export`` (the facade names the module)."""

    def __call__(self, *args, **kwargs):
        return export(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
__signature__ = inspect.signature(export)  # help() and inspect see export's own arguments
