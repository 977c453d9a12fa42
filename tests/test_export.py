"""zoo.export: SavedModel in a fresh process, TFLite float/dynamic/int8, ONNX, and refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from zoo.data.synthetic import make_phantoms
from zoo.errors import ExportError, InvalidArgumentError, OptionalDependencyError, OutputError
from zoo.export import export

FRESH = """
import json, sys
import numpy as np
import tensorflow as tf
data = np.load(sys.argv[2])
loaded = tf.saved_model.load(sys.argv[1])
serve = loaded.signatures["serving_default"]
out = serve(image=tf.constant(data["x"]))
np.savez(sys.argv[3], **{k: v.numpy() for k, v in out.items()})
print(json.dumps({"inputs": sorted(serve.structured_input_signature[1]), "outputs": sorted(out),
                  "zoo_imported": "zoo" in sys.modules}))
"""


@pytest.fixture(scope="module")
def model():
    return zoo.load("simple_cnn.phantom", in_chans=1)  # the shipped, trained checkpoint (64x64 grey)


@pytest.fixture(scope="module")
def test_set():
    return make_phantoms(200, seed=321, contrast=(0.12, 0.4)).images


@pytest.mark.slow
def test_saved_model_in_a_fresh_process_gives_the_same_outputs(model, tmp_path):
    x = make_phantoms(6, seed=5).images
    path = export(model, tmp_path / "sm")
    np.savez(tmp_path / "in.npz", x=x)
    script = tmp_path / "fresh.py"
    script.write_text(FRESH)
    proc = subprocess.run([sys.executable, str(script), str(path), str(tmp_path / "in.npz"), str(tmp_path / "out.npz")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info == {"inputs": ["image"], "outputs": ["head_fc"], "zoo_imported": False}
    np.testing.assert_allclose(np.load(tmp_path / "out.npz")["head_fc"], model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    meta = json.loads((path / "zoo_export.json").read_text())
    assert meta["inputs"] == {"image": {"shape": [None, 64, 64, 1], "dtype": "float32"}}
    assert meta["input_contract"]["mode"] == "tf" and meta["input_contract"]["input_range"] == [0.0, 255.0]


def _tflite(path, x):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
        interpreter = tf.lite.Interpreter(model_path=str(path))
    runner = interpreter.get_signature_runner("serving_default")
    return np.concatenate([runner(image=x[i:i + 50])["head_fc"] for i in range(0, len(x), 50)])


@pytest.mark.slow
def test_tflite_float_and_dynamic_range(model, test_set, tmp_path):
    reference = model.predict(test_set, verbose=0)
    flat = export(model, tmp_path / "m.tflite", "tflite")
    np.testing.assert_allclose(_tflite(flat, test_set), reference, atol=1e-4)
    dynamic = export(model, tmp_path / "m_dynamic.tflite", "tflite", quantize="dynamic")
    assert dynamic.stat().st_size < 0.5 * flat.stat().st_size  # int8 weights
    assert np.mean(_tflite(dynamic, test_set).argmax(-1) == reference.argmax(-1)) >= 0.98


def test_tflite_int8_agrees_on_top1(model, test_set, tmp_path):
    representative = make_phantoms(100, seed=77, contrast=(0.12, 0.4)).images
    path = export(model, tmp_path / "m_int8.tflite", "tflite", quantize="int8", representative_data=representative)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(model_path=str(path))
    kinds = {d["dtype"] for d in interpreter.get_tensor_details() if "conv" in d["name"].lower()}
    assert np.int8 in kinds  # full-integer kernels
    agreement = np.mean(_tflite(path, test_set).argmax(-1) == model.predict(test_set, verbose=0).argmax(-1))
    assert agreement >= 0.98, agreement
    meta = json.loads(path.with_name("m_int8.tflite.json").read_text())
    assert meta["quantize"] == "int8" and meta["outputs"] == {"head_fc": {"shape": [None, 2], "dtype": "float32"}}


def test_onnx_matches_keras(model, tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="onnx export is checked where onnxruntime is installed")
    x = make_phantoms(5, seed=6).images
    path = export(model, tmp_path / "m.onnx", "onnx")
    session = ort.InferenceSession(str(path))
    assert [i.name for i in session.get_inputs()] == ["image"] and [o.name for o in session.get_outputs()] == ["head_fc"]
    np.testing.assert_allclose(session.run(["head_fc"], {"image": x})[0], model.predict(x, verbose=0), atol=1e-5)


def test_onnx_without_tf2onnx_is_a_clear_error(model, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # as if not installed
    with pytest.raises(OptionalDependencyError, match=r"format='onnx' needs tf2onnx.*medzoo\[onnx\]"):
        export(model, tmp_path / "m.onnx", "onnx")


class Scale(keras.layers.Layer):
    """A custom layer whose constructor argument is missing from its config, and that is not registered."""

    def __init__(self, factor, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, x):
        return x * self.factor


def _with(layer):
    inputs = keras.Input((4,), name="image")
    return keras.Model(inputs, keras.layers.Dense(2, name="head_fc")(layer(inputs)))


def test_unserializable_layers_are_refused(tmp_path):
    with pytest.raises(ExportError, match=r"layer 'scale' \(Scale\) .* cannot be rebuilt from its config.*register_keras_serializable"):
        export(_with(Scale(2.0, name="scale")), tmp_path / "a")
    with pytest.raises(ExportError, match=r"layer 'double' \(Lambda\)"):
        export(_with(keras.layers.Lambda(lambda x: x * 2, name="double")), tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_bad_arguments(model, tmp_path):
    with pytest.raises(InvalidArgumentError, match="format='tf_lite'.*Did you mean 'tflite'"):
        export(model, tmp_path / "x", "tf_lite")
    with pytest.raises(InvalidArgumentError, match="applies to format='tflite' only"):
        export(model, tmp_path / "x", "saved_model", quantize="int8")
    with pytest.raises(InvalidArgumentError, match="quantize='fp8'"):
        export(model, tmp_path / "x", "tflite", quantize="fp8")
    with pytest.raises(ExportError, match="needs representative_data"):
        export(model, tmp_path / "x.tflite", "tflite", quantize="int8")
    with pytest.raises(ExportError, match=r"representative_data has shape \(3, 32, 32, 1\)"):
        export(model, tmp_path / "x.tflite", "tflite", quantize="int8", representative_data=np.zeros((3, 32, 32, 1)))
    (tmp_path / "exists").mkdir()
    (tmp_path / "exists" / "notes.txt").write_text("keep")
    with pytest.raises(OutputError, match="exists; pass overwrite=True"):
        export(model, tmp_path / "exists")
    with pytest.raises(InvalidArgumentError, match="give 1 distinct names"):
        export(model, tmp_path / "y", output_names=["a", "b"])
    with pytest.raises(InvalidArgumentError, match="not a Keras model"):
        export("simple_cnn", tmp_path / "z")


def _snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_h1_export_never_deletes_user_files(model, tmp_path, monkeypatch):
    """H1: an existing folder with the user's files is refused, also with overwrite=True, byte for byte intact."""
    deploy = tmp_path / "deploy"
    (deploy / "sub").mkdir(parents=True)
    (deploy / "thesis.docx").write_text("two years of work")
    (deploy / "sub" / "data.bin").write_bytes(b"\x00\x01")
    before = _snapshot(deploy)
    with pytest.raises(OutputError, match="exists; pass overwrite=True"):
        export(model, deploy)
    with pytest.raises(OutputError, match=r"did not write.*sub/data.bin, thesis.docx"):
        export(model, deploy, overwrite=True)
    assert _snapshot(deploy) == before
    # the working directory and its ancestors are refused before anything is written
    monkeypatch.chdir(deploy)
    for target in (".", "..", str(tmp_path)):
        with pytest.raises(OutputError, match="working directory"):
            export(model, target, overwrite=True)
    assert _snapshot(deploy) == before


def test_h1_a_model_export_refuses_leaves_the_folder_untouched(tmp_path):
    """H1: a two-input model fails validation before the folder is touched (was: notes.txt deleted first)."""
    d2 = tmp_path / "d2"
    d2.mkdir()
    (d2 / "notes.txt").write_text("keep")
    two = zoo.load("patch_cnn29", num_classes=3, n_scalars=2)
    with pytest.raises(ExportError, match="2 inputs"):
        export(two, d2, overwrite=True)
    assert _snapshot(d2) == {"notes.txt": b"keep"}


def test_h1_overwrite_replaces_only_a_previous_export_and_a_midway_failure_keeps_it(model, tmp_path, monkeypatch):
    target = tmp_path / "out" / "model.tflite"
    export(model, target, "tflite")
    sidecar = target.with_name("model.tflite.json")
    first = target.read_bytes()
    (tmp_path / "out" / "readme.txt").write_text("mine")
    with pytest.raises(OutputError, match="exists"):
        export(model, target, "tflite")
    # a failure midway (the converter dies after writing part of the file) keeps the old export
    export_module = sys.modules["zoo.export"]  # `import zoo.export as m` gives the function (issue 13)

    def dies(model, path, *args):
        path.write_bytes(b"half")
        raise ExportError("simulated converter crash")

    monkeypatch.setattr(export_module, "_write_tflite", dies)
    with pytest.raises(ExportError, match="simulated"):
        export(model, target, "tflite", overwrite=True)
    assert target.read_bytes() == first and sidecar.exists()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        ".zoo-manifest.json", "model.tflite", "model.tflite.json", "readme.txt"]
    monkeypatch.undo()
    # a user's file that took the sidecar's name is never replaced
    sidecar.write_text("{}")
    with pytest.raises(OutputError, match="model.tflite.json"):
        export(model, target, "tflite", overwrite=True)
    sidecar.unlink()
    export(model, target, "tflite", overwrite=True)
    assert json.loads(sidecar.read_text())["format"] == "tflite"
    assert (tmp_path / "out" / "readme.txt").read_text() == "mine"


def test_cli_export_needs_overwrite_and_names_a_missing_file(tmp_path):
    from zoo.cli import main

    assert main(["export", str(tmp_path / "missing.keras"), str(tmp_path / "o")]) == 2
    out = tmp_path / "sm"
    out.mkdir()
    (out / "x.txt").write_text("x")
    assert main(["export", "simple_cnn.phantom", str(out), "--overwrite"]) == 2
    assert (out / "x.txt").read_text() == "x"
