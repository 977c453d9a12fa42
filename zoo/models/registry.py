"""Where builders register themselves, and how names are looked up.

Model modules stay free of TensorFlow at import time (they use ``zoo._lazy.keras``),
so listing and describing models is instant and never imports TensorFlow.
"""

from __future__ import annotations

import fnmatch
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass

from zoo.registry import Registry


@dataclass(frozen=True)
class ModelEntry:
    """What the zoo knows about one architecture, before any weights.

    ``builder(x, *, include_top, num_classes, classifier_activation, **options)`` takes
    the preprocessed Keras tensor ``x`` (already ``in_chans`` channels wide) and returns the
    output tensor: the feature map (``include_top=False``) or the class scores (it may instead
    return a Functional model from the factory's input to that tensor). ``feature_layers(model)``
    maps a nominal stride to a layer name.
    ``takes_encoder``: the builder's ``encoder`` option is a features model that ``zoo.load``
    builds from an architecture name (and ``encoder_weights``) before the builder runs, so a
    builder never loads or downloads anything itself.
    ``latent_dim``: a positive default means the model takes a latent vector, not an image (a GAN
    generator): ``zoo.load`` builds a ``(latent_dim,)`` input named ``latent`` (the builder's
    ``latent_dim`` option overrides the width) and passes the image shape it must produce
    (``input_shape`` plus ``in_chans``) as the builder's ``output_shape``.
    """

    name: str
    builder: Callable
    family: str
    default_size: tuple[int, ...]
    min_size: int
    preprocess: str = "none"
    spatial_dims: int = 2
    task: str = "classification"
    feature_layers: Callable | None = None
    description: str = ""
    paper: str = ""
    takes_encoder: bool = False
    latent_dim: int = 0


_MODELS: Registry = Registry(
    "model",
    hint="See zoo.list_models() or `zoo list` for every registered name.",
    show_choices=False,
)
_populated = False


def register_model(name: str, **entry_fields) -> Callable:
    """Decorator: register ``builder`` under ``name`` (lower case, no dots)."""
    if "." in name or name != name.lower():
        raise ValueError(f"model name {name!r} must be lower case without dots")

    def decorate(builder: Callable) -> Callable:
        if name in _MODELS and _MODELS[name].builder is not builder:
            raise ValueError(f"model {name!r} is registered twice")
        _MODELS.register(name, ModelEntry(name=name, builder=builder, **entry_fields), replace=True)
        return builder

    return decorate


def _populate() -> None:
    """Import every module of zoo.models once, so their decorators run."""
    global _populated
    if _populated:
        return
    import zoo.models as package

    for info in pkgutil.iter_modules(package.__path__):
        if info.name.startswith("_"):
            continue
        importlib.import_module(f"zoo.models.{info.name}")
    _populated = True


def model_names() -> list[str]:
    _populate()
    return sorted(_MODELS)


def get_entry(name: str) -> ModelEntry:
    """The entry of architecture ``name`` (a tag after a dot is ignored)."""
    _populate()
    arch = name.split(".", 1)[0]
    return _MODELS.get(arch)  # UnknownNameError (an UnknownModelError) with suggestions


def list_models(pattern: str = "*", pretrained: bool | None = None) -> list[str]:
    """Registered names matching an fnmatch ``pattern``; imports no TensorFlow.

    Args:
        pattern: an fnmatch pattern (``"resnet*"``); ``"*"`` lists everything.
        pretrained: ``None`` lists architectures; ``True`` every ``arch.tag`` that has a weight
            card; ``False`` the architectures without any card.

    Returns:
        A sorted list of names.

    Raises:
        CardError: a weight card file that does not parse (``pretrained`` given).
    """
    from zoo.hub.cards import all_cards

    archs = model_names()
    if pretrained is None:
        return [a for a in archs if fnmatch.fnmatch(a, pattern)]
    tagged = sorted(c.name for c in all_cards().values() if c.arch in _MODELS)
    if pretrained:
        return [
            t
            for t in tagged
            if fnmatch.fnmatch(t, pattern) or fnmatch.fnmatch(t.split(".")[0], pattern)
        ]
    with_cards = {t.split(".")[0] for t in tagged}
    return [a for a in archs if a not in with_cards and fnmatch.fnmatch(a, pattern)]
