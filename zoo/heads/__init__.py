"""Heads for weak labels: MIL pooling layers (mil), head builders (builder), losses (losses).

The names below import their submodule (and Keras) on first use, so ``import zoo.heads`` stays
light. The MIL demo step lives in ``zoo.demo.mil``.
"""

from zoo._lazy import submodule_access

_EXPORTS = {
    "POOLINGS": "mil", "make_pooling": "mil",
    "attach_head": "builder", "build_mil_head": "builder", "build_tiled_mil": "builder",
    "mil_losses": "losses", "mil_targets": "losses",
}
__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = submodule_access(__name__, _EXPORTS)  # zoo.heads.<name> imports on use
