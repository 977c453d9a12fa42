"""The supervised tasks the engine ships: classification, multi-label, regression,
segmentation, MIL.

Each turns a batch (x, y, w) into per-example losses (weighted by w) and metric sums, and checks
on the first batch that the labels fit it (a ``DataError`` before any training). Models output
probabilities (softmax / sigmoid, as the zoo's models do) unless ``from_logits=True``.
"""

from __future__ import annotations

import numpy as np

from zoo.errors import DataError, InvalidArgumentError
from zoo.train.engine import StepOutput, Task


def _finite(y: np.ndarray, what: str = "labels") -> None:
    if np.asarray(y).dtype.kind == "f" and not np.all(np.isfinite(y)):
        raise DataError(
            f"the {what} hold NaN or infinity; drop or fix those examples before training."
        )


def _outputs(model) -> int:
    return int(model.outputs[0].shape[-1]) if getattr(model, "outputs", None) else -1


class SupervisedTask(Task):
    """One model, optimizer and label per example; subclasses give ``per_example``, ``metrics``."""

    def __init__(self, model):
        self.model = model

    def models(self) -> dict:
        return {"model": self.model}

    def trainable(self, name: str) -> list:
        return self.model.trainable_variables

    def forward(self, x, training: bool):
        import tensorflow as tf

        return tf.nest.map_structure(
            lambda t: tf.cast(t, tf.float32), self.model(x, training=training)
        )

    def step(self, batch, training: bool) -> StepOutput:
        import tensorflow as tf

        x, y, w = batch
        out = self.forward(x, training)
        w = tf.cast(w, tf.float32)
        return StepOutput({"main": self.per_example(y, out) * w}, self.metrics(y, out, w))

    def per_example(self, y, out):
        raise NotImplementedError

    def metrics(self, y, out, w) -> dict:
        return {}


class Classification(SupervisedTask):
    """Single-label classification: integer classes (N,), cross-entropy, accuracy."""

    def __init__(self, model, from_logits: bool = False):
        super().__init__(model)
        self.from_logits = from_logits

    def per_example(self, y, out):
        import keras
        import tensorflow as tf

        return keras.losses.sparse_categorical_crossentropy(
            tf.cast(y, tf.int32), out, from_logits=self.from_logits
        )

    def metrics(self, y, out, w):
        import tensorflow as tf

        correct = tf.equal(
            tf.argmax(out, -1, output_type=tf.int32), tf.cast(tf.reshape(y, [-1]), tf.int32)
        )
        return {
            "accuracy": (
                tf.reduce_sum(tf.cast(correct, tf.float32)),
                tf.cast(tf.size(correct), tf.float32),
            )
        }

    def check(self, x, y):
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] > 1:
            raise DataError(
                f"labels of shape {y.shape} (several per image) for single-label "
                "classification; use task='multilabel' (zoo.train.tasks.MultiLabel) "
                "or give one class index per image."
            )
        _finite(y)
        if y.dtype.kind == "f" and not np.all(np.mod(y, 1) == 0):
            raise DataError(
                f"labels such as {y.ravel()[:3].tolist()} are not class indices; for "
                "numeric targets use task='regression', else give integer classes."
            )
        k = _outputs(self.model)
        if y.size and (y.min() < 0 or (k > 1 and y.max() >= k)):
            raise DataError(
                f"labels go from {y.min()} to {y.max()} but the model has {k} outputs; "
                f"give class indices 0..{k - 1} (or build the model with "
                "num_classes=)."
            )


class MultiLabel(SupervisedTask):
    """Several findings per image: 0/1 labels (N, K), sigmoid outputs, mean binary cross-entropy
    over findings; ``accuracy`` is the fraction of findings right at 0.5 (use zoo.metrics for
    per-finding AUC)."""

    def __init__(self, model, from_logits: bool = False):
        super().__init__(model)
        self.from_logits = from_logits

    def per_example(self, y, out):
        import keras
        import tensorflow as tf

        return keras.losses.binary_crossentropy(
            tf.cast(y, tf.float32), out, from_logits=self.from_logits
        )

    def metrics(self, y, out, w):
        import tensorflow as tf

        pred = out > (0.0 if self.from_logits else 0.5)
        right = tf.reduce_mean(
            tf.cast(tf.equal(pred, tf.cast(y, tf.float32) > 0.5), tf.float32), axis=-1
        )
        return {"accuracy": (tf.reduce_sum(right), tf.cast(tf.size(right), tf.float32))}

    def check(self, x, y):
        y = np.asarray(y)
        k = _outputs(self.model)
        if y.ndim != 2 or (k > 0 and y.shape[1] != k):
            raise DataError(
                f"multi-label labels of shape {y.shape} for a model with {k} outputs; "
                f"give (N, {k}) 0/1 labels, one column per finding."
            )
        _finite(y)
        if not np.isin(y, (0, 1)).all():
            raise DataError("multi-label labels must be 0 or 1 per finding "
                            f"(found {np.unique(y)[:5].tolist()}).")


class Regression(SupervisedTask):
    """Numeric targets (N,) or (N, K) (e.g. slice position in mm): MSE loss, MAE metric."""

    def per_example(self, y, out):
        import tensorflow as tf

        y = tf.reshape(tf.cast(y, tf.float32), tf.shape(out))
        return tf.reduce_mean(tf.reshape(tf.square(out - y), [tf.shape(out)[0], -1]), axis=1)

    def metrics(self, y, out, w):
        import tensorflow as tf

        y = tf.reshape(tf.cast(y, tf.float32), tf.shape(out))
        err = tf.reduce_mean(tf.reshape(tf.abs(out - y), [tf.shape(out)[0], -1]), axis=1)
        return {"mae": (tf.reduce_sum(err), tf.cast(tf.size(err), tf.float32))}

    def check(self, x, y):
        y = np.asarray(y)
        if y.dtype.kind not in "biuf":
            raise DataError(f"regression targets of type {y.dtype}; give numbers.")
        _finite(y, "regression targets")
        k = _outputs(self.model)
        if k > 0 and y[0].size != k:
            raise DataError(
                f"regression targets of shape {y.shape[1:]} per example for a model "
                f"with {k} outputs."
            )


class Segmentation(SupervisedTask):
    """Per-pixel (2D) or per-voxel (3D) classes: integer masks (N, *spatial) or (N, *spatial, 1)
    against softmax outputs (N, *spatial, K) (or one sigmoid channel for a binary mask).

    ``loss="dice"``: 1 - the mean soft Dice over classes, per image
    ((2 sum p t + s) / (sum p + sum t + s), s = ``smooth``); ``"dice_ce"``: that plus the mean
    pixel cross-entropy. Metric ``dice``: the hard Dice of the arg-max over foreground classes
    (classes 1..K-1; empty in both counts 1).
    """

    def __init__(self, model, loss: str = "dice_ce", smooth: float = 1e-5):
        super().__init__(model)
        if loss not in ("dice", "dice_ce"):
            raise InvalidArgumentError(
                f"loss={loss!r}: use 'dice' or 'dice_ce' (Dice + cross-entropy)."
            )
        self.loss, self.smooth = loss, smooth

    def _probs_and_onehot(self, y, out):
        import tensorflow as tf

        y = tf.cast(y, tf.int32)
        if y.shape.rank == out.shape.rank:
            y = tf.squeeze(y, -1)
        if out.shape[-1] == 1:  # binary: one sigmoid channel -> two classes
            out = tf.concat([1.0 - out, out], -1)
        return out, tf.one_hot(y, out.shape[-1], dtype=tf.float32)

    def per_example(self, y, out):
        import tensorflow as tf

        probs, onehot = self._probs_and_onehot(y, out)
        axes = list(range(1, probs.shape.rank - 1))
        inter = tf.reduce_sum(probs * onehot, axes)
        total = tf.reduce_sum(probs, axes) + tf.reduce_sum(onehot, axes)
        loss = 1.0 - tf.reduce_mean((2.0 * inter + self.smooth) / (total + self.smooth), -1)
        if self.loss == "dice_ce":
            eps = 1e-7
            ce = -tf.reduce_sum(onehot * tf.math.log(tf.clip_by_value(probs, eps, 1.0)), -1)
            loss += tf.reduce_mean(tf.reshape(ce, [tf.shape(ce)[0], -1]), 1)
        return loss

    def metrics(self, y, out, w):
        import tensorflow as tf

        probs, onehot = self._probs_and_onehot(y, out)
        k = probs.shape[-1]
        pred = tf.one_hot(tf.argmax(probs, -1), k, dtype=tf.float32)
        axes = list(range(1, probs.shape.rank - 1))
        inter = tf.reduce_sum(pred * onehot, axes)[:, 1:]
        total = (tf.reduce_sum(pred, axes) + tf.reduce_sum(onehot, axes))[:, 1:]
        per = tf.reduce_mean(tf.where(total > 0, 2.0 * inter / tf.maximum(total, 1.0), 1.0), -1)
        return {"dice": (tf.reduce_sum(per), tf.cast(tf.size(per), tf.float32))}

    def check(self, x, y):
        y = np.asarray(y)
        out_shape = (
            tuple(self.model.outputs[0].shape[1:]) if getattr(self.model, "outputs", None) else None
        )
        _finite(y, "masks")
        spatial = (
            y.shape[1:-1]
            if out_shape and y.ndim == len(out_shape) + 1 and y.shape[-1] == 1
            else y.shape[1:]
        )
        if (
            out_shape
            and tuple(spatial) != tuple(d for d in out_shape[:-1])
            and None not in out_shape
        ):
            raise DataError(
                f"masks of shape {y.shape[1:]} per image but the model outputs "
                f"{out_shape}; give masks of shape {out_shape[:-1]} (one class index "
                "per pixel), resampled like the images."
            )
        k = max(int(out_shape[-1]), 2) if out_shape else None
        if y.dtype.kind == "f" and not np.all(np.mod(y, 1) == 0):
            raise DataError(
                "masks must hold class indices (0, 1, ...), not fractions; threshold "
                "soft masks first."
            )
        if k and y.size and (y.min() < 0 or y.max() >= k):
            raise DataError(
                f"masks hold classes {y.min()}..{y.max()} but the model has {k} classes."
            )


class MIL(SupervisedTask):
    """Multiple-instance learning on a zoo MIL head (zoo.heads): image (bag) labels only.

    ``losses``: the ``zoo.heads.losses.mil_losses`` dict (bag cross-entropy, optional instance
    priors), applied to the model's dict outputs; metric: bag ``accuracy`` (binary at 0.5 of the
    probability, or arg-max for the categorical mode).
    """

    def __init__(self, model, losses: dict | None = None):
        from zoo.heads.losses import mil_losses

        super().__init__(model)
        self.losses = losses or mil_losses()

    def per_example(self, y, out):
        import tensorflow as tf

        total = 0.0
        for key, loss in self.losses.items():
            value = tf.cast(loss.call(y, out[key]), tf.float32)
            total += tf.reduce_mean(tf.reshape(value, [tf.shape(value)[0], -1]), 1)
        return total

    def metrics(self, y, out, w):
        import tensorflow as tf

        bag = self.losses["bag"]
        scores = out["bag"]
        if getattr(bag, "mode", "binary") == "categorical":
            pred = tf.argmax(scores, -1, output_type=tf.int32)
            right = tf.equal(pred, tf.reshape(tf.cast(y, tf.int32), [-1]))
        else:
            p = tf.sigmoid(scores) if bag.from_logits else scores
            yy = tf.reshape(tf.cast(y, tf.float32), [tf.shape(p)[0], -1])
            right = tf.reduce_all(tf.equal(p > 0.5, yy > 0.5), -1)
        return {
            "accuracy": (
                tf.reduce_sum(tf.cast(right, tf.float32)),
                tf.cast(tf.size(right), tf.float32),
            )
        }

    def predict(self, x):
        return self.model(x, training=False)["bag"]

    def check(self, x, y):
        _finite(np.asarray(y))


TASKS = {"classification": Classification, "multilabel": MultiLabel, "regression": Regression,
         "segmentation": Segmentation, "mil": MIL}


def make_task(name: str, model, **options) -> Task:
    """A task by name (``zoo finetune --task``)."""
    if name not in TASKS:
        from zoo.errors import UnknownNameError

        raise UnknownNameError("task", name, TASKS, argument="task")
    return TASKS[name](model, **options)
