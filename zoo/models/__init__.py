"""Architectures, the registry and model analysis (``receptive_field``)."""

from zoo._lazy import submodule_access
from zoo.models._receptive_field import ReceptiveField, receptive_field

__all__ = ["ReceptiveField", "receptive_field"]

__getattr__, __dir__ = submodule_access(__name__)  # zoo.models.<submodule> imports on use
