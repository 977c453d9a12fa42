"""Serializable Keras layers shared by the model builders (the submodules import Keras)."""

from zoo._lazy import submodule_access

__getattr__, __dir__ = submodule_access(__name__)  # zoo.layers.<submodule> imports on use
