"""Explanations: saliency, CAM / Grad-CAM, overlays."""

from zoo._lazy import submodule_access

__getattr__, __dir__ = submodule_access(__name__)  # zoo.explain.<submodule> imports on use
