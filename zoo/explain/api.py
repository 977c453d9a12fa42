"""One entry point for every explanation method: ``explain_batch(model, images, method=...)``.

``METHODS`` is the registry (``zoo.registry.Registry``) of the method names; each maps to the
module and function that computes it, imported on first use so that listing the methods (the
CLI's --help) imports no TensorFlow. Every method returns one map per image at the input's
spatial size: (B, H, W) for images, (B, D, H, W) for volumes, higher where the evidence for the
class is. A new method is one ``register_method`` call.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from zoo.registry import Registry

__all__ = ["METHODS", "Method", "explain_batch", "register_method"]


@dataclass(frozen=True)
class Method:
    """Where a method lives, what it is called in figures, whether it explains volumes, which
    layer it explains ("input", or None when it picks a convolutional layer), its defaults."""

    module: str
    function: str
    label: str
    volumes: bool = True
    explains: str | None = "input"
    defaults: tuple = ()

    def resolve(self):
        return getattr(importlib.import_module(self.module), self.function)


METHODS = Registry(
    "explanation method",
    argument="method",
    hint="zoo.explain.api.METHODS lists them; `zoo explain --method` takes the same names.",
)


def register_method(name: str, method: Method, *, replace: bool = False) -> Method:
    """Add ``method`` to ``METHODS`` as ``name`` (for ``explain_batch`` and ``zoo explain``)."""
    return METHODS.register(name, method, replace=replace)


_E = "zoo.explain."
for _name, _method in {
    "gradcam": Method(_E + "gradcam", "grad_cam", "Grad-CAM", explains=None),
    "cam": Method(_E + "cam", "class_activation_maps", "CAM", volumes=False, explains=None),
    "saliency": Method(_E + "saliency", "saliency", "saliency"),
    "smoothgrad": Method(_E + "attribution", "smoothgrad", "SmoothGrad"),
    # summed over channels, signed: the map sums to f(x) - f(baseline) (completeness)
    "integrated_gradients": Method(
        _E + "attribution",
        "integrated_gradients",
        "integrated gradients",
        defaults=(("channel_reduce", "sum"),),
    ),
    "occlusion": Method(_E + "attribution", "occlusion", "occlusion"),
    "perturbation": Method(
        _E + "perturbation", "perturbation_mask", "perturbation mask", volumes=False
    ),
}.items():
    register_method(_name, _method)


def explain_batch(model, images, method: str = "gradcam", class_index=None, **options):
    """(B, H, W) or, for a 3D model, (B, D, H, W) maps of ``method`` for ``images``.

    ``class_index``: the class explained (default: each image's top class). ``options`` go to
    the method's function (``zoo.explain.<module>.<function>``; ``METHODS[method]`` names it),
    e.g. ``layer_name`` for Grad-CAM, ``patch`` for occlusion, ``steps`` for integrated gradients.
    """
    from zoo.errors import InvalidArgumentError
    from zoo.explain.inputs import check_images

    spec = METHODS.get(method)
    x = check_images(model, images, f"method={method!r}")
    if x.ndim == 5 and not spec.volumes:
        volume_methods = [n for n in METHODS if METHODS[n].volumes]
        raise InvalidArgumentError(
            f"method={method!r} explains 2D images, and model {model.name!r} takes volumes "
            f"{x.shape[1:]}; use one of {', '.join(volume_methods)} for volumes."
        )
    kwargs = {**dict(spec.defaults), **options}
    return spec.resolve()(model, x, class_index=class_index, **kwargs)
