"""zoo.compile_for_inference: every engine/precision against the Keras fp32 model on the shipped
checkpoint and 200 held-out phantoms; refusals, the auto choice and its cache."""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

import zoo
from zoo.data.synthetic import make_phantoms
from zoo.errors import (
    AgreementError,
    InputShapeError,
    InvalidArgumentError,
    OptionalDependencyError,
)
from zoo.infer import engines as engines_mod
from zoo.infer import predictor as predictor_mod
from zoo.infer.engines import ENGINES, Engine, native_bf16
from zoo.registry import Registry

# the checkpoint was trained on seed 0 and validated on seed 1 (tools/train_demo_checkpoint.py)
HELD_OUT_SEED = 2026


@pytest.fixture(scope="module")
def phantom():
    """The shipped trained checkpoint, 200 held-out phantoms and its own fp32 outputs on them."""
    model = zoo.load("simple_cnn.phantom")
    x = make_phantoms(200, size=64, seed=HELD_OUT_SEED, contrast=(0.12, 0.4)).images
    return model, x, model(x, training=False).numpy()


def _independent(reference, out):
    """top-1 agreement and max |delta p|, computed here without zoo.infer."""
    return float(np.mean(reference.argmax(-1) == out.argmax(-1))), float(
        np.abs(reference - out).max()
    )


def test_tensorflow_fp32_matches_keras(phantom):
    model, x, reference = phantom
    predictor = zoo.compile_for_inference(model, engine="tensorflow", precision="fp32", batch=64)
    assert (predictor.engine, predictor.precision) == ("tensorflow", "fp32")
    out = predictor.predict(x)
    assert out.shape == reference.shape
    assert np.abs(out - reference).max() <= 1e-4 * max(1.0, np.abs(reference).max())


def _skip_unless_runs(engine, precision):
    reason = ENGINES[engine].missing()
    if reason:
        pytest.skip(f"engine {engine!r} not installed here: {reason}")
    if precision == "bf16" and not native_bf16()[0]:
        pytest.skip(f"bf16 runs only on native bf16 hardware; this is a {native_bf16()[1]}")
    if precision == "int8" and importlib.util.find_spec("onnxruntime") is None:
        pytest.skip("int8 quantizes with onnxruntime.quantization, not installed here")


AGREE = [
    ("onnxruntime", "fp32"),
    ("openvino", "fp32"),
    ("tensorflow", "bf16"),
    ("openvino", "bf16"),
]


@pytest.mark.parametrize(("engine", "precision"), AGREE, ids=[f"{e}-{p}" for e, p in AGREE])
def test_engine_meets_the_agreement_targets(phantom, engine, precision):
    """On the 200 held-out phantoms: fp32 within 1e-4, bf16 top-1 >= 99% and max |dp| <= 0.02."""
    _skip_unless_runs(engine, precision)
    model, x, reference = phantom
    predictor = zoo.compile_for_inference(
        model, engine=engine, precision=precision, batch=50, calibration_data=x
    )
    out = predictor.predict(x)
    top1, delta = _independent(reference, out)
    if precision == "fp32":
        assert delta <= 1e-4 * max(1.0, np.abs(reference).max())
        assert "fp32" not in predictor.note
    else:
        assert top1 >= 0.99 and delta <= 0.02, (top1, delta)
        assert "kept in fp32: stem preprocess..stage1_pool" in predictor.note
        assert "head head_pool, head_fc" in predictor.note
    assert predictor.agreement.n == len(x)
    assert predictor.agreement.max_delta == pytest.approx(delta, abs=1e-6)


INT8 = ["onnxruntime", "openvino"]


@pytest.mark.parametrize("engine", INT8)
def test_int8_misses_the_targets_on_this_checkpoint_and_is_refused(phantom, engine):
    """int8 cannot meet max |dp| <= 0.02 on this checkpoint (per-channel int8 weights alone move
    p by 0.04): it is refused with its numbers, which are really over the target, and keeping
    the stem and head in fp32 still cuts the error of quantizing every layer."""
    _skip_unless_runs(engine, "int8")
    model, x, reference = phantom
    with pytest.raises(AgreementError) as caught:
        zoo.compile_for_inference(model, engine=engine, precision="int8", calibration_data=x)
    top1, delta = _independent(reference, caught.value.outputs[0])
    assert top1 < 0.99 or delta > 0.02, (top1, delta)
    assert f"engine={engine!r}, precision='int8'" in str(caught.value)
    assert f"{delta:.4f}" in str(caught.value), "the refusal names the measured max |delta p|"
    with tempfile.TemporaryDirectory() as tmp:  # every layer int8, as before the fp32 split
        whole = engines_mod._onnxruntime_part(model, "int8", 50, x, Path(tmp))
        everything = np.concatenate([whole(x[i : i + 50])[0] for i in range(0, len(x), 50)])
    assert delta < 0.6 * _independent(reference, everything)[1]


def _noisy_engine(offset):
    """An engine whose outputs are TensorFlow's plus ``offset``: an engine that does not agree."""

    def build(model, precision, batch, calibration_data, workdir, streams=1):
        run = engines_mod._build_tensorflow(model, "fp32", batch, None, workdir)
        return lambda x: [o + offset for o in run(x)]

    return Engine("noisy", None, "-", ("fp32",), build)


def test_an_engine_that_disagrees_is_refused_with_numbers(phantom, monkeypatch):
    model, _, _ = phantom
    monkeypatch.setitem(ENGINES._items, "noisy", _noisy_engine(0.003))
    with pytest.raises(
        AgreementError, match=r"engine='noisy', precision='fp32'.*max \|diff\| 3\.00e-03 > 1e-04"
    ):
        zoo.compile_for_inference(model, engine="noisy", precision="fp32")


def test_auto_measures_once_and_caches_the_choice(phantom, monkeypatch, _isolated_zoo):
    model, x, reference = phantom
    fake = Registry(
        "inference engine", {"tensorflow": ENGINES["tensorflow"], "noisy": _noisy_engine(0.0)}
    )
    monkeypatch.setattr(predictor_mod, "ENGINES", fake)
    monkeypatch.setattr(engines_mod, "ENGINES", fake)
    speeds = {"tensorflow": 100.0, "noisy": 300.0}
    monkeypatch.setattr(predictor_mod, "_images_per_s", lambda p, data: speeds[p.engine])
    first = zoo.compile_for_inference(model, batch=16)
    assert (first.engine, first.precision) == ("noisy", "fp32")
    assert first.timings == {"tensorflow/fp32": 100.0, "noisy/fp32": 300.0}
    cache = json.loads((_isolated_zoo / "infer" / "auto.json").read_text())
    assert [(r["engine"], r["precision"]) for r in cache.values()] == [("noisy", "fp32")]

    def no_measuring(*args):
        raise AssertionError("auto measured again although the choice was cached")

    monkeypatch.setattr(predictor_mod, "_images_per_s", no_measuring)
    again = zoo.compile_for_inference(model, batch=16)
    assert (again.engine, again.timings) == ("noisy", first.timings)
    np.testing.assert_allclose(again.predict(x[:20]), reference[:20], atol=1e-5)
    # another batch size is another measurement
    with pytest.raises(AssertionError, match="measured again"):
        zoo.compile_for_inference(model, batch=8)


def test_auto_without_optional_engines_says_it_runs_tensorflow(phantom, monkeypatch, caplog):
    model, x, reference = phantom
    missing = Engine("openvino", "zoo_no_such_package", "medzoo[openvino]", ("fp32",), None)
    fake = Registry("inference engine", {"tensorflow": ENGINES["tensorflow"], "openvino": missing})
    monkeypatch.setattr(predictor_mod, "ENGINES", fake)
    monkeypatch.setattr(engines_mod, "ENGINES", fake)
    with caplog.at_level(logging.WARNING, logger="zoo.infer"):
        predictor = zoo.compile_for_inference(model, batch=32)
    assert predictor.engine == "tensorflow"
    assert "running on TensorFlow" in predictor.note and "medzoo[openvino]" in predictor.note
    assert "running on TensorFlow" in caplog.text
    np.testing.assert_allclose(predictor(x[:40]), reference[:40], atol=1e-5)


def test_arguments_are_checked_before_building(phantom, monkeypatch):
    model, x, _ = phantom
    predictor = zoo.compile_for_inference(model, engine="tensorflow", precision="fp32")
    with pytest.raises(
        InputShapeError, match=r"images of shape \(64, 64, 1\).*\(N, 64, 64, 1\).*x\[None\]"
    ):
        predictor.predict(x[0])
    with pytest.raises(InputShapeError, match=r"\(3, 32, 32, 1\)"):
        predictor.predict(np.zeros((3, 32, 32, 1)))
    with pytest.raises(InvalidArgumentError, match=r"precision='int8' needs calibration_data"):
        zoo.compile_for_inference(model, engine="tensorflow", precision="int8")
    with pytest.raises(
        InvalidArgumentError, match=r"engine='tensorflow' has no int8 path.*onnxruntime"
    ):
        zoo.compile_for_inference(
            model, engine="tensorflow", precision="int8", calibration_data=x[:8]
        )
    with pytest.raises(InvalidArgumentError, match=r"engine='openvno'.*openvino"):
        zoo.compile_for_inference(model, engine="openvno")
    with pytest.raises(InvalidArgumentError, match=r"batch=0"):
        zoo.compile_for_inference(model, batch=0)
    monkeypatch.setitem(
        ENGINES._items,
        "absent",
        Engine("absent", "zoo_no_such_package", "medzoo[x]", ("fp32",), None),
    )
    with pytest.raises(
        OptionalDependencyError, match=r"engine='absent'.*pip install \"medzoo\[x\]\""
    ):
        zoo.compile_for_inference(model, engine="absent", precision="fp32")


@pytest.mark.parametrize(
    ("module", "engine", "extra"),
    [("onnxruntime", "onnxruntime", "onnx"), ("openvino", "openvino", "openvino")],
)
def test_a_missing_engine_names_its_extra(phantom, monkeypatch, module, engine, extra):
    model, _, _ = phantom
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    with pytest.raises(OptionalDependencyError) as caught:
        zoo.compile_for_inference(model, engine=engine, precision="fp32")
    assert f'pip install "medzoo[{extra}]"' in str(caught.value) and "\n" not in str(caught.value)


def test_openvino_lanes_give_the_same_outputs_as_one_request(phantom):
    """A batch split over two OpenVINO streams (ragged: 21 images, batch 8 -> lanes of 4, the
    last padded) returns every image's outputs in order, equal to Keras fp32."""
    _skip_unless_runs("openvino", "fp32")
    model, x, reference = phantom
    predictor = zoo.compile_for_inference(model, engine="openvino", batch=8, streams=2)
    assert (predictor.streams, predictor.label) == (2, "openvino/fp32 x2 streams")
    np.testing.assert_allclose(predictor.predict(x[:21]), reference[:21], atol=1e-4)


def _laned_engine(built):
    """TensorFlow fp32 split into ``streams`` lanes by zoo.infer.engines.in_lanes."""

    def build(model, precision, batch, calibration_data, workdir, streams=1):
        run = engines_mod._build_tensorflow(model, "fp32", batch, None, workdir)
        built.append(streams)
        return engines_mod.in_lanes(lambda x, lane=0: run(x), streams)

    return Engine("laned", None, "-", ("fp32",), build, streams=True)


def test_auto_tries_the_winner_in_lanes_and_caches_the_lanes(
    phantom, monkeypatch, _isolated_zoo
):
    model, x, reference = phantom
    built = []
    fake = Registry(
        "inference engine", {"tensorflow": ENGINES["tensorflow"], "laned": _laned_engine(built)}
    )
    monkeypatch.setattr(predictor_mod, "ENGINES", fake)
    monkeypatch.setattr(engines_mod, "ENGINES", fake)
    monkeypatch.setattr(engines_mod.os, "cpu_count", lambda: 2)
    speeds = {"tensorflow": 100.0, "laned": 200.0}
    monkeypatch.setattr(
        predictor_mod, "_images_per_s", lambda p, data: speeds[p.engine] * (1 + 0.5 * (p.streams > 1))
    )
    first = zoo.compile_for_inference(model, batch=16)
    assert first.label == "laned/fp32 x2 streams" and built == [1, 2]
    assert first.timings == {
        "tensorflow/fp32": 100.0, "laned/fp32": 200.0, "laned/fp32 x2 streams": 300.0
    }
    np.testing.assert_allclose(first.predict(x[:21]), reference[:21], atol=1e-5)
    cache = json.loads((_isolated_zoo / "infer" / "auto.json").read_text())
    assert [r["streams"] for r in cache.values()] == [2]
    again = zoo.compile_for_inference(model, batch=16)  # from the cache: one build, in lanes
    assert again.label == first.label and built == [1, 2, 2]
    with pytest.raises(InvalidArgumentError, match="streams=0: give a positive integer"):
        zoo.compile_for_inference(model, engine="laned", streams=0)


def _bf16_engine(built):
    """An engine with a 'bf16' that runs TensorFlow fp32 (so it agrees exactly) and records
    whether it was asked for the whole graph (``fp32_ends=False``)."""

    def build(model, precision, batch, calibration_data, workdir, streams=1, fp32_ends=True):
        built.append(fp32_ends)
        return engines_mod._build_tensorflow(model, "fp32", batch, None, workdir)

    return Engine("halves", None, "-", ("fp32", "bf16"), build)


def test_auto_tries_bf16_whole_and_cut_and_caches_which(phantom, monkeypatch, _isolated_zoo):
    """bf16 candidates come twice, with fp32 ends and as a whole graph; the faster that agrees
    wins, its label says so, and the cached choice rebuilds the same variant."""
    model, x, reference = phantom
    built = []
    fake = Registry("inference engine", {"halves": _bf16_engine(built)})
    monkeypatch.setattr(predictor_mod, "ENGINES", fake)
    monkeypatch.setattr(engines_mod, "ENGINES", fake)
    monkeypatch.setattr(predictor_mod, "native_bf16", lambda: (True, "test CPU"))
    speeds = {"halves/fp32": 100.0, "halves/bf16": 150.0, "halves/bf16 whole graph": 250.0}
    monkeypatch.setattr(predictor_mod, "_images_per_s", lambda p, data: speeds[p.label])
    first = zoo.compile_for_inference(model, batch=16, calibration_data=x)
    assert (first.label, first.fp32_ends) == ("halves/bf16 whole graph", False)
    assert first.timings == speeds and built == [True, True, False]
    assert "nothing kept in fp32" in first.note
    np.testing.assert_allclose(first.predict(x[:20]), reference[:20], atol=1e-5)
    cache = json.loads((_isolated_zoo / "infer" / "auto.json").read_text())
    assert [r["fp32_ends"] for r in cache.values()] == [False]
    again = zoo.compile_for_inference(model, batch=16, calibration_data=x)
    assert again.label == first.label and built[-1] is False and len(built) == 4
    kept = zoo.compile_for_inference(model, batch=16, calibration_data=x, fp32_ends=True)
    assert kept.label == "halves/bf16" and kept.timings == {
        k: v for k, v in speeds.items() if "whole" not in k
    }


def test_int8_always_keeps_its_fp32_ends(phantom):
    model, x, _ = phantom
    with pytest.raises(InvalidArgumentError, match=r"int8 always keeps the stem and head fp32"):
        engines_mod.build_runner("tensorflow", model, "int8", 8, x[:8], fp32_ends=False)


def test_openvino_bf16_whole_graph_is_checked_like_any_other(phantom):
    """One bf16 graph, nothing kept fp32: its outputs differ from the cut graph's, and the
    predictor accepts it only within the targets (on this checkpoint it measured 0.035 > 0.02)."""
    _skip_unless_runs("openvino", "bf16")
    model, x, reference = phantom
    cut = zoo.compile_for_inference(model, engine="openvino", precision="bf16", calibration_data=x)
    assert cut.fp32_ends and "stem" in cut.kept_fp32
    try:
        whole = zoo.compile_for_inference(
            model, engine="openvino", precision="bf16", calibration_data=x, fp32_ends=False
        )
    except AgreementError as caught:
        assert "whole graph, fp32_ends=False" in str(caught)
        outputs = caught.outputs[0]
        top1, delta = _independent(reference, outputs)
        assert top1 < 0.99 or delta > 0.02, (top1, delta)
    else:
        assert whole.label == "openvino/bf16 whole graph"
        outputs = whole.predict(x)
        top1, delta = _independent(reference, outputs)
        assert top1 >= 0.99 and delta <= 0.02, (top1, delta)
    assert np.abs(outputs - cut.predict(x)).max() > 1e-4, "the whole graph really runs bf16 ends"


def test_auto_caches_its_choice_when_the_whole_graph_is_asked_for(
    phantom, monkeypatch, _isolated_zoo
):
    """fp32_ends=False concerns bf16 only: an fp32 winner is still found in the cache next time."""
    model, x, reference = phantom
    fake = Registry("inference engine", {"tensorflow": ENGINES["tensorflow"]})
    monkeypatch.setattr(predictor_mod, "ENGINES", fake)
    monkeypatch.setattr(engines_mod, "ENGINES", fake)
    monkeypatch.setattr(predictor_mod, "_images_per_s", lambda p, data: 100.0)
    first = zoo.compile_for_inference(model, batch=16, fp32_ends=False)
    assert (first.label, first.fp32_ends) == ("tensorflow/fp32", True)

    def no_measuring(*args):
        raise AssertionError("auto measured again although the choice was cached")

    monkeypatch.setattr(predictor_mod, "_images_per_s", no_measuring)
    again = zoo.compile_for_inference(model, batch=16, fp32_ends=False)
    assert again.label == first.label
    np.testing.assert_allclose(again.predict(x[:20]), reference[:20], atol=1e-5)
