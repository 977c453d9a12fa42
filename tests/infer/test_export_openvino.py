"""zoo.export(format="openvino"): OpenVINO IR beside the other formats, with the same metadata."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

import zoo
from zoo.data.synthetic import make_phantoms
from zoo.errors import OptionalDependencyError, OutputError


@pytest.fixture(scope="module")
def model():
    return zoo.load("simple_cnn.phantom")


def test_openvino_export_runs_raw_pixels_like_keras(model, tmp_path):
    ov = pytest.importorskip(
        "openvino", reason="format='openvino' is checked where openvino is installed"
    )
    path = zoo.export(model, tmp_path / "ov", format="openvino")
    assert {"model.xml", "model.bin", "zoo_export.json", ".zoo-manifest.json"} <= {
        p.name for p in path.iterdir()
    }
    meta = json.loads((path / "zoo_export.json").read_text())
    assert meta["format"] == "openvino"
    assert meta["input_contract"] == json.loads(json.dumps(zoo.input_contract(model)))
    assert set(meta["inputs"]) == {"image"} and set(meta["outputs"]) == {"head_fc"}
    assert {"tensorflow", "keras"} <= set(meta["versions"])

    compiled = ov.Core().compile_model(
        str(path / "model.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
    )
    assert compiled.inputs[0].get_any_name() == "image"
    assert compiled.outputs[0].get_any_name() == "head_fc"
    x = make_phantoms(16, size=64, seed=5).images  # raw pixels in [0, 255]: preprocessing is inside
    reference = model(x, training=False).numpy()
    out = compiled(x)[0]
    assert np.abs(out - reference).max() <= 1e-4 * max(1.0, np.abs(reference).max())

    with pytest.raises(OutputError, match="exists; pass overwrite=True"):
        zoo.export(model, path, format="openvino")


def test_openvino_export_without_openvino_is_a_clear_error(model, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if not installed
    with pytest.raises(
        OptionalDependencyError, match=r"format='openvino' needs OpenVINO.*medzoo\[openvino\]"
    ):
        zoo.export(model, tmp_path / "ov", format="openvino")
    assert not (tmp_path / "ov").exists()
