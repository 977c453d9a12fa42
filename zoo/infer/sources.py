"""What ``zoo predict`` can run: a Keras model, or a model exported by ``zoo.export``.

``open_model(spec, engine, batch)`` turns MODEL into a :class:`PredictModel` with one call,
``predict(x)``, and the input contract the inputs are fitted to:

- a ``.keras`` file or a zoo name/tag (``simple_cnn.phantom``): the Keras model on
  ``zoo.compile_for_inference`` (``--engine`` picks the engine; the predictor is checked
  against the Keras fp32 model). Heat maps need this kind.
- an ONNX file, an OpenVINO IR folder (``model.xml``) or a SavedModel folder written by
  ``zoo.export``: run as exported (ONNX on onnxruntime, or on OpenVINO, which reads ONNX too;
  IR on OpenVINO; a SavedModel on TensorFlow). Their input shape and value range come from the
  ``zoo_export.json`` / ``<file>.json`` sidecar export writes: without it the zoo would have
  to guess the pixel range, so it refuses.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from zoo.errors import DataError, InvalidArgumentError, OptionalDependencyError, ZooError

SIDECAR = "zoo_export.json"


@dataclass
class PredictModel:
    """A model as ``zoo predict`` runs it: ``predict(x) -> (N, classes)`` scores."""

    name: str
    kind: str  # "keras", "onnx", "openvino" or "saved_model"
    input_shape: tuple  # without the batch axis; (H, W, C) or (D, H, W, C)
    input_range: tuple | None  # None: takes Hounsfield units as they are (windows inside)
    class_names: list | None
    predict: Callable = field(repr=False)
    engine: str = "tensorflow"
    precision: str = "fp32"
    note: str = ""
    keras_model: object = field(default=None, repr=False)  # None for exported models

    @property
    def volumes(self) -> bool:
        return len(self.input_shape) == 4


def _card_class_names(model) -> list | None:
    """The weight card's class names (``labels = "no-lesion, lesion"``), or None."""
    from zoo.hub.cards import get_card

    try:
        labels = get_card(str(getattr(model, "zoo_weights", ""))).labels.split(",")
    except (ZooError, AttributeError):
        return None
    labels = [s.strip() for s in labels]
    return labels if all(labels) else None


def _first_output(y) -> np.ndarray:
    if isinstance(y, dict):
        y = next(iter(y.values()))
    elif isinstance(y, list | tuple):
        y = y[0]
    return np.asarray(y, np.float32)


def keras_model(spec):
    """The Keras model MODEL names: a model, a ``.keras`` file or a zoo name with a weights tag.

    Args:
        spec: the model, or its file or zoo name (not an exported model: see ``open_model``).

    Returns:
        The Keras model.

    Raises:
        RandomWeightsError: a bare architecture name. DataError: a missing ``.keras`` file.
    """
    from zoo.errors import RandomWeightsError
    from zoo.infer.predictor import resolve_model

    if isinstance(spec, Path):
        spec = str(spec)
    if isinstance(spec, str) and not spec.endswith(".keras") and "." not in spec:
        raise RandomWeightsError(
            f"model {spec!r} is an architecture name without a weights tag, so its weights would "
            "be random and every prediction noise. Give a checkpoint (e.g. simple_cnn.phantom; "
            "`zoo list --pretrained` lists them), a .keras file or an exported model."
        )
    if isinstance(spec, str) and spec.endswith(".keras") and not Path(spec).is_file():
        raise DataError(f"zoo predict: model {spec!r}: no such file; give a .keras file written "
                        "by zoo finetune / zoo.save, an exported model or a zoo name.")
    return resolve_model(spec)


def input_range_of(model) -> tuple[tuple | None, str]:
    """(the value range the model's input expects, a note): None for a model that takes
    Hounsfield units (its CT windows inside, zoo.data.with_hu_input); (0, 255) when the model
    states no input contract."""
    try:
        from zoo.models.factory import input_contract

        input_range = tuple(float(v) for v in input_contract(model)["input_range"])
    except ZooError:
        input_range = (0.0, 255.0)
    from zoo.layers.window import WindowStack

    if any(isinstance(layer, WindowStack) for layer in model.layers):  # zoo.data.with_hu_input
        return None, "the model takes Hounsfield units (its windows are inside); "
    return input_range, ""


def _keras(spec, engine: str, batch: int, model=None) -> PredictModel:
    from zoo.infer.predictor import compile_for_inference

    model = keras_model(spec) if model is None else model
    shape = tuple(model.inputs[0].shape[1:])
    if len(shape) not in (3, 4) or None in shape[-1:]:
        raise DataError(f"zoo predict: model {model.name!r} takes {shape}; it predicts images "
                        "(H, W, C) or volumes (D, H, W, C).")
    input_range, note = input_range_of(model)
    predictor = compile_for_inference(model, engine=engine, precision="fp32", batch=batch)
    named = isinstance(spec, str) and not spec.endswith(".keras")
    return PredictModel(
        name=spec if named else model.name,
        kind="keras",
        input_shape=shape,
        input_range=input_range,
        class_names=_card_class_names(model),
        predict=lambda x: _first_output(predictor.predict(x)),
        engine=predictor.engine,
        precision=predictor.precision,
        note=note + predictor.note,
        keras_model=model,
    )


def _sidecar(path: Path) -> dict:
    meta = path / SIDECAR if path.is_dir() else path.with_name(path.name + ".json")
    try:
        data = json.loads(meta.read_text())
        (spec,) = data["inputs"].values()
        shape = tuple(spec["shape"][1:])
    except FileNotFoundError:
        raise DataError(
            f"zoo predict: {str(path)!r} has no {meta.name} beside it, so its input shape and "
            "pixel range are unknown; export it with `zoo export` (which writes that file) or "
            "give the .keras model."
        ) from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise DataError(f"zoo predict: {meta} cannot be read ({type(e).__name__}: {e}); export "
                        "the model again with `zoo export`.") from None
    contract = data.get("input_contract") or {}
    data["input_shape"] = shape
    data["input_range"] = tuple(contract.get("input_range") or (0.0, 255.0))
    return data


def _exported_kind(path: Path) -> str | None:
    if path.is_file() and path.suffix == ".onnx":
        return "onnx"
    if path.is_dir() and (path / "model.xml").is_file():
        return "openvino"
    if path.is_dir() and (path / "saved_model.pb").is_file():
        return "saved_model"
    return None


def _need(package: str, extra: str, kind: str):
    import importlib

    try:
        return importlib.import_module(package)
    except ImportError as e:
        raise OptionalDependencyError(
            f"zoo predict: running an exported {kind} model needs {package} ({e}): "
            f"`pip install \"{extra}\"`, or give the .keras model."
        ) from None


def _openvino_runner(source: Path):
    ov = _need("openvino", "medzoo[openvino]", "OpenVINO/ONNX")
    compiled = ov.Core().compile_model(str(source), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return lambda x: _first_output(compiled(x)[compiled.outputs[0]])


def _refuse_segmenter(path: Path, meta: dict) -> None:
    """An exported model with per-voxel outputs: zoo predict segments with the Keras model."""
    outputs = list((meta.get("outputs") or {}).values())
    shape = outputs[0].get("shape") if outputs and isinstance(outputs[0], dict) else None
    if isinstance(shape, list) and len(shape) - 1 == len(meta["input_shape"]):
        raise InvalidArgumentError(
            f"zoo predict: {str(path)!r} is an exported segmentation model (per-voxel outputs "
            f"{tuple(shape[1:])}); zoo predict segments with the Keras model (sliding windows, "
            "flips, NIfTI and DICOM-SEG output): give the .keras file or zoo name it was "
            "exported from."
        )


def _exported(path: Path, kind: str, engine: str) -> PredictModel:
    meta = _sidecar(path)
    _refuse_segmenter(path, meta)
    natural = {"onnx": "onnxruntime", "openvino": "openvino", "saved_model": "tensorflow"}[kind]
    allowed = {"onnx": ("onnxruntime", "openvino"), "openvino": ("openvino",),
               "saved_model": ("tensorflow",)}[kind]
    engine = natural if engine == "auto" else engine
    if engine not in allowed:
        raise InvalidArgumentError(
            f"zoo predict: --engine {engine} cannot run an exported {kind} model "
            f"({str(path)!r}); use --engine {' or '.join(allowed)} (or auto), or give the .keras "
            "model to choose any engine."
        )
    if engine == "onnxruntime":
        ort = _need("onnxruntime", "medzoo[onnx]", "ONNX")
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name

        def run(x):
            return _first_output(session.run(None, {name: x}))
    elif engine == "openvino":
        run = _openvino_runner(path / "model.xml" if kind == "openvino" else path)
    else:
        import tensorflow as tf

        serve = tf.saved_model.load(str(path)).signatures["serving_default"]
        (arg,) = serve.structured_input_signature[1]

        def run(x):
            return _first_output(serve(**{arg: tf.constant(x)}))
    return PredictModel(
        name=str(meta.get("model") or path.stem), kind=kind, input_shape=meta["input_shape"],
        input_range=meta["input_range"], class_names=None,
        predict=lambda x: run(np.ascontiguousarray(x, np.float32)), engine=engine,
        note=f"exported {kind} model run as exported on {engine} (input contract from its sidecar)",
    )


def exported_kind(spec) -> str | None:
    """``"onnx"``, ``"openvino"`` or ``"saved_model"`` when MODEL is a ``zoo.export`` output.

    Args:
        spec: MODEL as given (a path, a name or a Keras model).

    Returns:
        The export's kind, or None for anything else.
    """
    return _exported_kind(Path(spec)) if isinstance(spec, str | Path) else None


def open_model(spec, engine: str = "auto", batch: int = 16, *, model=None) -> PredictModel:
    """MODEL (a Keras model, .keras file, zoo name/tag, or a zoo.export output) ready to predict;
    ``model``: the Keras model ``spec`` names, when the caller has loaded it already."""
    from zoo.infer.engines import ENGINES

    if engine != "auto":
        ENGINES.check(engine)
    if model is not None or not isinstance(spec, str | Path):
        return _keras(spec, engine, batch, model)
    path = Path(spec)
    kind = _exported_kind(path)
    if kind:
        return _exported(path, kind, engine)
    if path.is_dir():
        raise DataError(f"zoo predict: {str(path)!r} is a folder but not a model zoo.export "
                        "wrote (no model.xml or saved_model.pb in it); give a .keras file, an "
                        "exported model or a zoo name.")
    return _keras(str(spec), engine, batch)
