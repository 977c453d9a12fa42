"""Losses for MIL heads: the bag label teaches the bag output, priors shape the instance maps.

The heads of ``zoo.heads.builder`` output ``{"bag": ..., "instance_maps": ...}``. One loss
per output, each fed the image labels; the zoo's engine trains them as its MIL task::

    from zoo.train.batches import Batches
    from zoo.train.engine import Engine
    from zoo.train.tasks import MIL

    losses = mil_losses(sparsity=1e-2, area=(0.01, 0.1))
    engine = Engine(MIL(model, losses), keras.optimizers.Adam(1e-3))
    engine.fit(Batches(images, labels, batch_size=32), epochs=5)

(``mil_targets(labels, losses)`` gives the matching ``y`` dict for Keras' own loss-per-output
training.)

- ``BagCrossEntropy``: sigmoid (one finding or several, multi-hot) or softmax (exclusive
  classes, integer labels) cross-entropy of the bag score.
- ``SparsityPrior`` (Zhu et al. 2017): weight x mean instance probability, an L1 penalty that
  keeps the positive evidence to few instances, as lesions occupy a small part of the image.
- ``AreaConstraint`` (Jia et al. 2017): the fraction a of the instances predicted positive
  must lie in [lower, upper] for a positive class and be 0 for an absent one; the penalty is
  weight x (relu(lower - a)^2 + relu(a - upper)^2), summed over classes.

All three are registered Keras losses with ``get_config``: a model saved to ``.keras`` with
them as its losses reloads in safe mode.
"""

from __future__ import annotations

import keras
from keras import ops

from zoo.errors import InvalidArgumentError

MODES = ("binary", "categorical")


def _check_weight(weight) -> float:
    if isinstance(weight, bool) or not isinstance(weight, int | float) or weight < 0:
        raise InvalidArgumentError(f"weight={weight!r}: a loss weight must be a number >= 0.")
    return float(weight)


def _targets(y_true, num_classes: int):
    """Bag labels as (B, C) floats: (B,) or (B, 1) integer labels one-hot, multi-hot kept."""
    if num_classes == 1:
        return ops.reshape(ops.cast(y_true, "float32"), (-1, 1))
    if len(y_true.shape) == 1 or y_true.shape[-1] == 1:
        return ops.one_hot(ops.reshape(ops.cast(y_true, "int32"), (-1,)), num_classes)
    return ops.cast(y_true, "float32")


def _instance_probabilities(maps, from_logits):
    """(B, ..., C) instance scores -> (B, N, C) probabilities."""
    maps = ops.cast(maps, "float32")
    maps = ops.sigmoid(maps) if from_logits else maps
    return ops.reshape(maps, (ops.shape(maps)[0], -1, maps.shape[-1]))


@keras.saving.register_keras_serializable(package="zoo")
class BagCrossEntropy(keras.losses.Loss):
    """Cross-entropy of the bag score. ``mode`` "binary": sigmoid per class, labels (B,) for one
    class or multi-hot (B, C); "categorical": softmax, integer labels (B,)."""

    def __init__(
        self, mode="binary", from_logits=True, weight=1.0, name="bag_cross_entropy", **kwargs
    ):
        super().__init__(name=name, **kwargs)
        if mode not in MODES:
            raise InvalidArgumentError(
                f"mode={mode!r}: use 'binary' (sigmoid, multi-label) or 'categorical' (softmax)."
            )
        self.mode, self.from_logits, self.weight = mode, bool(from_logits), _check_weight(weight)

    def call(self, y_true, y_pred):
        y_pred = ops.cast(y_pred, "float32")
        if self.mode == "categorical":
            labels = ops.reshape(ops.cast(y_true, "int32"), (-1,))
            loss = ops.sparse_categorical_crossentropy(labels, y_pred, from_logits=self.from_logits)
        else:
            target = _targets(y_true, y_pred.shape[-1])
            loss = ops.mean(
                ops.binary_crossentropy(target, y_pred, from_logits=self.from_logits), axis=-1
            )
        return self.weight * loss

    def get_config(self):
        return {
            **super().get_config(),
            "mode": self.mode,
            "from_logits": self.from_logits,
            "weight": self.weight,
        }


@keras.saving.register_keras_serializable(package="zoo")
class SparsityPrior(keras.losses.Loss):
    """weight x mean instance probability (L1 on the map, Zhu et al. 2017); labels unused."""

    def __init__(self, weight=1e-2, from_logits=True, name="sparsity_prior", **kwargs):
        super().__init__(name=name, **kwargs)
        self.weight, self.from_logits = _check_weight(weight), bool(from_logits)

    def call(self, y_true, y_pred):
        return self.weight * ops.mean(
            _instance_probabilities(y_pred, self.from_logits), axis=(1, 2)
        )

    def get_config(self):
        return {**super().get_config(), "weight": self.weight, "from_logits": self.from_logits}


@keras.saving.register_keras_serializable(package="zoo")
class AreaConstraint(keras.losses.Loss):
    """Positive area in [lower, upper] for present classes, 0 for absent ones (Jia et al. 2017)."""

    def __init__(
        self, lower=0.01, upper=0.2, weight=1.0, from_logits=True, name="area_constraint", **kwargs
    ):
        super().__init__(name=name, **kwargs)
        if not (
            isinstance(lower, int | float)
            and isinstance(upper, int | float)
            and 0.0 <= lower <= upper <= 1.0
        ):
            raise InvalidArgumentError(
                f"area bounds lower={lower!r}, upper={upper!r}: need 0 <= lower <= upper <= 1 "
                "(fractions of the instances, e.g. 0.01 and 0.2 for lesions of 1-20% of the image)."
            )
        self.lower, self.upper = float(lower), float(upper)
        self.weight, self.from_logits = _check_weight(weight), bool(from_logits)

    def call(self, y_true, y_pred):
        area = ops.mean(_instance_probabilities(y_pred, self.from_logits), axis=1)  # (B, C)
        present = _targets(y_true, area.shape[-1])
        lower, upper = present * self.lower, present * self.upper
        penalty = ops.square(ops.relu(lower - area)) + ops.square(ops.relu(area - upper))
        return self.weight * ops.sum(penalty, axis=-1)

    def get_config(self):
        return {
            **super().get_config(),
            "lower": self.lower,
            "upper": self.upper,
            "weight": self.weight,
            "from_logits": self.from_logits,
        }


@keras.saving.register_keras_serializable(package="zoo")
class InstancePriors(keras.losses.Loss):
    """Sparsity prior + area constraint on the same ``instance_maps`` output (either may be off)."""

    def __init__(
        self,
        sparsity=0.0,
        area=None,
        area_weight=1.0,
        from_logits=True,
        name="instance_priors",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        self.sparsity = _check_weight(sparsity)
        self.area = None if area is None else tuple(float(v) for v in area)
        self.area_weight, self.from_logits = _check_weight(area_weight), bool(from_logits)
        self._sparse = SparsityPrior(self.sparsity, from_logits, reduction=None)
        self._area = (
            None
            if area is None
            else AreaConstraint(*self.area, self.area_weight, from_logits, reduction=None)
        )

    def call(self, y_true, y_pred):
        loss = self._sparse.call(y_true, y_pred)
        if self._area is not None:
            loss = loss + self._area.call(y_true, y_pred)
        return loss

    def get_config(self):
        return {
            **super().get_config(),
            "sparsity": self.sparsity,
            "area": None if self.area is None else list(self.area),
            "area_weight": self.area_weight,
            "from_logits": self.from_logits,
        }


def mil_losses(mode="binary", from_logits=True, sparsity=0.0, area=None, area_weight=1.0) -> dict:
    """The ``loss=`` dict for a MIL head: bag cross-entropy, plus the instance priors when asked.

    sparsity: weight of the sparsity prior (0: off). area: (lower, upper) fractions or None.
    """
    losses = {"bag": BagCrossEntropy(mode, from_logits)}
    if sparsity or area is not None:
        losses["instance_maps"] = InstancePriors(sparsity, area, area_weight, from_logits)
    return losses


def mil_targets(labels, losses: dict) -> dict:
    """The ``y`` dict matching ``losses``: the image labels, once per output that has a loss."""
    return {key: labels for key in losses}
