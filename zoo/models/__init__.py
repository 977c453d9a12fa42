"""Architectures, the registry and model analysis (``receptive_field``)."""

from zoo.models._receptive_field import ReceptiveField, receptive_field

__all__ = ["ReceptiveField", "receptive_field"]
