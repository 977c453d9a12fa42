"""Checkpoint formats: one loader per format, registered under the name a card gives as ``format``.

``FORMATS`` is a ``zoo.registry.Registry`` ("weights format") of ``WeightsFormat`` loaders:
``keras-legacy-h5`` (keras.applications' ImageNet files), ``keras-weights-h5`` (Keras 3
``save_weights`` files, the zoo's own checkpoints), ``torch-state-dict`` (torchvision files,
converted once and cached) and ``inflated-2d`` (a 2D legacy file inflated into a 3D network).
Each loader has ``inspect(path)`` (what the file says about itself) and
``load_into(model, path, card)`` (fill a model built at the file's own shape). Weights are
copied between models by one rule, ``zoo.weights.copy.copy_by_name``; Keras' own layer-order
loading is used only for legacy ``.h5`` files, whose layer names Keras 3 cannot always keep.

Importing this package (and listing the names) is free of TensorFlow. hub/cards.py lists the
names a card may give (``zoo.hub.cards.FORMATS``, so reading cards needs no loader); a new format
is its name there plus one module here with a ``@register_format("name")`` class, imported in
``_populate``.
"""

from __future__ import annotations

from zoo.registry import Registry

__all__ = ["FORMATS", "format_names", "get_format", "register_format", "sniff_format"]


def _populate() -> None:
    """Import the built-in loader modules once, so their decorators register them."""
    from zoo.weights import inflated, keras_h5, torch_state_dict  # noqa: F401


FORMATS: Registry = Registry(
    "weights format",
    argument="format",
    populate=_populate,
    hint="Set the card's format to one of these (see zoo/weights/ for what each reads).",
)


def register_format(name: str):
    """Class decorator: register an instance of a ``WeightsFormat`` subclass as ``name``."""

    from zoo.hub.cards import FORMATS as CARD_FORMATS

    if name not in CARD_FORMATS:
        raise ValueError(f"weights format {name!r} is not in zoo.hub.cards.FORMATS: add it there, "
                         "so cards may name it.")

    def decorate(cls):
        cls.name = name
        FORMATS.register(name, cls())
        return cls

    return decorate


def format_names() -> list[str]:
    """Every registered format name (for card validation; imports no Keras)."""
    return FORMATS.names()


def get_format(name: str):
    """The loader registered as ``name``; ``UnknownNameError`` with suggestions otherwise."""
    return FORMATS.get(name)


def sniff_format(path) -> str:
    """The format of a weights file given by path: legacy ``.h5`` or Keras 3 ``.weights.h5``."""
    from zoo.weights.keras_h5 import sniff

    return sniff(path)
