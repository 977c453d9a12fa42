"""One way to train: the library trains on ``zoo.train.engine.Engine`` only.

No Keras ``Model.fit`` / ``compile`` / ``train_on_batch`` call and no custom ``train_step`` anywhere in
zoo/ (tests may still use ``fit`` as a reference). Read from the syntax tree, so docstrings and
comments do not count. Two calls of those names are not Keras': ``re.compile`` and the engine's own
``fit`` (a receiver spelled ``engine``/``Engine(...)``).
"""

from __future__ import annotations

import ast
from pathlib import Path

ZOO = Path(__file__).resolve().parents[1] / "zoo"
KERAS_TRAINING = {"fit", "compile", "train_on_batch", "fit_generator", "train_step", "test_step"}


def _receiver(call: ast.Call) -> str:
    return ast.unparse(call.func.value) if isinstance(call.func, ast.Attribute) else ""


def _allowed(call: ast.Call) -> bool:
    name, receiver = call.func.attr, _receiver(call)
    if name == "compile":
        return receiver == "re"
    if name == "fit":
        return "engine" in receiver.lower()
    return False


def _offences(path: Path, root: Path = ZOO) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    where = path.relative_to(root.parent)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name in ("train_step", "test_step"):
            out.append(f"{where}:{node.lineno} defines {node.name}")
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr in KERAS_TRAINING and not _allowed(node)):
            out.append(f"{where}:{node.lineno} calls {_receiver(node)}.{node.func.attr}(...)")
    return out


def test_zoo_trains_only_on_the_engine():
    files = sorted(ZOO.rglob("*.py"))
    assert len(files) > 50
    offences = [o for f in files for o in _offences(f)]
    assert not offences, "train through zoo.train.engine.Engine instead:\n" + "\n".join(offences)


def test_the_check_sees_what_it_forbids(tmp_path):
    bad = tmp_path / "zoo" / "bad.py"
    bad.parent.mkdir()
    bad.write_text('"""model.fit(x) in a docstring is fine."""\nimport re\n\n'
                   "class M:\n    def train_step(self, data):\n        return data\n\n"
                   "def f(model, engine, x):\n    re.compile('a')\n    engine.fit(x, 1)\n"
                   "    model.compile('adam', 'mse')\n    model.fit(x)\n"
                   "    model.train_on_batch(x)\n")
    found = sorted(o.split(" ", 1)[1] for o in _offences(bad, tmp_path / "zoo"))
    assert found == ["calls model.compile(...)", "calls model.fit(...)", "calls model.train_on_batch(...)",
                     "defines train_step"]
