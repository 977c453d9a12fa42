"""Every public function a user reaches first (the ``zoo`` facade and the CLI modules) documents
its arguments, what it returns and what it raises, Google style, so ``help()`` answers."""

from __future__ import annotations

import ast
import inspect
import types
from pathlib import Path

import pytest

import zoo

ZOO = Path(zoo.__file__).resolve().parent
CLI_MODULES = sorted([ZOO / "cli.py", ZOO / "data" / "dicom_cli.py", *ZOO.glob("*/cli.py")])


def _facade_functions():
    for name in zoo.__all__:
        value = getattr(zoo, name)
        if isinstance(value, types.ModuleType):  # zoo.export: the module is callable
            value = getattr(value, name)
        if inspect.isfunction(value):
            yield name, value


def _takes_arguments(fn) -> bool:
    return any(p.name not in ("self", "cls") for p in inspect.signature(fn).parameters.values())


@pytest.mark.parametrize("name,fn", list(_facade_functions()), ids=lambda v: v if isinstance(v, str) else "")
def test_facade_functions_have_args_returns_raises(name, fn):
    doc = inspect.getdoc(fn) or ""
    missing = [s for s in ("Args:", "Returns:", "Raises:") if s not in doc
               and not (s == "Args:" and not _takes_arguments(fn))]
    assert not missing, f"zoo.{name} ({fn.__module__}) lacks {missing} in its docstring"


def _public_functions(path: Path):
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
            returns = any(isinstance(n, ast.Return) and n.value is not None
                          and not (isinstance(n.value, ast.Constant) and n.value.value is None)
                          for n in ast.walk(node) if n is not node)
            yield node, returns


@pytest.mark.parametrize("path", CLI_MODULES, ids=lambda p: str(p.relative_to(ZOO)))
def test_cli_module_functions_have_args_and_returns(path):
    problems = []
    for node, returns in _public_functions(path):
        doc = ast.get_docstring(node) or ""
        if not doc:
            problems.append(f"{node.name}: no docstring")
            continue
        if node.args.args and "Args:" not in doc:
            problems.append(f"{node.name}: no Args:")
        if returns and "Returns:" not in doc:
            problems.append(f"{node.name}: no Returns:")
    assert not problems, f"{path.relative_to(ZOO.parent)}: " + "; ".join(problems)
