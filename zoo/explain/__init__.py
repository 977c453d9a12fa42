"""Explanations: one API, ``zoo.explain.explain_batch(model, images, method=...)``, over the methods
of ``zoo.explain.METHODS`` (saliency, SmoothGrad, integrated gradients, occlusion, perturbation
masks, CAM, Grad-CAM; 2D and 3D), the model-randomisation check ``zoo.explain.randomisation_check``,
overlays drawn by zoo.figures, and ``zoo explain``.
"""

from zoo._lazy import submodule_access

_submodule, _dir = submodule_access(__name__)  # zoo.explain.<submodule> imports on use
_API = {"explain_batch": "api", "METHODS": "api", "register_method": "api", "Method": "api",
        "randomisation_check": "sanity"}


def __getattr__(name: str):
    """The API names import their module on first use (no TensorFlow for ``import zoo.explain``)."""
    if name in _API:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_API[name]}"), name)
    return _submodule(name)


def __dir__() -> list[str]:
    return sorted(set(_dir()) | set(_API))
