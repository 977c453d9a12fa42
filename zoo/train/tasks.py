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


def _output_shape(model) -> tuple | None:
    return tuple(model.outputs[0].shape[1:]) if getattr(model, "outputs", None) else None


def masks_are_multilabel(mask_shape, output_shape) -> bool:
    """The one rule of ``task="segmentation"``: masks with the output's rank and its K > 1
    channels hold one 0/1 channel per label (sigmoid outputs); masks without a channel axis, or
    with one channel, hold class indices (softmax outputs; one sigmoid channel is binary)."""
    return (
        len(mask_shape) == len(output_shape)
        and output_shape[-1] is not None
        and output_shape[-1] > 1
        and mask_shape[-1] != 1
    )


class Segmentation(SupervisedTask):
    """Per-pixel (2D) or per-voxel (3D) labels against the model's maps (N, *spatial, K).

    Masks, by ``masks_are_multilabel``: integer class indices (N, *spatial) or (N, *spatial, 1)
    against softmax outputs (one sigmoid channel counts as two classes, background and
    foreground), or multi-label 0/1 masks (N, *spatial, K) against K sigmoid outputs.

    ``loss``: a name in ``zoo.train.seg_losses.SEG_LOSSES`` ("dice_ce" by default: soft Dice +
    cross-entropy; "dice", "ce", "focal", "dice_focal", "tversky", "focal_tversky") with its
    options (``smooth``, ``gamma``, ``alpha``, ...) and the common ``class_weight``,
    ``include_background`` and ``from_logits``, or a built ``segmentation_loss(...)``.

    Deep supervision: a model with several outputs (``zoo.load("unet", deep_supervision=True)``:
    the full-resolution head first, then coarser decoder levels up-sampled to full size) is
    trained on every output against the same mask, weighted by ``deep_supervision_weights``
    (default nnU-Net's: halving per level, normalised to sum 1); metrics and ``predict`` use the
    first output only.

    Metric ``dice``: per image, the hard Dice of the arg-max (multi-class, classes 1..K-1) or
    of each channel at p = 0.5 (multi-label), averaged over those classes; a class empty in both
    mask and prediction scores 1.
    """

    def __init__(self, model, loss="dice_ce", *, deep_supervision_weights=None, **loss_options):
        from zoo.train.seg_losses import segmentation_loss

        super().__init__(model)
        self.loss = segmentation_loss(loss, **loss_options)
        self.ds_weights = deep_supervision_weights

    def _outputs(self, out) -> list:
        return list(out) if isinstance(out, list | tuple) else [out]

    def _weights(self, n: int) -> list[float]:
        from zoo.train.seg_losses import deep_supervision_weights

        if self.ds_weights is None:
            return deep_supervision_weights(n)
        weights = [float(w) for w in self.ds_weights]
        if len(weights) != n or min(weights) < 0 or not sum(weights) > 0:
            raise InvalidArgumentError(
                f"deep_supervision_weights={self.ds_weights!r}: give {n} weights >= 0 (one per "
                "model output, full resolution first), not all 0."
            )
        return weights

    def _binary(self, out):
        """One sigmoid channel as two classes (background, foreground)."""
        import tensorflow as tf

        if self.loss.from_logits:
            return tf.concat([tf.zeros_like(out), out], -1)
        return tf.concat([1.0 - out, out], -1)

    def _target(self, y, out):
        """(target channels, multi-label?) for the prediction ``out``."""
        import tensorflow as tf

        if masks_are_multilabel(tuple(y.shape[1:]), tuple(out.shape[1:])):
            return tf.cast(y, out.dtype), True
        y = tf.cast(y, tf.int32)
        if y.shape.rank == out.shape.rank:
            y = tf.squeeze(y, -1)
        return tf.one_hot(y, max(int(out.shape[-1]), 2), dtype=out.dtype), False

    def _prediction(self, out, multilabel: bool):
        return out if multilabel or out.shape[-1] > 1 else self._binary(out)

    def per_example(self, y, out):
        outs = self._outputs(out)
        target, multilabel = self._target(y, outs[0])
        total = 0.0
        for weight, o in zip(self._weights(len(outs)), outs, strict=True):
            if weight:
                total += weight * self.loss(target, self._prediction(o, multilabel),
                                            multilabel=multilabel)
        return total

    def metrics(self, y, out, w):
        import tensorflow as tf

        out = self._outputs(out)[0]
        onehot, multilabel = self._target(y, out)
        probs = self._prediction(out, multilabel)
        axes = list(range(1, probs.shape.rank - 1))
        if multilabel:
            pred = tf.cast(probs > (0.0 if self.loss.from_logits else 0.5), probs.dtype)
        else:
            pred = tf.one_hot(tf.argmax(probs, -1), probs.shape[-1], dtype=probs.dtype)
            pred, onehot = pred[..., 1:], onehot[..., 1:]
        inter = tf.reduce_sum(pred * onehot, axes)
        total = tf.reduce_sum(pred, axes) + tf.reduce_sum(onehot, axes)
        per = tf.reduce_mean(tf.where(total > 0, 2.0 * inter / tf.maximum(total, 1.0), 1.0), -1)
        return {"dice": (tf.reduce_sum(per), tf.cast(tf.size(per), tf.float32))}

    def predict(self, x):
        return self._outputs(self.model(x, training=False))[0]

    def check(self, x, y):
        from zoo.train.seg_losses import check_class_weight

        y = np.asarray(y)
        out_shape = _output_shape(self.model)
        _finite(y, "masks")
        if out_shape is None:
            return
        if masks_are_multilabel(y.shape[1:], out_shape):
            _check_multilabel_masks(y, out_shape)
            classes = out_shape[-1]
        else:
            _check_class_masks(y, out_shape)
            classes = max(int(out_shape[-1]), 2)
        if self.loss.class_weight is not None:
            check_class_weight(self.loss.class_weight, classes)
        self._weights(len(self.model.outputs))


def _check_shape(spatial, out_shape, y_shape, what: str) -> None:
    if None not in out_shape and tuple(spatial) != tuple(out_shape[:-1]):
        raise DataError(
            f"masks of shape {y_shape[1:]} per image but the model outputs {out_shape}; give "
            f"masks of shape {what}, resampled like the images."
        )


def _check_class_masks(y: np.ndarray, out_shape: tuple) -> None:
    """Integer masks (N, *spatial[, 1]): the output's spatial shape, classes 0..K-1."""
    with_channel = y.ndim == len(out_shape) + 1 and y.shape[-1] == 1
    spatial = y.shape[1:-1] if with_channel else y.shape[1:]
    k = max(int(out_shape[-1]), 2)
    _check_shape(spatial, out_shape, y.shape,
                 f"{out_shape[:-1]} (one class index per pixel)"
                 + (f" or {out_shape} (one 0/1 channel per label)" if k > 2 else ""))
    if y.dtype.kind == "f" and not np.all(np.mod(y, 1) == 0):
        raise DataError(
            "masks must hold class indices (0, 1, ...), not fractions; threshold soft masks "
            "first."
        )
    if y.dtype.kind not in "biuf":
        raise DataError(f"masks of type {y.dtype}; give integer class indices.")
    if y.size and (y.min() < 0 or y.max() >= k):
        raise DataError(
            f"masks hold classes {y.min()}..{y.max()} but the model has {k} classes (0..{k - 1}); "
            "give num_classes= the number of classes, background included, or relabel the masks."
        )


def _check_multilabel_masks(y: np.ndarray, out_shape: tuple) -> None:
    """Multi-label masks (N, *spatial, K): the output's shape, 0/1 values."""
    _check_shape(y.shape[1:-1], out_shape, y.shape, str(out_shape))
    if y.shape[-1] != out_shape[-1]:
        raise DataError(
            f"multi-label masks with {y.shape[-1]} channels but the model outputs "
            f"{out_shape[-1]}; give one 0/1 channel per output (or integer masks (N, *spatial) "
            "of class indices)."
        )
    if not np.isin(y, (0, 1)).all():
        raise DataError(
            "multi-label masks must hold 0 or 1 per channel (found "
            f"{np.unique(y)[:5].tolist()}); threshold soft masks first."
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
