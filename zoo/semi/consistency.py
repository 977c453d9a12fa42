"""Consistency methods: the prediction for an unlabelled image must not change under noise.

- ``pi_model`` (Laine & Aila 2017): two weakly augmented passes of the same image, squared
  difference of their class probabilities (the second pass is the target, without gradient).
- ``temporal_ensembling`` (Laine & Aila 2017): the target is ``Z / (1 - alpha^t)``, the
  bias-corrected moving average of an image's past predictions (``t`` of them), kept per
  unlabelled image by its index in the pool.
- ``mean_teacher`` (Tarvainen & Valpola 2017): the target is the prediction of a teacher whose
  every variable (BatchNorm statistics included) is the engine's EMA of the student's. The
  teacher computes its targets with the batch's own BatchNorm statistics, as both reference
  implementations do (``batch_statistics_call``); its moving statistics lag the weights twice
  and gave one class for every phantom (docs/semi.md).
- ``fixmatch`` (Sohn et al. 2020): a weakly augmented view gives a hard pseudo-label where its
  confidence reaches ``tau``; the strongly augmented view (zoo.semi.augment) is trained on it.
  Neither view is mirrored unless ``flip=True`` (images without a side).

The consistency weight ramps up along a sigmoid, ``exp(-5 (1 - t/T)^2)`` over ``ramp_up``
steps (Laine & Aila's schedule), for the three methods whose early targets are noise.

The two averaging targets default to the papers' horizon scaled to the run (``scaled_horizon``):
the average spans the same fraction of training as in the paper, but at least one pass over the
unlabelled images. The papers' constants (decay 0.99, alpha 0.6) average over 1/(1 - m) = 100
steps of a 150,000-step run and 2.5 epochs of 300; kept as they are in a run of a few hundred
steps, the target lags the student by most of the run and holds on to its early mistakes.
"""

from __future__ import annotations

from zoo.errors import DataError, InvalidArgumentError
from zoo.semi import augment
from zoo.semi.data import _is_dataset
from zoo.semi.methods import SemiTask, check_fraction, check_weight, register_method

_ANY = "any zoo classifier (2D/3D; 3D: flip-only augmentation)"


def consistency_loss(p, target):
    """Mean over images of the mean squared difference over classes; no gradient to ``target``.

    Zero when the predictions agree; its gradient moves ``p`` towards ``target``.
    """
    import tensorflow as tf

    diff = p - tf.stop_gradient(target)
    return tf.reduce_mean(tf.square(diff))


def sigmoid_ramp(step, length: int):
    """``exp(-5 (1 - step/length)^2)`` until ``length`` steps, then 1 (``length`` 0: always 1)."""
    import tensorflow as tf

    if length <= 0:
        return tf.constant(1.0)
    t = tf.clip_by_value(tf.cast(step, tf.float32) / float(length), 0.0, 1.0)
    return tf.exp(-5.0 * tf.square(1.0 - t))


def _check_ramp(ramp_up) -> int:
    if isinstance(ramp_up, bool) or not isinstance(ramp_up, int) or ramp_up < 0:
        raise InvalidArgumentError(f"ramp_up={ramp_up!r}: give a number of steps >= 0.")
    return ramp_up


class _Ramped(SemiTask):
    """A consistency task whose weight ramps up over ``ramp_up`` steps."""

    def __init__(self, classifier, *, ramp_up: int = 0, **common):
        super().__init__(classifier, **common)
        self.ramp_up = _check_ramp(ramp_up)

    def ramp(self):
        return sigmoid_ramp(self.iterations, self.ramp_up)

    def probs(self, model, x, training: bool):
        import tensorflow as tf

        return tf.cast(model(x, training=training), tf.float32)


class PiModel(_Ramped):
    """Two weak views through the classifier; see the module docstring."""

    def unlabelled_loss(self, inputs, training):
        xu = inputs["unlabelled"]
        p = self.probs(self.classifier, augment.weak(xu, self.step_seed(1)), training)
        q = self.probs(self.classifier, augment.weak(xu, self.step_seed(2)), training)
        return consistency_loss(p, q), {}


def scaled_horizon(paper_horizon: float, paper_length: float, length: float,
                   floor: float) -> float:
    """The decay ``1 - 1/h`` of a moving average over ``h`` units: the paper's horizon as the same
    fraction of this run's ``length`` as of the paper's, but at least ``floor`` units."""
    return 1.0 - 1.0 / max(paper_horizon * length / paper_length, floor, 1.0)


def ensemble_target(z_sum, count, alpha: float):
    """Bias-corrected ensemble ``Z / (1 - alpha^t)`` and the mask of images seen before (t > 0)."""
    import tensorflow as tf

    t = tf.cast(count, tf.float32)[:, None]
    correction = tf.maximum(1.0 - tf.pow(alpha, t), 1e-12)
    return z_sum / correction, tf.cast(count > 0, tf.float32)


class TemporalEnsembling(_Ramped):
    """Per-image moving average of past predictions as the target; see the module docstring."""

    needs_index = True

    def __init__(self, classifier, *, alpha: float | None = None, **common):
        super().__init__(classifier, **common)
        self.scaled = alpha is None
        self.alpha = 0.6 if alpha is None else check_fraction(alpha, "alpha")
        if self.alpha >= 1:
            raise InvalidArgumentError(f"alpha={alpha!r}: give a number in [0, 1).")
        self.z = self.count = None

    def prepare(self, stream, epochs: int) -> None:
        import tensorflow as tf

        if self.scaled:  # Laine & Aila: alpha 0.6 (2.5 epochs) over 300 epochs
            self.alpha = scaled_horizon(2.5, 300, epochs, floor=1)
        n = len(stream.unlabelled)
        self.z = tf.Variable(tf.zeros([n, self.num_classes]), trainable=False)
        self.count = tf.Variable(tf.zeros([n], tf.int32), trainable=False)

    def state_variables(self) -> dict:
        extra = {"z": self.z, "count": self.count} if self.z is not None else {}
        return {**super().state_variables(), **extra}

    def unlabelled_loss(self, inputs, training):
        import tensorflow as tf

        if self.z is None:
            raise DataError("temporal_ensembling keeps a prediction per unlabelled image: give "
                            "the unlabelled images as an array (zoo.semi.fit), not a pipeline.")
        xu, index = inputs["unlabelled"], inputs["index"]
        p = self.probs(self.classifier, augment.weak(xu, self.step_seed(1)), training)
        target, seen = ensemble_target(tf.gather(self.z, index), tf.gather(self.count, index),
                                       self.alpha)
        per = tf.reduce_mean(tf.square(p - tf.stop_gradient(target)), -1) * seen
        loss = tf.reduce_sum(per) / tf.cast(tf.shape(p)[0], tf.float32)
        rows = index[:, None]
        new = self.alpha * tf.gather(self.z, index) + (1 - self.alpha) * tf.stop_gradient(p)
        self.z.scatter_nd_update(rows, new)
        self.count.scatter_nd_add(rows, tf.ones_like(index, tf.int32))
        return loss, {}


def ema_copy(model):
    """A copy of ``model`` with its own variables holding equal values (the teacher's start)."""
    import keras

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def _moving_statistics(model) -> list:
    """The variables a training-mode call moves besides the random-number states: BatchNorm's
    moving mean and variance (every non-trainable, non-seed variable, to be safe)."""
    return [v for v in model.non_trainable_variables if "seed_generator" not in v.path]


def batch_statistics_call(model, x):
    """``model(x)`` with BatchNorm normalising by the batch's own statistics, as in training, and
    every moving statistic left as it was (an EMA teacher's are the EMA of the student's).

    Why: a mean teacher's targets in inference mode use moving statistics that lag the weights
    twice (the student's momentum, then the EMA); early in a short run such a teacher answers
    one class for every image with growing confidence and the consistency term drives the
    student to that constant (phantoms: docs/semi.md). Both reference implementations compute
    the teacher's targets with batch statistics (PyTorch ``ema_model.train()``; TensorFlow
    ``training=True``)."""
    import tensorflow as tf

    stats = _moving_statistics(model)
    saved = [tf.identity(v) for v in stats]
    out = model(x, training=True)
    with tf.control_dependencies([out]):
        for v, value in zip(stats, saved, strict=True):
            v.assign(value)
    return out


class MeanTeacher(_Ramped):
    """Student vs an EMA teacher (``task.ema``); see the module docstring."""

    def __init__(self, classifier, *, decay: float | None = None, **common):
        super().__init__(classifier, **common)
        self.scaled = decay is None
        self.decay = 0.99 if decay is None else check_fraction(decay, "decay")
        self.teacher = ema_copy(classifier)  # trainable, so that BatchNorm can take batch
        # statistics (batch_statistics_call); only the student's variables are optimised
        self.ema = ((self.teacher, self.classifier, self.decay),)

    def prepare(self, stream, epochs: int) -> None:
        steps = len(stream)
        if self.scaled and steps > 0:  # Tarvainen & Valpola: 0.99 (100 steps) of 150,000
            self.decay = scaled_horizon(100, 150_000, steps * epochs, floor=steps)
            self.ema = ((self.teacher, self.classifier, self.decay),)

    def models(self) -> dict:
        return {"classifier": self.classifier, "teacher": self.teacher}

    def unlabelled_loss(self, inputs, training):
        import tensorflow as tf

        xu = inputs["unlabelled"]
        p = self.probs(self.classifier, augment.weak(xu, self.step_seed(1)), training)
        t = tf.cast(batch_statistics_call(self.teacher, augment.weak(xu, self.step_seed(2))),
                    tf.float32)
        return consistency_loss(p, t), {}


def confidence_mask(probs, tau: float):
    """1 where an image's highest class probability reaches ``tau``, else 0."""
    import tensorflow as tf

    return tf.cast(tf.reduce_max(probs, -1) >= tau, tf.float32)


def fixmatch_loss(weak_probs, strong_probs, tau: float):
    """Mean over all images of the masked cross-entropy of the strong view on the weak view's
    arg-max; returns (loss, mask)."""
    import keras
    import tensorflow as tf

    weak_probs = tf.stop_gradient(weak_probs)
    mask = confidence_mask(weak_probs, tau)
    labels = tf.argmax(weak_probs, -1)
    ce = keras.losses.sparse_categorical_crossentropy(labels, strong_probs)
    return tf.reduce_mean(ce * mask), mask


def align_distribution(probs, prior, running):
    """ReMixMatch's distribution alignment: each row of ``probs`` times ``prior / running`` (the
    labelled class frequencies over the running mean of the model's unlabelled predictions),
    renormalised to sum 1. The identity when the model's predictions already follow the prior."""
    import tensorflow as tf

    scaled = probs * (prior / tf.maximum(running, 1e-6))[None]
    return scaled / tf.reduce_sum(scaled, -1, keepdims=True)


class FixMatch(SemiTask):
    """Weak view -> confident hard label -> strong view trained on it; see the docstring.

    As in the paper, the classifier returned (``final_classifier``) is an exponential moving
    average of the trained one's weights, ``ema_decay`` (0.999 over Sohn et al.'s 2^20 steps, a
    1,000-step horizon: 0.1% of the run) scaled to the run, without mean teacher's one-epoch
    floor: the average smooths the end of training, it is not a target that must span the
    pool. A run under ~1,049 steps evaluates its last weights (decay 0). An average over an
    epoch of a run of a few epochs lags a network that still improves fast, and averages
    BatchNorm statistics gathered under other weights (digits: 0.65 with it, 0.79 without,
    docs/semi.md). None with ``unlabelled_weight`` 0, which is the supervised run exactly.

    ``align=True``: the weak view's probabilities are distribution-aligned
    (``align_distribution``, Berthelot et al. 2020) before the threshold and the arg-max, against
    a running mean of the weak predictions over ``min(128, one epoch)`` steps (ReMixMatch: 128
    batches). Why: with a handful of labels, the early confident pseudo-labels can all be one
    class and train every unlabelled image into it (phantoms with 6 labels, docs/semi.md).
    """

    unlabelled_metrics = ("mask_rate",)

    def __init__(self, classifier, *, tau: float = 0.95, ema_decay: float | None = None,
                 flip: bool = False, align: bool = False, **common):
        rank = len(classifier.inputs[0].shape) if getattr(classifier, "inputs", None) else 0
        if rank != 4:
            raise InvalidArgumentError(
                f"fixmatch needs a 2D classifier (images (N, H, W, C)); this one takes inputs of "
                f"rank {rank}. Its strong augmentation is 2D: for volumes use mean_teacher, "
                "pi_model, temporal_ensembling or pseudo_label.")
        super().__init__(classifier, **common)
        self.tau = check_fraction(tau, "tau")
        if not isinstance(flip, bool):
            raise InvalidArgumentError(
                f"flip={flip!r}: give True (mirror the weak and strong views left-right at "
                "random: for images without a side) or False (the default: anatomy has one).")
        self.flip = flip
        if not isinstance(align, bool):
            raise InvalidArgumentError(
                f"align={align!r}: give True (align the pseudo-labels' class distribution with "
                "the labelled one, ReMixMatch) or False (the default: FixMatch as published).")
        self.align = align
        self.prior = self.running = None
        self.align_decay = 1.0 - 1.0 / 128
        self.scaled = ema_decay is None
        self.ema_decay = 0.999 if ema_decay is None else check_fraction(ema_decay, "ema_decay")
        self.averaged = None
        if self.unlabelled_weight > 0:
            self.averaged = ema_copy(classifier)
            self.averaged.trainable = False
            self.ema = ((self.averaged, self.classifier, self.ema_decay),)

    def prepare(self, stream, epochs: int) -> None:
        import numpy as np
        import tensorflow as tf

        steps = len(stream)
        if self.scaled and steps > 0 and self.averaged is not None:  # 1,000 of 2^20 steps
            self.ema_decay = scaled_horizon(1000, 2**20, steps * epochs, floor=1)
            self.ema = ((self.averaged, self.classifier, self.ema_decay),)
        if self.align:
            k = self.num_classes
            labels = None if _is_dataset(stream.labelled) else np.asarray(stream.labelled[1])
            prior = (np.full(k, 1.0 / k) if labels is None
                     else np.bincount(labels, minlength=k)[:k] / len(labels))
            self.prior = tf.Variable(prior.astype(np.float32), trainable=False)
            self.running = tf.Variable(tf.fill([k], 1.0 / k), trainable=False)
            if steps > 0:
                self.align_decay = 1.0 - 1.0 / min(128, steps)

    def state_variables(self) -> dict:
        extra = {"prior": self.prior, "running": self.running} if self.align and (
            self.running is not None) else {}
        return {**super().state_variables(), **extra}

    def models(self) -> dict:
        extra = {"ema": self.averaged} if self.averaged is not None else {}
        return {"classifier": self.classifier, **extra}

    def final_classifier(self):
        return self.averaged if self.averaged is not None else self.classifier

    def unlabelled_loss(self, inputs, training):
        import tensorflow as tf

        xu = inputs["unlabelled"]
        weak = tf.cast(self.classifier(augment.weak(xu, self.step_seed(1), self.flip),
                                       training=training), tf.float32)
        strong = tf.cast(self.classifier(augment.strong(xu, self.step_seed(2), self.flip),
                                         training=training), tf.float32)
        if self.align:
            weak = self.aligned(tf.stop_gradient(weak))
        loss, mask = fixmatch_loss(weak, strong, self.tau)
        return loss, {"mask_rate": (tf.reduce_sum(mask), tf.cast(tf.size(mask), tf.float32))}

    def aligned(self, weak):
        """The weak view's probabilities aligned with the labelled prior; the running mean of
        the predictions takes this batch's in first."""
        import tensorflow as tf

        if self.running is None:
            raise DataError("fixmatch align=True keeps a running mean over the unlabelled pool: "
                            "give the unlabelled images as an array (zoo.semi.fit), not a "
                            "pipeline, or align=False.")
        d = self.align_decay
        self.running.assign(d * self.running + (1 - d) * tf.reduce_mean(weak, 0))
        return align_distribution(weak, self.prior, self.running)


def _common(num_classes, unlabelled_weight, seed) -> dict:
    return {"num_classes": num_classes, "unlabelled_weight": check_weight(unlabelled_weight),
            "seed": seed}


@register_method("pi_model", family="consistency",
                 summary="two weak views must agree (squared difference; Laine & Aila 2017)",
                 backbones=_ANY)
def make_pi_model(model, *, num_classes, unlabelled_weight, seed, ramp_up: int = 200):
    return PiModel(model, ramp_up=ramp_up, **_common(num_classes, unlabelled_weight, seed))


@register_method("temporal_ensembling", family="consistency",
                 summary="target: bias-corrected moving average of each image's past predictions",
                 backbones=_ANY + "; unlabelled images as an array")
def make_temporal_ensembling(model, *, num_classes, unlabelled_weight, seed,
                             alpha: float | None = None, ramp_up: int = 200):
    """``alpha`` None: Laine & Aila's 0.6 (an ensemble over 2.5 epochs of a 300-epoch run) scaled
    to the run's epochs, at least the last epoch (alpha 0 below 120 epochs, 0.6 at 300)."""
    return TemporalEnsembling(model, alpha=alpha, ramp_up=ramp_up,
                              **_common(num_classes, unlabelled_weight, seed))


@register_method("mean_teacher", family="consistency",
                 summary="target: an EMA teacher of every student variable (Tarvainen & Valpola)",
                 backbones=_ANY)
def make_mean_teacher(model, *, num_classes, unlabelled_weight, seed,
                      decay: float | None = None, ramp_up: int = 200):
    """``decay`` None: Tarvainen & Valpola's 0.99 (a teacher averaging 100 steps of a 150,000-step
    SVHN run) scaled to the run's steps, at least one epoch (0.99 from 150,000 steps on; a
    tf.data unlabelled pipeline of unknown length keeps 0.99)."""
    return MeanTeacher(model, decay=decay, ramp_up=ramp_up,
                       **_common(num_classes, unlabelled_weight, seed))


@register_method("fixmatch", family="consistency",
                 summary="weak view's confident label trains the strong view (Sohn et al. 2020)",
                 backbones="any zoo classifier (2D; the strong augmentation is 2D)")
def make_fixmatch(model, *, num_classes, unlabelled_weight, seed, tau: float = 0.95,
                  ema_decay: float | None = None, flip: bool = False, align: bool = False):
    """``ema_decay`` None: the paper's 0.999 scaled to the run, 0 below ~1,049 steps (see
    ``FixMatch``). ``flip``: mirror the weak and strong views left-right at random (the paper's
    CIFAR recipe); off by default because the weak view's prediction becomes a hard label, and
    a mirrored chest, heart or digit is another image (situs, laterality): turn it on for
    images without a side (histology, dermoscopy, cells). ``align``: distribution alignment of
    the pseudo-labels with the labelled class frequencies (``FixMatch``)."""
    return FixMatch(model, tau=tau, ema_decay=ema_decay, flip=flip, align=align,
                    **_common(num_classes, unlabelled_weight, seed))



