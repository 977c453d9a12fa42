"""medzoo: a Keras 3 model zoo for medical image analysis.

``import zoo`` is light: listing models and reading weight cards never imports
TensorFlow; ``zoo.load`` does, on first use.
"""

from __future__ import annotations

__version__ = "0.1.0"

from zoo.errors import ZooError
from zoo.export import export  # eager: a lazy import would rebind zoo.export to the module
from zoo.hub.cards import get_card, list_weights
from zoo.models import receptive_field
from zoo.models.registry import list_models
from zoo.ssl import pretrain


def model_info(name: str) -> dict:
    """What the zoo knows of ``arch`` or ``arch.tag``: the architecture and its weight cards."""
    from zoo.hub.cards import cards_for
    from zoo.models.registry import get_entry

    entry = get_entry(name)
    cards = [get_card(name)] if "." in name else cards_for(entry.name)
    return {
        "name": entry.name,
        "family": entry.family,
        "task": entry.task,
        "default_size": list(entry.default_size),
        "min_size": entry.min_size,
        "spatial_dims": entry.spatial_dims,
        "preprocess": entry.preprocess,
        "description": entry.description,
        "paper": entry.paper,
        "weights": [c.to_dict() for c in cards],
    }


def load(name: str, pretrained=None, **kwargs):
    """Build a ready Functional model; see zoo.models.factory.load for every argument."""
    from zoo.models.factory import load as _load

    return _load(name, pretrained=pretrained, **kwargs)


def input_contract(model) -> dict:
    """What a zoo model expects as input (mode, value range, channels, shape)."""
    from zoo.models.factory import input_contract as _contract

    return _contract(model)


def load_model(path, **kwargs):
    """Load a saved ``.keras`` zoo model (safe mode), registering every zoo layer first."""
    import importlib
    import pkgutil

    import keras

    import zoo.heads
    import zoo.layers

    for package in (zoo.layers, zoo.heads):
        for info in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{package.__name__}.{info.name}")
    kwargs.setdefault("safe_mode", True)
    return keras.models.load_model(path, **kwargs)


def fetch(name, **kwargs):
    """Download (or find in the cache) and verify the weights file of a card: its name ``arch.tag``
    or the WeightCard itself (the same function as zoo.hub.fetch.fetch)."""
    from zoo.hub.fetch import fetch as _fetch

    return _fetch(name, **kwargs)


def finetune(model_or_name, train_data, val_data=None, **kwargs):
    """Two-stage fine-tuning with a run record; see zoo.train.finetune.finetune for every argument."""
    from zoo.train.finetune import finetune as _finetune

    return _finetune(model_or_name, train_data, val_data, **kwargs)


def read_dicom(path, **kwargs):
    """Decode a DICOM file: float32 (frames, H, W, C) in physical units plus PHI-free metadata."""
    from zoo.data.dicom import read_dicom as _read

    return _read(path, **kwargs)


def load_series(source, **kwargs):
    """Stack a DICOM series (folder or file list) into a Volume ordered by its geometry."""
    from zoo.data.series import load_series as _load

    return _load(source, **kwargs)


def dicom_dataset(source, labels=None, **kwargs):
    """A tf.data pipeline over DICOM files or series that matches a model's input contract."""
    from zoo.data.pipeline import dicom_dataset as _ds

    return _ds(source, labels, **kwargs)


__all__ = ["ZooError", "load", "load_model", "input_contract", "fetch", "list_models", "list_weights", "model_info", "get_card",
           "read_dicom", "load_series", "dicom_dataset", "finetune", "export", "pretrain",
           "receptive_field"]
