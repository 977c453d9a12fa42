"""The package layering: the import-linter contract holds, the facade's names are modules where
they must be, every demo lives in zoo.demo, and the 2D/3D layer choice has one home."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "zoo"


def test_the_layer_contract_holds():
    """`lint-imports` as CI runs it (no TensorFlow, no cache written). A subprocess: in process,
    import-linter's console closes the stream pytest captures into, failing later tests."""
    pytest.importorskip("importlinter")
    run = subprocess.run([sys.executable, "-c", "import sys; from importlinter.cli import lint_imports; "
                          "sys.exit(lint_imports(config_filename=sys.argv[1], no_cache=True, no_logo=True))",
                          str(ROOT / ".importlinter")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]


def test_zoo_export_is_the_module_and_still_exports_when_called(tmp_path):
    import zoo
    import zoo.export as m
    from zoo.export import export

    assert m is sys.modules["zoo.export"] is zoo.export
    assert m.FORMATS and callable(m.check_serializable) and callable(export)
    with pytest.raises(Exception, match="not a Keras model"):  # the call reaches export() itself
        zoo.export("not a model", tmp_path / "out")


def test_packages_export_library_names_and_demos_live_in_zoo_demo():
    import zoo.heads
    import zoo.ssl

    assert "demo_step" not in dir(zoo.heads) and "demo_step" not in dir(zoo.ssl)
    assert {"attach_head", "make_pooling", "mil_losses"} <= set(zoo.heads.__all__)
    assert zoo.heads.make_pooling is importlib.import_module("zoo.heads.mil").make_pooling
    steps = sorted(p.relative_to(ZOO).as_posix() for p in ZOO.rglob("*.py")
                   if re.search(r"^def demo_step\(", p.read_text(), re.M))
    assert steps == ["demo/dicom.py", "demo/mil.py", "demo/ssl.py"], steps
    for step in ("dicom", "mil", "ssl"):
        assert callable(importlib.import_module(f"zoo.demo.{step}").demo_step)


def _paired_2d_3d(tree) -> list[int]:
    """Lines of conditionals and dicts naming both a *2D and a *3D class: a 2D/3D choice."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.IfExp | ast.Dict | ast.If):
            names = {n.attr if isinstance(n, ast.Attribute) else getattr(n, "id", "")
                     for n in ast.walk(node)}
            stems2 = {n[:-2] for n in names if re.fullmatch(r"[A-Z]\w*2D", n)}
            stems3 = {n[:-2] for n in names if re.fullmatch(r"[A-Z]\w*3D", n)}
            if stems2 & stems3:
                lines.append(node.lineno)
    return lines


def test_the_2d_3d_layer_choice_has_one_home():
    """Builders ask zoo.layers.dims for Conv2D/Conv3D etc.; nobody else picks between the pairs."""
    found = {}
    for path in sorted(ZOO.rglob("*.py")):
        if path == ZOO / "layers" / "dims.py":
            continue
        lines = _paired_2d_3d(ast.parse(path.read_text(), str(path)))
        if lines:
            found[path.relative_to(ROOT).as_posix()] = lines
    assert not found, f"2D/3D layer choices outside zoo/layers/dims.py: {found}"


def test_the_ct_window_formula_has_one_home():
    """``... / (width - 1)`` (DICOM's linear window) is computed in zoo/layers/windowing.py only."""
    found = []
    for path in sorted(ZOO.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            divisor = isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and node.right
            if (isinstance(divisor, ast.BinOp) and isinstance(divisor.op, ast.Sub)
                    and getattr(divisor.left, "id", None) in ("w", "width", "widths")
                    and getattr(divisor.right, "value", None) == 1):
                found.append(f"{path.relative_to(ROOT).as_posix()}:{node.lineno}")
    assert found and all(f.startswith("zoo/layers/windowing.py:") for f in found), found


@pytest.mark.parametrize("dims", [2, 3])
def test_dims_lookup_gives_the_pair_of_each_kind(dims):
    import keras

    from zoo.layers import dims as D

    for kind, names in D.KINDS.items():
        assert D.layer(kind, dims) is getattr(keras.layers, names[dims - 2])
    assert D.conv(dims) is (keras.layers.Conv2D, keras.layers.Conv3D)[dims - 2]
    avg = (keras.layers.AveragePooling2D, keras.layers.AveragePooling3D)[dims - 2]
    assert D.pool("avg", dims) is avg
    x = keras.Input((8,) * dims + (3,))
    assert D.spatial_dims_of(x) == dims
    assert tuple(D.linear_upsample(dims)(x).shape[1:-1]) == (16,) * dims


def test_dims_lookup_refuses_other_dims_and_names_a_near_miss():
    from zoo.errors import InvalidArgumentError
    from zoo.layers import dims as D
    from zoo.registry import UnknownNameError

    for bad in (1, 4, True, "2"):
        with pytest.raises(InvalidArgumentError, match="only 2D and 3D"):
            D.conv(bad)
    with pytest.raises(UnknownNameError, match="Did you mean 'max_pool'"):
        D.layer("max_pol", 2)
