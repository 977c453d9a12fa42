"""Curriculum pseudo-labelling (Cascante-Bonilla et al., AAAI 2021: "Curriculum Labeling").

Self-training in stages: stage 0 trains on the labelled images only; at the start of stage k
the classifier of stage k-1 labels the whole unlabelled pool and the images whose confidence (the
highest class probability) lies in the top ``k * step`` of the pool are admitted with their
arg-max labels (``curriculum_fractions``: 20%, 40%, ... 100% by default). The stage then trains on
the labelled cross-entropy plus ``unlabelled_weight`` x the mean cross-entropy of the admitted
images in each batch (weakly augmented). ``reinit=True`` restarts every stage from the initial
weights and a fresh optimizer (the paper's remedy for confirmation bias); ``False`` continues.
``balance=True`` (the default) admits at most an equal quota per predicted class, so that the
class the early classifier favours does not take over the pseudo-labelled set: on the cluster
toy set (tests/semi/test_fit.py) unbalanced admission ends below the supervised baseline, balanced
admission at 100%.
"""

from __future__ import annotations

import math

import numpy as np

from zoo.errors import DataError, InvalidArgumentError
from zoo.semi import augment
from zoo.semi.methods import SemiTask, check_fraction, check_weight, register_method
from zoo.train.engine import Hook


def curriculum_fractions(step: float = 0.2) -> list[float]:
    """The admitted fraction per stage: 0 (labelled only), step, 2 step, ..., 1."""
    check_fraction(step, "step", low_open=True)
    stages = math.ceil(round(1.0 / step, 9))
    return [0.0] + [min(1.0, round(k * step, 9)) for k in range(1, stages + 1)]


def stage_of(epoch: int, stage_epochs: int, stages: int) -> int:
    """The stage an epoch belongs to (the last stage lasts to the end of training)."""
    return min(epoch // stage_epochs, stages - 1)


def admit(confidence, predicted, fraction: float, num_classes: int,
          balance: bool = False) -> np.ndarray:
    """The admitted images: the ``round(fraction * n)`` most confident ones (ties: lower index).

    With ``balance``, each predicted class admits at most ``round(fraction * n / num_classes)``
    of its most confident images (a class with fewer predictions admits all of them).
    """
    confidence, predicted = np.asarray(confidence), np.asarray(predicted)
    n = len(confidence)
    count = int(math.floor(fraction * n + 0.5))
    mask = np.zeros(n, bool)
    order = np.argsort(-confidence, kind="stable")
    if not balance:
        mask[order[:count]] = True
        return mask
    quota = int(math.floor(count / num_classes + 0.5))
    for c in range(num_classes):
        mask[order[predicted[order] == c][:quota]] = True
    return mask


class Curriculum(Hook):
    """Starts each stage: labels the pool, admits by confidence, optionally re-initialises."""

    def __init__(self, task):
        self.task, self.stage = task, 0

    def on_epoch_begin(self, engine, epoch):
        task = self.task
        stage = stage_of(epoch, task.stage_epochs, len(task.fractions))
        if stage != self.stage:
            self.stage = stage
            task.start_stage(engine, task.fractions[stage])

    def state(self) -> dict:
        return {"stage": self.stage}

    def load(self, state, arrays) -> None:
        self.stage = int(state.get("stage", 0))


class CurriculumPseudoLabels(SemiTask):
    """Stage-wise admission of confident pseudo-labels; see the module docstring."""

    needs_index = True
    unlabelled_metrics = ("admitted",)

    def __init__(self, classifier, *, step: float = 0.2, stage_epochs: int | None = None,
                 reinit: bool = True, balance: bool = True, **common):
        super().__init__(classifier, **common)
        self.fractions = curriculum_fractions(step)
        if stage_epochs is not None and (
                isinstance(stage_epochs, bool) or not isinstance(stage_epochs, int)
                or stage_epochs < 1):
            raise InvalidArgumentError(f"stage_epochs={stage_epochs!r}: give a positive number "
                                       "of epochs per stage, or None (epochs / stages).")
        self.stage_epochs, self.reinit, self.balance = stage_epochs, bool(reinit), bool(balance)
        self.pool = self.labels = self.admitted = self.initial = None
        self.history: list[dict] = []

    def prepare(self, stream, epochs: int) -> None:
        import tensorflow as tf

        self.pool = np.asarray(stream.unlabelled)
        n = len(self.pool)
        self.labels = tf.Variable(tf.zeros([n], tf.int32), trainable=False)
        self.admitted = tf.Variable(tf.zeros([n], tf.float32), trainable=False)
        if self.stage_epochs is None:
            self.stage_epochs = max(1, epochs // len(self.fractions))
        self.initial = self.classifier.get_weights()

    def hooks(self) -> list:
        return [Curriculum(self)] if self.unlabelled_weight > 0 else []

    def state_variables(self) -> dict:
        extra = ({"labels": self.labels, "admitted": self.admitted}
                 if self.labels is not None else {})
        return {**super().state_variables(), **extra}

    def start_stage(self, engine, fraction: float) -> None:
        """Label the pool with the current classifier, admit ``fraction``, maybe restart."""
        probs = self.classifier.predict(self.pool, batch_size=256, verbose=0)
        mask = admit(probs.max(-1), probs.argmax(-1), fraction, self.num_classes, self.balance)
        self.labels.assign(probs.argmax(-1).astype(np.int32))
        self.admitted.assign(mask.astype(np.float32))
        self.history.append({"epoch": engine.epoch, "fraction": fraction,
                             "admitted": int(mask.sum())})
        if self.reinit:
            self.classifier.set_weights(self.initial)
            for name, old in list(engine.optimizers.items()):
                with engine.strategy.scope():
                    engine.replace_optimizer(name, type(old).from_config(old.get_config()))

    def unlabelled_loss(self, inputs, training):
        import keras
        import tensorflow as tf

        if self.pool is None:
            raise DataError("pseudo_label keeps a label per unlabelled image: give the "
                            "unlabelled images as an array (zoo.semi.fit), not a pipeline.")
        xu, index = inputs["unlabelled"], inputs["index"]
        weight = tf.gather(self.admitted, index)
        out = self.classifier(augment.weak(xu, self.step_seed(1)), training=training)
        ce = keras.losses.sparse_categorical_crossentropy(
            tf.gather(self.labels, index), tf.cast(out, tf.float32))
        loss = tf.reduce_sum(ce * weight) / tf.maximum(tf.reduce_sum(weight), 1.0)
        return loss, {"admitted": (tf.reduce_sum(weight), tf.cast(tf.size(weight), tf.float32))}


@register_method("pseudo_label", family="pseudo-label",
                 summary="curriculum self-training: admit the top 20%, 40%, ... by confidence",
                 backbones="any zoo classifier (2D/3D); unlabelled images as an array")
def make_pseudo_label(model, *, num_classes, unlabelled_weight, seed, step: float = 0.2,
                      stage_epochs: int | None = None, reinit: bool = True,
                      balance: bool = True):
    return CurriculumPseudoLabels(
        model, step=step, stage_epochs=stage_epochs, reinit=reinit, balance=balance,
        num_classes=num_classes, unlabelled_weight=check_weight(unlabelled_weight), seed=seed)
