"""Import heavy modules on first use, so listing models never imports TensorFlow."""

from __future__ import annotations

import importlib
from types import ModuleType


class LazyModule:
    """A stand-in for a module that imports it on the first attribute access."""

    def __init__(self, name: str):
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attr: str):
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attr)


keras = LazyModule("keras")


def submodule_access(package: str, exports: dict[str, str] | None = None):
    """``__getattr__`` and ``__dir__`` for a package: ``pkg.sub`` imports ``pkg.sub`` on first use.

    So ``import zoo; zoo.data.dicom.read_dicom(...)`` works as the README writes it, while
    ``import zoo`` itself imports no submodule (and no TensorFlow) it does not need.
    ``exports`` maps a public name to the submodule defining it (``{"attach_head": "builder"}``):
    ``pkg.attach_head`` imports ``pkg.builder`` on first use.
    """
    exports = dict(exports or {})
    import importlib.util
    import pkgutil
    import sys

    def __getattr__(name: str):
        if name in exports:
            return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
        if not name.startswith("_") and importlib.util.find_spec(f"{package}.{name}") is not None:
            return importlib.import_module(f"{package}.{name}")
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        module = sys.modules[package]
        subs = {m.name for m in pkgutil.iter_modules(module.__path__) if not m.name.startswith("_")}
        return sorted(set(vars(module)) | subs | set(exports))

    return __getattr__, __dir__
