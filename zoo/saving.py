"""Reading a saved ``.keras`` zoo model back: the one home of ``zoo.load_model``.

It registers every zoo layer (``zoo.layers``, ``zoo.heads``) before Keras deserializes, so it
sits just above the heads in the layer order; the CLIs and export call it here, never through
the ``zoo`` facade.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from zoo.errors import InvalidArgumentError


def register_zoo_layers() -> None:
    """Import every module of zoo.layers and zoo.heads, so each registered class is known."""
    import zoo.heads
    import zoo.layers

    for package in (zoo.layers, zoo.heads):
        for info in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{package.__name__}.{info.name}")


def load_model(path, **kwargs):
    """Load a saved ``.keras`` zoo model (safe mode), registering every zoo layer first."""
    import keras

    if not Path(path).is_file():
        raise InvalidArgumentError(
            f"{path}: no such file; give a .keras file saved by model.save() "
            "(e.g. finetune_out/best.keras), or a zoo model name.")
    register_zoo_layers()
    kwargs.setdefault("safe_mode", True)
    try:
        return keras.models.load_model(path, **kwargs)
    except ValueError as e:  # not a .keras zip, unknown layer, unsafe lambda ...
        raise InvalidArgumentError(
            f"{path} cannot be loaded as a zoo .keras model ({str(e).splitlines()[0][:300]}); "
            "save it with model.save('m.keras') from a zoo model.") from None
