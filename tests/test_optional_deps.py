"""Optional features without their extra: one line naming what to install, never a traceback.

The audit test reads every import in zoo/ and fails on a third-party module that is neither a
core dependency (setup.cfg install_requires) nor listed in OPTIONAL below with a check that
simulates its absence (``sys.modules[name] = None``).
"""

from __future__ import annotations

import ast
import configparser
import importlib.metadata
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import write_card

from zoo.errors import OptionalDependencyError, ZooError

ROOT = Path(__file__).resolve().parents[1]

# optional top-level module -> what its absence must tell the user
OPTIONAL = {
    "torch": r'pip install "medzoo\[torch\]"',
    "tf2onnx": r"medzoo\[onnx\]",
    # zoo.infer's engines; their absence is checked in tests/infer (test_predictor, test_export_openvino)
    "onnxruntime": r'pip install "medzoo\[onnx\]"',
    "openvino": r"medzoo\[openvino\]",
}


def _imported_modules() -> dict[str, str]:
    """Top-level module -> first file under zoo/ that imports it (absolute imports only)."""
    found = {}
    for path in sorted((ROOT / "zoo").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                found.setdefault(name.split(".")[0], str(path.relative_to(ROOT)))
    return found


def _core_distributions() -> set[str]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    lines = cfg["options"]["install_requires"].split("\n")
    return {re.split(r"[<>=!~ ;\[]", line.strip())[0].lower().replace("_", "-") for line in lines if line.strip()}


def test_every_third_party_import_is_core_or_an_audited_extra():
    core = _core_distributions()
    dists = importlib.metadata.packages_distributions()
    unaudited = {}
    for module, where in _imported_modules().items():
        if module == "zoo" or module in sys.stdlib_module_names or module in OPTIONAL:
            continue
        owners = {d.lower().replace("_", "-") for d in dists.get(module, [])}
        if not owners & core:
            unaudited[module] = where
    assert not unaudited, f"imports that are neither core nor audited optional extras: {unaudited}"


def test_core_dependencies_cover_the_demo_and_stay_apache_compatible():
    """pip install . brings DICOM reading (RLE, JPEG 2000) and matplotlib; GPL decoders stay an extra."""
    core = _core_distributions()
    assert {"pydicom", "pylibjpeg", "pylibjpeg-openjpeg", "pylibjpeg-rle", "matplotlib"} <= core
    assert "pylibjpeg-libjpeg" not in core  # GPL-3.0: only in the `dicom` extra
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    assert "pylibjpeg-libjpeg" in cfg["options.extras_require"]["dicom"]
    assert not re.search(r"^\s*torch\s*==", cfg["options.extras_require"]["test"], re.M)  # no CUDA-sized pin


def _one_line(error: BaseException, hint: str) -> None:
    text = str(error)
    assert isinstance(error, ZooError), type(error)
    assert "\n" not in text and re.search(hint, text), text


def test_torch_missing_names_the_extra(tmp_path, monkeypatch):
    from zoo.weights.convert_torch import read_state_dict

    monkeypatch.setitem(sys.modules, "torch", None)  # as if not installed
    with pytest.raises(OptionalDependencyError) as caught:
        read_state_dict(tmp_path / "alexnet.pth")
    _one_line(caught.value, OPTIONAL["torch"])


def test_torch_missing_fails_before_downloading(zoo_env, server, monkeypatch):
    """`zoo.load("alexnet", pretrained=...)` on a torch checkpoint without torch: no download, one line."""
    import zoo

    data = b"a torch checkpoint that is never downloaded"
    url = server.add("alexnet-test.pth", data)
    write_card(zoo_env / "cards", "alexnet", "test", url, data, format="torch-state-dict", include_top=True,
               num_classes=1000, preprocess="torch", input_size=[64, 64, 3])
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(OptionalDependencyError) as caught:
        zoo.load("alexnet", pretrained="test")
    _one_line(caught.value, OPTIONAL["torch"])
    assert "alexnet.test" in str(caught.value) and server.gets("alexnet-test.pth") == 0


def test_torch_missing_is_one_line_from_the_cli(tmp_path, zoo_env, monkeypatch, capsys):
    """`zoo export alexnet.test ...` on a torch checkpoint without torch: exit 2 and one line."""
    from zoo.cli import main

    pth = tmp_path / "alexnet-test.pth"
    pth.write_bytes(b"not read: torch is missing")
    write_card(zoo_env / "cards", "alexnet", "test", str(pth), pth.read_bytes(), format="torch-state-dict",
               include_top=True, num_classes=1000, preprocess="torch", input_size=[64, 64, 3])
    monkeypatch.setitem(sys.modules, "torch", None)
    assert main(["export", "alexnet.test", str(tmp_path / "sm")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("zoo export: ") and re.search(OPTIONAL["torch"], err), err


def test_onnx_converter_missing_is_one_line(tmp_path, monkeypatch):
    import zoo

    model = zoo.load("simple_cnn", in_chans=1, input_shape=(32, 32), num_classes=2)
    monkeypatch.setitem(sys.modules, "tf2onnx", None)
    with pytest.raises(ZooError) as caught:
        zoo.export(model, tmp_path / "m.onnx", "onnx")
    _one_line(caught.value, OPTIONAL["tf2onnx"])
    assert model(np.zeros((1, 32, 32, 1), "float32")).shape == (1, 2)  # the model is untouched
