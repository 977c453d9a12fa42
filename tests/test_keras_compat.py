"""zoo._keras_compat: the private Keras API the zoo relies on still works, and nothing else uses it.

When a Keras release breaks one of these tests, the message names the Keras version and the
shim function to update; no other module needs to change.
"""

from __future__ import annotations

import ast
from pathlib import Path

import keras
import pytest

from zoo import _keras_compat as compat
from zoo.errors import KerasCompatError, ZooError

ZOO = Path(__file__).resolve().parents[1] / "zoo"
PRIVATE_ATTRS = {
    "_keras_history",
    "_flatten_layers",
    "_nodes_by_depth",
    "_inbound_nodes",
    "_outbound_nodes",
}
WHY = (f"with Keras {keras.__version__} (shim written for {compat.TESTED_WITH}): "
       "update zoo/_keras_compat.py")


def _private_uses(source: str) -> list[str]:
    """Each private-Keras use in ``source``: attributes, getattr-like calls, imports."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in PRIVATE_ATTRS:
            found.append(f"line {node.lineno}: .{node.attr}")
        elif (
            isinstance(node, ast.Attribute)
            and node.attr == "src"
            and isinstance(node.value, ast.Name)
            and node.value.id == "keras"
        ):
            found.append(f"line {node.lineno}: keras.src")
        elif isinstance(node, ast.Import | ast.ImportFrom):
            modules = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
            )
            found += [
                f"line {node.lineno}: import {m}" for m in modules if m.startswith("keras.src")
            ]
        elif isinstance(node, ast.Call):
            func = (
                node.func.attr
                if isinstance(node.func, ast.Attribute)
                else getattr(node.func, "id", "")
            )
            texts = [
                a.value
                for a in node.args
                if isinstance(a, ast.Constant) and isinstance(a.value, str)
            ]
            if func in ("getattr", "hasattr", "setattr", "delattr") and PRIVATE_ATTRS & set(texts):
                found.append(f"line {node.lineno}: {func}(..., {texts})")
            if func in ("import_module", "__import__") and any(
                t.startswith("keras.src") for t in texts
            ):
                found.append(f"line {node.lineno}: {func}({texts})")
    return found


def test_checker_finds_every_kind_of_private_use():
    """The scan below could pass vacuously; it must catch each form on a planted example."""
    planted = (
        "import keras.src.backend\n"
        "from keras.src.backend.common import global_state\n"
        "a = t._keras_history.operation\n"
        "b = getattr(m, '_nodes_by_depth')\n"
        "c = hasattr(m, '_flatten_layers')\n"
        "d = keras.src.ops\n"
        "e = importlib.import_module('keras.src.utils')\n"
    )
    assert len(_private_uses(planted)) == 7, _private_uses(planted)
    assert _private_uses("m.output_names\ngetattr(m, 'layers')\nimport keras\n") == []


def test_private_keras_api_only_in_the_shim():
    offenders = {}
    for path in sorted(ZOO.rglob("*.py")):
        if path.name == "_keras_compat.py" and path.parent == ZOO:
            continue
        uses = _private_uses(path.read_text(encoding="utf-8"))
        if uses:
            offenders[str(path.relative_to(ZOO.parent))] = uses
    assert not offenders, (
        f"private Keras API outside zoo/_keras_compat.py (add a named function there): {offenders}"
    )
    assert _private_uses((ZOO / "_keras_compat.py").read_text()), (
        "the scan no longer sees the shim's own uses"
    )


@pytest.fixture(scope="module")
def nested():
    """image -> [inner: conv -> bn] -> pool -> dense, with a second output at the feature map."""
    inner_in = keras.Input((8, 8, 3))
    inner = keras.Model(
        inner_in,
        keras.layers.BatchNormalization(name="bn")(
            keras.layers.Conv2D(4, 3, name="conv")(inner_in)
        ),
        name="inner",
    )
    image = keras.Input((8, 8, 3), name="image")
    feats = inner(image)
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(feats)
    scores = keras.layers.Dense(2, name="scores")(pooled)
    return keras.Model(image, [scores, feats], name="outer"), inner, image, feats, pooled, scores


def test_producing_layer_and_inputs(nested):
    model, inner, image, feats, pooled, scores = nested
    assert compat.producing_layer(scores) is model.get_layer("scores"), WHY
    assert compat.producing_layer(feats) is inner, WHY
    assert [id(t) for t in compat.layer_inputs(scores)] == [id(pooled)], WHY
    assert [id(t) for t in compat.layer_inputs(feats)] == [id(image)], WHY
    assert compat.layer_inputs(image) == [], WHY
    assert model.output_names == ["scores", "inner"], f"public Model.output_names changed {WHY}"


def test_all_layers_sees_nested_layers(nested):
    model = nested[0]
    names = [layer.name for layer in compat.all_layers(model)]
    assert {"inner", "conv", "bn", "pool", "scores"} <= set(names), f"{names} {WHY}"
    assert "outer" not in names, WHY


def test_nodes_by_depth_runs_from_outputs_to_inputs(nested):
    model, inner, image, feats, pooled, scores = nested
    nodes = compat.nodes_by_depth(model)
    order = [n.operation.name for n in nodes]
    assert order.index("scores") < order.index("pool") < order.index("inner"), f"{order} {WHY}"
    dense = nodes[order.index("scores")]
    assert [id(t) for t in dense.inputs] == [id(pooled)] and [id(t) for t in dense.outputs] == [
        id(scores)
    ], WHY


def test_has_call_graph_tells_functional_from_sequential(nested):
    chain = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    assert compat.has_call_graph(nested[0]) and compat.has_call_graph(nested[1]), WHY
    assert not compat.has_call_graph(chain), WHY


def test_deterministic_names_repeat_and_never_collide():
    def build():
        with compat.deterministic_names():
            return keras.layers.Dense(1).name

    first, second = build(), build()
    assert first == second, f"automatic layer names differ between builds {WHY}"
    assert keras.layers.Dense(1).name != first, f"a later layer reuses a name {WHY}"


def test_a_missing_private_attribute_names_the_keras_version():
    with pytest.raises(
        KerasCompatError, match=f"producing_layer.*Keras {keras.__version__}"
    ) as info:
        compat.producing_layer(object())
    assert isinstance(info.value, ZooError)
