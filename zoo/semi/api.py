"""``zoo.semi.fit``: check everything, build the method's task, train it on the engine, publish."""

from __future__ import annotations

from zoo.semi.methods import METHODS, SemiTask, check_weight


def build_task(method: str, model, *, num_classes: int, unlabelled_weight: float = 1.0,
               seed: int = 0, **options) -> SemiTask:
    """The task of ``method`` for ``model``; unknown names, options and weights fail here."""
    spec = METHODS.get(method)
    check_weight(unlabelled_weight)
    return spec.task(model, num_classes=num_classes, unlabelled_weight=unlabelled_weight,
                     seed=seed, **options)
