"""torchvision state dicts, converted by layer name once and cached (zoo.weights.convert_torch)."""

from __future__ import annotations

from zoo.weights import register_format
from zoo.weights.base import WeightsFormat


@register_format("torch-state-dict")
class TorchStateDict(WeightsFormat):
    """A PyTorch ``.pth`` state dict; Keras layer names are its module names with dots as ``_``."""

    converted = True

    def before_fetch(self, card) -> None:
        """No download that cannot be converted: no torch and nothing cached is an error now."""
        from zoo.weights.convert_torch import check_convertible

        check_convertible(card)

    def load_into(self, model, path, card=None, *, build=None):
        from zoo.weights.convert_torch import load_torch_checkpoint

        load_torch_checkpoint(model, path, card)
