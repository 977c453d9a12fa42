"""``zoo.compile_for_inference``: a model on the fastest engine that still agrees with Keras fp32.

The predictor takes what the Keras model takes (raw pixels; preprocessing is inside the graph)
and returns the same outputs. Before it is handed out, every engine/precision is checked against
the Keras fp32 model on the caller's ``calibration_data`` (or, for fp32 without data, on a probe
batch of random inputs in the model's input range):

- fp32 engines: max |diff| <= 1e-4 of max(1, max |reference|) (absolute for probabilities);
- bf16 / int8: top-1 agreement >= 99% and max |delta p| <= 0.02 (same scale).

A miss raises AgreementError naming the numbers. ``engine="auto"`` builds every installed engine
(and, given calibration_data, every reduced precision that passes), times each once on this
machine and caches the winner under ``ZOO_HOME/infer/auto.json``, keyed by the model's weights,
the batch, the CPU and the engines' versions; later calls build only the winner. When the winner
can run a batch as parallel lanes (OpenVINO streams, ``zoo.infer.engines``), auto also builds it
with one lane per core, checks that build's agreement too and keeps whichever of the two is
faster here: one more build, not one per candidate. bf16 candidates come twice: with the stem
and head kept fp32 and as one whole bf16 graph (``fp32_ends``, see ``zoo.infer.engines``); which
agrees, and which is faster, depends on the model and the CPU, so auto measures both.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field

import numpy as np

from zoo.errors import AgreementError, InputShapeError, InvalidArgumentError, ZooError
from zoo.infer.engines import (
    ENGINES,
    PRECISIONS,
    build_runner,
    fp32_split,
    native_bf16,
    need_calibration,
    stream_choices,
)

log = logging.getLogger("zoo.infer")

FP32_RTOL = 1e-4
TOP1_MIN = 0.99
MAX_DELTA_P = 0.02
PROBE_SIZE = 64  # spatial size used for a dynamic axis when no calibration data is given
CACHE_FILE = "auto.json"
MEASURE_S = 0.3  # auto times each candidate over windows at least this long


@dataclass(frozen=True)
class Agreement:
    """How an engine's outputs compare with the Keras fp32 model's on ``n`` inputs."""

    n: int
    max_delta: float  # max |diff| / max(1, max |reference|), over every output
    top1: float | None  # fraction of argmax matches (None for outputs without classes)

    def misses(self, precision: str) -> str | None:
        """Which target this misses at ``precision`` (None when it meets them)."""
        if precision == "fp32":
            if self.max_delta > FP32_RTOL:
                return f"max |diff| {self.max_delta:.2e} > {FP32_RTOL:.0e} (relative)"
            return None
        top1 = (
            ""
            if self.top1 is None or self.top1 >= TOP1_MIN
            else f"top-1 agreement {self.top1:.1%} < {TOP1_MIN:.0%}"
        )
        delta = (
            ""
            if self.max_delta <= MAX_DELTA_P
            else f"max |delta p| {self.max_delta:.4f} > {MAX_DELTA_P}"
        )
        return "; ".join(s for s in (top1, delta) if s) or None


def _labels(y: np.ndarray) -> np.ndarray | None:
    if y.ndim < 2:
        return None
    if y.shape[-1] >= 2:
        return np.argmax(y, -1)
    return y[..., 0] > (0.5 if y.min() >= 0 and y.max() <= 1 else 0.0)


def agreement(reference: list, outputs: list) -> Agreement:
    """Compare ``outputs`` with ``reference`` (lists of arrays, one per model output)."""
    delta, matches, total = 0.0, 0, 0
    for ref, out in zip(reference, outputs, strict=True):
        ref, out = np.asarray(ref, np.float64), np.asarray(out, np.float64)
        scale = max(1.0, float(np.max(np.abs(ref))) if ref.size else 1.0)
        delta = max(delta, float(np.max(np.abs(out - ref))) / scale if ref.size else 0.0)
        a, b = _labels(ref), _labels(out)
        if a is not None:
            matches, total = matches + int(np.sum(a == b)), total + a.size
    n = len(reference[0]) if reference else 0
    return Agreement(n=n, max_delta=delta, top1=matches / total if total else None)


def _as_list(y) -> list:
    if isinstance(y, dict):
        return [np.asarray(v, np.float32) for v in y.values()]
    if isinstance(y, list | tuple):
        return [np.asarray(v, np.float32) for v in y]
    return [np.asarray(y, np.float32)]


def keras_outputs(model, x: np.ndarray, batch: int = 64) -> list:
    """The Keras model's own outputs on ``x`` (the fp32 reference), called directly in chunks."""
    chunks = [_as_list(model(x[i : i + batch], training=False)) for i in range(0, len(x), batch)]
    return [np.concatenate(parts) for parts in zip(*chunks, strict=True)]


def check_images(x, shape: tuple, what: str = "predict") -> np.ndarray:
    """``x`` as float32 (N, *shape), or InputShapeError naming both shapes."""
    try:
        x = np.asarray(x, np.float32)
    except (TypeError, ValueError) as e:
        raise InvalidArgumentError(
            f"{what}: the images cannot be read as a float32 array ({e}); give a numpy "
            f"array of shape (N, {', '.join(map(str, shape))})."
        ) from None
    ok = x.ndim == len(shape) + 1 and all(
        s is None or s == d for s, d in zip(shape, x.shape[1:], strict=True)
    )
    if not ok:
        wanted = "(N, " + ", ".join("any" if s is None else str(s) for s in shape) + ")"
        hint = " Add the batch axis with x[None]." if x.shape == tuple(shape) else ""
        raise InputShapeError(
            f"{what}: images of shape {x.shape}; the model takes {wanted}, raw pixel values as "
            f"it was built (preprocessing is inside).{hint}"
        )
    return x


def _probe(model, batch: int) -> np.ndarray:
    """Random inputs in the model's input range, when the caller gave no calibration data."""
    low, high = 0.0, 255.0
    try:
        from zoo.models.factory import input_contract

        low, high = (float(v) for v in input_contract(model)["input_range"])
    except (ZooError, TypeError, ValueError, KeyError):
        pass
    shape = [PROBE_SIZE if s is None else s for s in model.inputs[0].shape[1:]]
    return np.random.default_rng(0).uniform(low, high, (max(batch, 8), *shape)).astype(np.float32)


@dataclass
class Predictor:
    """A compiled model: ``predict(images)`` returns what ``model(images)`` returns, on ``engine``.

    ``agreement`` is the check it passed against the Keras fp32 model; ``note`` says why this
    engine runs (e.g. that no optional engine is installed) and, for bf16 / int8, which layers
    stay fp32 (``kept_fp32``, see ``zoo.infer.engines.fp32_split``); ``timings`` holds images/s
    of every candidate ``auto`` measured (empty otherwise).
    """

    engine: str
    precision: str
    batch: int
    input_shape: tuple
    output_names: list
    agreement: Agreement
    run: object = field(repr=False)
    note: str = ""
    compile_s: float = 0.0
    timings: dict = field(default_factory=dict)
    refused: dict = field(default_factory=dict)
    kept_fp32: str = ""
    streams: int = 1  # parallel lanes a batch is split into (OpenVINO streams)
    fp32_ends: bool = True  # bf16/int8 keep the stem and head fp32 (False: one reduced graph)

    @property
    def label(self) -> str:
        """What runs: ``engine/precision``, whole graph or not, the lanes (keys of ``timings``)."""
        return label(self.engine, self.precision, self.streams, self.fp32_ends)

    def set_note(self, reason: str) -> None:
        """Set ``note`` to ``reason`` plus what stays fp32 in a reduced precision."""
        self.note = f"{reason} {self.kept_fp32}." if self.kept_fp32 else reason

    def predict(self, images):
        """Outputs for raw-pixel ``images`` (N, *input_shape): an array, or a list of them."""
        x = check_images(images, self.input_shape)
        parts = [self.run(x[i : i + self.batch]) for i in range(0, len(x), self.batch)]
        if not parts:
            raise InvalidArgumentError("predict: got 0 images; give at least one.")
        outs = [np.concatenate(p) for p in zip(*parts, strict=True)]
        return outs[0] if len(outs) == 1 else outs

    __call__ = predict


def load_keras(path):
    """A saved ``.keras`` zoo model (zoo.saving.load_model registers the zoo's layers first)."""
    from zoo.saving import load_model

    return load_model(path)


def resolve_model(model):
    """A Keras model from a model, a ``.keras`` path or a zoo name (``"simple_cnn.phantom"``)."""
    if isinstance(model, str | os.PathLike):
        from zoo.models.factory import load

        return load_keras(model) if str(model).endswith(".keras") else load(str(model))
    if not hasattr(model, "inputs") or not hasattr(model, "get_weights"):
        raise InvalidArgumentError(
            f"compile_for_inference: {model!r} is not a Keras model; pass a model, a .keras "
            "path or a zoo name such as 'simple_cnn.phantom'."
        )
    if len(model.inputs) != 1:
        raise InvalidArgumentError(
            f"compile_for_inference: model {model.name!r} has {len(model.inputs)} inputs; "
            "the engines serve one-input models."
        )
    return model


def _build(model, engine, precision, batch, data, reference, streams=1, fp32_ends=True):
    """A checked Predictor (AgreementError when it misses the targets)."""
    start = time.perf_counter()
    fp32_ends = fp32_ends or precision == "fp32"
    run = build_runner(
        engine, model, precision, batch, data if precision != "fp32" else None, streams, fp32_ends
    )
    compile_s = time.perf_counter() - start
    outputs = [
        np.concatenate(p)
        for p in zip(*[run(data[i : i + batch]) for i in range(0, len(data), batch)], strict=True)
    ]
    stats = agreement(reference, outputs)
    miss = stats.misses(precision)
    if miss:
        raise AgreementError(
            f"engine={engine!r}, precision={precision!r}"
            + ("" if fp32_ends else " (whole graph, fp32_ends=False)")
            + " misses the agreement targets against the "
            "Keras fp32 "
            f"model on {stats.n} inputs: {miss}. Use precision='fp32' or another engine "
            f"(top-1 >= {TOP1_MIN:.0%} and max |delta p| <= {MAX_DELTA_P} for bf16/int8; "
            "max |diff| <= "
            f"{FP32_RTOL:.0e} for fp32).",
            agreement=stats,
            outputs=outputs,
        )
    return Predictor(
        engine=engine,
        precision=precision,
        batch=batch,
        input_shape=tuple(model.inputs[0].shape[1:]),
        output_names=list(model.output_names),
        agreement=stats,
        run=run,
        compile_s=compile_s,
        kept_fp32=(
            ""
            if precision == "fp32"
            else fp32_split(model).describe()
            if fp32_ends
            else "whole graph in reduced precision (fp32_ends=False): nothing kept in fp32"
        ),
        streams=streams,
        fp32_ends=fp32_ends,
    )


def _images_per_s(predictor: Predictor, data: np.ndarray, windows: int = 3) -> float:
    """Best images/s over ``windows`` windows of >= MEASURE_S s each (one call at the least), so
    that a small model is timed over many calls and a busy moment does not pick the engine."""
    x = data[: predictor.batch]
    if len(x) < predictor.batch:
        x = np.resize(x, (predictor.batch, *x.shape[1:]))
    predictor.run(x)  # warm-up
    best = 0.0
    for _ in range(windows):
        calls, start = 0, time.perf_counter()
        while not calls or time.perf_counter() - start < MEASURE_S:
            predictor.run(x)
            calls += 1
        best = max(best, calls * len(x) / (time.perf_counter() - start))
    return best


def _fingerprint(model, batch, candidates, data) -> str:
    from importlib import metadata

    from zoo.train.precision import cpu_flags

    digest = hashlib.sha256()
    for w in model.get_weights():
        digest.update(np.ascontiguousarray(w).tobytes())
    versions = {}
    for package in ("tensorflow", "onnxruntime", "openvino"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    key = {
        "model": model.name,
        "shape": [str(s) for s in model.inputs[0].shape],
        "weights": digest.hexdigest(),
        "batch": batch,
        "candidates": candidates,
        "calibration": data is not None and list(data.shape),
        "cpu": sorted(cpu_flags()),
        "cores": os.cpu_count(),
        "versions": versions,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]


def _cache_path():
    from zoo.hub.cards import zoo_home

    return zoo_home() / "infer" / CACHE_FILE


def _read_cache() -> dict:
    try:
        data = json.loads(_cache_path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(key: str, record: dict) -> None:
    path = _cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        cache = _read_cache()
        cache[key] = record
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError as e:  # a read-only cache only costs a new measurement next time
        log.warning(
            "zoo.infer: cannot cache the engine choice in %s (%s); it will be measured again.",
            path,
            e,
        )


def _candidates(precision: str, data, fp32_ends: bool | None = None) -> tuple[list, dict]:
    """(engine, precision, fp32_ends) auto may try here, and why the others are left out: bf16
    both with its ends fp32 and as a whole graph unless ``fp32_ends`` fixes one."""
    skipped = {}
    installed = []
    for name, engine in ENGINES.items():
        reason = engine.missing()
        if reason:
            skipped[name] = reason
        else:
            installed.append(engine)
    wanted = PRECISIONS if precision == "auto" else (precision,)
    bf16_ok, device = native_bf16()
    pairs = []
    for p in wanted:
        if p != "fp32" and data is None:
            if precision != "auto":
                need_calibration(p, data)
            continue
        if p == "bf16" and not bf16_ok:
            skipped["bf16"] = f"this {device} has no native bf16"
            continue
        ends = (True,)  # fp32 has no ends to keep; int8 always keeps them
        if p == "bf16":
            ends = (True, False) if fp32_ends is None else (fp32_ends,)
        pairs += [(e.name, p, end) for e in installed if p in e.precisions for end in ends]
    return pairs, skipped


def label(engine: str, precision: str, streams: int = 1, fp32_ends: bool = True) -> str:
    """``engine/precision``, "whole graph" for a reduced one without fp32 ends, the lanes when
    more than one (the keys of ``timings``)."""
    whole = "" if fp32_ends or precision == "fp32" else " whole graph"
    return f"{engine}/{precision}{whole}" + (f" x{streams} streams" if streams > 1 else "")


def _measure(model, pairs, batch, check, reference) -> Predictor:
    """Build and time every (engine, precision), then the fastest in lanes; the fastest wins."""
    built, timings, refused = {}, {}, {}

    def attempt(engine, precision, fp32_ends=True, streams=1):
        key = label(engine, precision, streams, fp32_ends)
        try:
            built[key] = _build(
                model, engine, precision, batch, check, reference, streams, fp32_ends
            )
        except ZooError as e:
            refused[key] = str(e)
            return
        timings[key] = _images_per_s(built[key], check)

    for engine, precision, fp32_ends in pairs:
        attempt(engine, precision, fp32_ends)
    if not built:
        raise AgreementError(
            f"engine='auto': no engine/precision passed the agreement checks here: "
            f"{json.dumps(refused)}. Use precision='fp32'."
        )
    best = built[max(timings, key=timings.get)]
    for streams in stream_choices(best.engine, batch)[1:]:
        attempt(best.engine, best.precision, best.fp32_ends, streams)
    chosen = built[max(timings, key=timings.get)]
    chosen.timings, chosen.refused = timings, refused
    return chosen


def _auto(model, precision, batch, data, check, reference, fp32_ends=None) -> Predictor:
    pairs, skipped = _candidates(precision, data, fp32_ends)
    key = _fingerprint(model, batch, pairs, data)
    cached = _read_cache().get(key)
    choice = cached and [cached.get("engine"), cached.get("precision"), cached.get("fp32_ends")]
    if cached and choice in [list(p) for p in pairs]:
        try:
            chosen = _build(
                model,
                cached["engine"],
                cached["precision"],
                batch,
                check,
                reference,
                int(cached.get("streams", 1)),
                bool(cached["fp32_ends"]),
            )
        except ZooError:  # new calibration data it no longer agrees on: measure again
            cached = None
        else:
            chosen.timings, chosen.refused = cached.get("timings", {}), cached.get("refused", {})
    if not cached:
        chosen = _measure(model, pairs, batch, check, reference)
        _write_cache(
            key,
            {
                "engine": chosen.engine,
                "precision": chosen.precision,
                "streams": chosen.streams,
                "fp32_ends": chosen.fp32_ends,
                "timings": chosen.timings,
                "refused": chosen.refused,
                "measured": time.strftime("%Y-%m-%d %H:%M:%S"),
            },
        )
    optional = [name for name in ENGINES if name != "tensorflow"]
    if all(name in skipped for name in optional):
        chosen.set_note(
            "no optional inference engine is installed ("
            + "; ".join(skipped[n] for n in optional)
            + "): running on TensorFlow."
        )
        log.warning("zoo.infer: %s", chosen.note)
    else:
        chosen.set_note(f"auto chose {chosen.label} (images/s: {chosen.timings}).")
    return chosen


def compile_for_inference(
    model,
    engine: str = "auto",
    precision: str = "auto",
    batch: int = 8,
    calibration_data=None,
    streams: int = 1,
    fp32_ends: bool | None = None,
) -> Predictor:
    """``model`` on an inference engine, checked against its own Keras fp32 outputs.

    Args:
        model: a Keras model, a ``.keras`` path or a zoo name (``"simple_cnn.phantom"``).
        engine: ``"auto"`` (the fastest installed engine that agrees, measured once per machine and
            cached under ZOO_HOME), ``"tensorflow"``, ``"onnxruntime"`` or ``"openvino"``.
        precision: ``"fp32"``, ``"bf16"`` (native bf16 CPUs/GPUs only), ``"int8"`` (post-training
            quantization), or ``"auto"``: fp32, and with ``engine="auto"`` also bf16 / int8 when
            ``calibration_data`` is given and they meet the agreement targets on it.
        batch: images per engine call (OpenVINO compiles this batch size statically).
        calibration_data: typical inputs as the model takes them (N, *input_shape): int8 ranges are
            calibrated on the first 128, and agreement is checked on all of them. Required for
            bf16 and int8.
        streams: parallel lanes a batch is split into, on an engine that has them (OpenVINO
            streams; others run one). ``engine="auto"`` measures 1 and one per core instead.
        fp32_ends: bf16 keeps the stem and head fp32 (True) or runs one whole bf16 graph
            (False, faster where the cut costs; int8 always keeps them). None: True for a named
            engine; ``engine="auto"`` tries both and keeps the fastest that agrees.

    Returns:
        A :class:`Predictor`; ``engine``, ``precision``, ``agreement`` and ``note`` say what runs.
    """
    for name, value in (("batch", batch), ("streams", streams)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InvalidArgumentError(
                f"{name}={value!r}: give a positive integer (batch e.g. 8, 1 for one study at a "
                "time; streams 1, or up to one per core)."
            )
    if precision != "auto" and precision not in PRECISIONS:
        raise InvalidArgumentError(
            f"precision={precision!r}: use 'auto', 'fp32', 'bf16' or 'int8'."
        )
    if engine != "auto":
        ENGINES.check(engine)
    model = resolve_model(model)
    shape = tuple(model.inputs[0].shape[1:])
    data = (
        None
        if calibration_data is None
        else check_images(calibration_data, shape, "calibration_data")
    )
    if data is not None and len(data) == 0:
        raise InvalidArgumentError("calibration_data is empty; give a few hundred typical inputs.")
    check = data if data is not None else _probe(model, batch)
    reference = keras_outputs(model, check)
    if engine == "auto":
        return _auto(model, precision, batch, data, check, reference, fp32_ends)
    if precision in ("bf16", "int8"):
        need_calibration(precision, data)
    lanes = min(streams, batch) if ENGINES.get(engine).streams else 1
    chosen = _build(
        model,
        engine,
        "fp32" if precision == "auto" else precision,
        batch,
        check,
        reference,
        lanes,
        fp32_ends is not False,
    )
    chosen.set_note(f"engine={engine!r} as asked.")
    return chosen
