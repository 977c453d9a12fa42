"""Semi-supervised learning: few labelled images, many unlabelled ones, one classifier.

``zoo.semi.fit(method, model_or_name, labelled=(x, y), unlabelled=u, ...)`` trains a classifier
with a registered method (``list_methods()``: the supervised baseline, consistency methods,
pseudo-labels, ...); ``fit_sdnet`` trains SDNet, a segmenter; every method is a task on the
zoo's one training engine. Importing this
package is light; TensorFlow is imported when training starts.
"""

from __future__ import annotations

from zoo._lazy import submodule_access
from zoo.semi.methods import METHODS, MethodSpec, SemiTask, register_method


def list_methods() -> list[str]:
    """The registered method names (the supervised baseline first)."""
    return METHODS.names()


def fit(method: str, model_or_name, labelled, unlabelled, **kwargs):
    """Train a classifier with semi-supervised ``method``; see ``zoo.semi.api.fit``."""
    from zoo.semi.api import fit as _fit

    return _fit(method, model_or_name, labelled, unlabelled, **kwargs)


def fit_sdnet(images, masks_labelled, unlabelled_images, **kwargs):
    """Train SDNet (segmentation) on masks and unlabelled images; see ``zoo.semi.sdnet``."""
    from zoo.semi.sdnet import fit_sdnet as _fit_sdnet

    return _fit_sdnet(images, masks_labelled, unlabelled_images, **kwargs)


__all__ = ["METHODS", "MethodSpec", "SemiTask", "fit", "fit_sdnet", "list_methods",
           "register_method"]

__getattr__, __dir__ = submodule_access(__name__)
