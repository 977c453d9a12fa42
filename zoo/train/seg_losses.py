"""Segmentation losses: one registry (``SEG_LOSSES``), written in ``keras.ops``.

Every loss maps ``(target, prediction)``, both channels-last ``(N, *spatial, K)`` in 2D or 3D,
to one value per image ``(N,)`` (the engine averages over the global batch, so the losses run
under any strategy; they compute in the prediction's dtype, float32 or float64).

Two kinds of masks, one rule (``zoo.train.tasks.Segmentation`` applies it):

- **multi-class**: one class per pixel; the target is the one-hot of an integer mask and the
  prediction a softmax over K classes (channel 0 is the background);
- **multi-label**: K independent 0/1 channels (overlapping structures); the prediction is K
  sigmoids and every channel is a label (there is no background channel).

Terms (p: probability, t: target, sums over the pixels of one image, s = ``smooth``):

- region terms, per image and class: Dice ``(2 sum pt + s) / (sum p + sum t + s)``; Tversky
  ``(TP + s) / (TP + alpha FP + beta FN + s)`` (alpha weighs false positives, beta false
  negatives; Salehi et al. 2017), so alpha = beta = 0.5 is Dice with ``smooth`` doubled.
  Classes are averaged per image, weighted by ``class_weight``: ``sum_k w_k R_k / sum_k w_k``.
  ``include_background=False`` drops class 0 from that mean (multi-class only; a multi-label
  mask has no background channel, so it changes nothing there). A class absent from both the
  mask and the prediction scores 1 (nothing to find, nothing found).
- pixel terms, averaged over pixels (and channels, multi-label): cross-entropy ``-log p`` of the
  true class (multi-class) or binary cross-entropy per channel (multi-label); focal (Lin et al.
  2017) multiplies it by ``(1 - p_t) ** gamma`` and by ``alpha`` for foreground, ``1 - alpha``
  for background (multi-class: classes 1.. vs class 0; multi-label: t = 1 vs t = 0), so with
  K = 2 softmax it equals the binary sigmoid form. ``class_weight`` multiplies each pixel's term
  by the weight of its true class (multi-label: of the channel), without renormalising (Keras'
  ``class_weight`` convention); ``include_background`` does not apply (as in MONAI's DiceCE).

Probabilities are clipped to [1e-7, 1] before a log; with ``from_logits=True`` the losses take
logits and use log-softmax / log-sigmoid instead (exact, no clipping).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from zoo.errors import DataError, InvalidArgumentError
from zoo.registry import Registry, keyword_parameters

EPSILON = 1e-7  # the clip before a log of a probability (Keras' epsilon)

SEG_LOSSES: Registry = Registry(
    "segmentation loss",
    argument="loss",
    hint="Options go to zoo.train.seg_losses.segmentation_loss(name, **options).",
)


def _number(value, name: str, low: float = 0.0, high: float = np.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.number) or not (
        low <= value <= high
    ):
        raise InvalidArgumentError(f"{name}={value!r}: give a number in [{low}, {high}].")
    return float(value)


def check_class_weight(class_weight, num_classes: int) -> tuple[float, ...] | None:
    """``class_weight`` (None, a sequence of K weights or {class: weight}) as K floats.

    Raises:
        InvalidArgumentError: a weight that is negative or not a number, a class outside
            0..K-1, a sequence of another length, or "balanced" (it needs the masks:
            ``class_weights_from_masks``).
    """
    if class_weight is None:
        return None
    if isinstance(class_weight, str):
        raise InvalidArgumentError(
            f"class_weight={class_weight!r}: a loss takes weights, not a rule; compute them from "
            "the training masks with zoo.train.seg_losses.class_weights_from_masks (zoo.finetune "
            "does so for 'balanced')."
        )
    if isinstance(class_weight, Mapping):
        bad = [k for k in class_weight
               if isinstance(k, bool) or not isinstance(k, int | np.integer)
               or not 0 <= k < num_classes]
        if bad:
            raise InvalidArgumentError(
                f"class_weight keys {bad} are not classes 0..{num_classes - 1}."
            )
        table = [1.0] * num_classes
        for k, v in class_weight.items():
            table[int(k)] = v
        class_weight = table
    if not isinstance(class_weight, Sequence | np.ndarray) or len(class_weight) != num_classes:
        raise InvalidArgumentError(
            f"class_weight={class_weight!r}: give {num_classes} weights (one per class or channel "
            "of the model's output) or a {class: weight} dict."
        )
    weights = tuple(_number(w, "class_weight entry") for w in class_weight)
    if not sum(weights) > 0:
        raise InvalidArgumentError(f"class_weight={class_weight!r}: at least one must be > 0.")
    return weights


def class_weights_from_masks(masks, num_classes: int, multilabel: bool = False) -> list[float]:
    """Inverse-frequency class weights ``n / (K * count_k)`` from pixel counts (sklearn's
    "balanced" rule, per pixel instead of per image); a class with no pixel gets 0.

    Args:
        masks: integer masks (N, *spatial) (multi-class) or 0/1 masks (N, *spatial, K)
            (``multilabel``: counts are the positive pixels of each channel).
        num_classes: K.
        multilabel: whether ``masks`` hold one 0/1 channel per label.

    Returns:
        K weights (a list of floats).

    Raises:
        DataError: masks without any labelled pixel.
    """
    m = np.asarray(masks)
    if multilabel:
        counts = m.reshape(-1, m.shape[-1]).astype(bool).sum(0).astype(np.float64)
    else:
        counts = np.bincount(m.astype(np.int64).ravel(), minlength=num_classes)[:num_classes]
        counts = counts.astype(np.float64)
    if not counts.sum() > 0:
        raise DataError("class_weight='balanced': the masks hold no labelled pixel to count.")
    weights = np.where(counts > 0, counts.sum() / (num_classes * np.maximum(counts, 1)), 0.0)
    return weights.tolist()


class SegmentationLoss:
    """Base of the registered losses: options checked at construction, ``__call__`` per image.

    Args:
        class_weight: None or K per-class (multi-label: per-channel) weights, or {class: weight}
            (resolved once the number of classes is known).
        include_background: keep class 0 in the region terms' class mean (multi-class).
        from_logits: the prediction holds logits, not probabilities.
    """

    name = ""

    def __init__(self, *, class_weight=None, include_background: bool = True,
                 from_logits: bool = False):
        if not isinstance(include_background, bool) or not isinstance(from_logits, bool):
            raise InvalidArgumentError(
                f"include_background={include_background!r}, from_logits={from_logits!r}: give "
                "True or False."
            )
        if isinstance(class_weight, str):
            check_class_weight(class_weight, 0)  # raises: a rule, not weights
        elif isinstance(class_weight, Sequence | np.ndarray):
            check_class_weight(class_weight, len(class_weight))
        elif class_weight is not None and not isinstance(class_weight, Mapping):
            raise InvalidArgumentError(
                f"class_weight={class_weight!r}: give one weight per class (a sequence) or a "
                "{class: weight} dict."
            )
        self.class_weight = class_weight
        self.include_background, self.from_logits = include_background, from_logits

    # --- what every loss shares -------------------------------------------------------------

    def options(self) -> dict:
        """The constructor's arguments, for run records and ``repr``."""
        return {n: getattr(self, n) for n in keyword_parameters(type(self))}

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.options().items())
        return f"segmentation_loss({self.name!r}, {shown})"

    def weights(self, num_classes: int, dtype, *, region: bool, multilabel: bool):
        """The (K,) class weights of a term: ``class_weight`` (or ones), class 0 zeroed for a
        region term of a multi-class loss without background."""
        from keras import ops

        table = list(check_class_weight(self.class_weight, num_classes) or [1.0] * num_classes)
        if region and not multilabel and not self.include_background:
            if num_classes < 2:
                raise InvalidArgumentError(
                    "include_background=False with one class leaves nothing to average."
                )
            table[0] = 0.0
        if not sum(table) > 0:
            raise InvalidArgumentError(
                f"class weights {table} leave no class with a weight above 0 in the class mean."
            )
        return ops.cast(np.asarray(table), dtype)

    def probabilities(self, pred, multilabel: bool):
        from keras import ops

        if not self.from_logits:
            return pred
        return ops.sigmoid(pred) if multilabel else ops.softmax(pred, axis=-1)

    def log_probabilities(self, pred, multilabel: bool):
        """(log p, log(1 - p)) for multi-label, (log p, None) for multi-class."""
        from keras import ops

        if self.from_logits:
            if multilabel:
                return ops.log_sigmoid(pred), ops.log_sigmoid(-pred)
            return ops.log_softmax(pred, axis=-1), None
        log_p = ops.log(ops.clip(pred, EPSILON, 1.0))
        return log_p, (ops.log(ops.clip(1.0 - pred, EPSILON, 1.0)) if multilabel else None)

    def __call__(self, target, pred, *, multilabel: bool = False):
        """The loss of each image (N,) from targets and predictions (N, *spatial, K)."""
        from keras import ops

        pred = ops.convert_to_tensor(pred)
        target = ops.cast(target, pred.dtype)
        return self.per_image(target, pred, multilabel)

    def per_image(self, target, pred, multilabel: bool):
        raise NotImplementedError

    # --- the terms ---------------------------------------------------------------------------

    def class_mean(self, values, multilabel: bool):
        """Per-image weighted mean over classes of (N, K) values."""
        from keras import ops

        w = self.weights(values.shape[-1], values.dtype, region=True, multilabel=multilabel)
        return ops.sum(values * w, axis=-1) / ops.sum(w)

    def pixel_mean(self, terms):
        """Per-image mean of (N, *spatial) or (N, *spatial, K) pixel terms."""
        from keras import ops

        return ops.mean(ops.reshape(terms, (ops.shape(terms)[0], -1)), axis=-1)

    def cross_entropy_terms(self, target, pred, multilabel: bool, gamma=0.0, alpha=None):
        """Per-pixel (multi-class, summed over classes) or per-pixel-and-channel (multi-label)
        class-weighted (focal) cross-entropy."""
        from keras import ops

        k = pred.shape[-1]
        w = self.weights(k, pred.dtype, region=False, multilabel=multilabel)
        log_p, log_q = self.log_probabilities(pred, multilabel)
        if multilabel:
            p = ops.exp(log_p)
            pos, neg = -target * log_p, -(1.0 - target) * log_q
            if gamma:
                pos, neg = pos * ops.power(1.0 - p, gamma), neg * ops.power(p, gamma)
            if alpha is not None:
                pos, neg = pos * alpha, neg * (1.0 - alpha)
            return (pos + neg) * w
        terms = -target * log_p
        if gamma:
            terms = terms * ops.power(1.0 - ops.exp(log_p), gamma)
        if alpha is not None:
            a = np.full(k, alpha)
            a[0] = 1.0 - alpha
            w = w * ops.convert_to_tensor(a, dtype=pred.dtype)
        return ops.sum(terms * w, axis=-1)

    def region_sums(self, target, pred, multilabel: bool):
        """(TP, FP, FN) per image and class (N, K), soft."""
        from keras import ops

        p = self.probabilities(pred, multilabel)
        axes = tuple(range(1, len(pred.shape) - 1))
        tp = ops.sum(p * target, axis=axes)
        return tp, ops.sum(p, axis=axes) - tp, ops.sum(target, axis=axes) - tp


def _smooth(value) -> float:
    return _number(value, "smooth")


@SEG_LOSSES.register("dice")
class Dice(SegmentationLoss):
    """1 - the class mean of the per-image soft Dice (Milletari et al. 2016)."""

    name = "dice"

    def __init__(self, smooth: float = 1e-5, **common):
        super().__init__(**common)
        self.smooth = _smooth(smooth)

    def dice(self, target, pred, multilabel: bool):
        """Per-image, per-class soft Dice (N, K)."""
        tp, fp, fn = self.region_sums(target, pred, multilabel)
        return (2.0 * tp + self.smooth) / (2.0 * tp + fp + fn + self.smooth)

    def per_image(self, target, pred, multilabel):
        return 1.0 - self.class_mean(self.dice(target, pred, multilabel), multilabel)


@SEG_LOSSES.register("ce")
class CrossEntropy(SegmentationLoss):
    """Pixel-averaged, class-weighted cross-entropy (binary per channel when multi-label)."""

    name = "ce"

    def per_image(self, target, pred, multilabel):
        return self.pixel_mean(self.cross_entropy_terms(target, pred, multilabel))


@SEG_LOSSES.register("focal")
class Focal(SegmentationLoss):
    """Focal loss (Lin et al. 2017): cross-entropy times ``(1 - p_t) ** gamma``; ``alpha`` (None or
    in [0, 1]) weighs foreground by alpha and background by 1 - alpha. gamma=0, alpha=None is
    ``"ce"``."""

    name = "focal"

    def __init__(self, gamma: float = 2.0, alpha: float | None = None, **common):
        super().__init__(**common)
        self.gamma = _number(gamma, "gamma")
        self.alpha = None if alpha is None else _number(alpha, "alpha", 0.0, 1.0)

    def per_image(self, target, pred, multilabel):
        return self.pixel_mean(
            self.cross_entropy_terms(target, pred, multilabel, self.gamma, self.alpha)
        )


@SEG_LOSSES.register("tversky")
class Tversky(SegmentationLoss):
    """1 - the class mean of the Tversky index ``(TP + s) / (TP + alpha FP + beta FN + s)``;
    the defaults (0.3, 0.7) penalise missed pixels more than false alarms (small lesions)."""

    name = "tversky"

    def __init__(self, alpha: float = 0.3, beta: float = 0.7, smooth: float = 1e-5, **common):
        super().__init__(**common)
        self.alpha, self.beta = _number(alpha, "alpha"), _number(beta, "beta")
        self.smooth = _smooth(smooth)

    def index(self, target, pred, multilabel):
        tp, fp, fn = self.region_sums(target, pred, multilabel)
        return (tp + self.smooth) / (tp + self.alpha * fp + self.beta * fn + self.smooth)

    def per_image(self, target, pred, multilabel):
        return 1.0 - self.class_mean(self.index(target, pred, multilabel), multilabel)


@SEG_LOSSES.register("focal_tversky")
class FocalTversky(Tversky):
    """Focal Tversky (Abraham and Khan 2019): the class mean of ``(1 - TI) ** gamma``; their
    exponent 1/gamma with gamma = 4/3 is this ``gamma`` = 0.75 (< 1 stresses hard classes)."""

    name = "focal_tversky"

    def __init__(self, alpha: float = 0.3, beta: float = 0.7, gamma: float = 0.75,
                 smooth: float = 1e-5, **common):
        super().__init__(alpha, beta, smooth, **common)
        self.gamma = _number(gamma, "gamma")

    def per_image(self, target, pred, multilabel):
        from keras import ops

        # clipped: (1 - TI) ** gamma with gamma < 1 has an infinite slope at a perfect image
        miss = ops.maximum(1.0 - self.index(target, pred, multilabel), EPSILON)
        return self.class_mean(ops.power(miss, self.gamma), multilabel)


@SEG_LOSSES.register("dice_ce")
class DiceCE(Dice):
    """``lambda_dice`` * Dice + ``lambda_ce`` * cross-entropy (nnU-Net's default loss)."""

    name = "dice_ce"

    def __init__(self, smooth: float = 1e-5, lambda_dice: float = 1.0, lambda_ce: float = 1.0,
                 **common):
        super().__init__(smooth, **common)
        self.lambda_dice = _number(lambda_dice, "lambda_dice")
        self.lambda_ce = _number(lambda_ce, "lambda_ce")

    def per_image(self, target, pred, multilabel):
        ce = self.pixel_mean(self.cross_entropy_terms(target, pred, multilabel))
        return self.lambda_dice * super().per_image(target, pred, multilabel) + self.lambda_ce * ce


@SEG_LOSSES.register("dice_focal")
class DiceFocal(Dice):
    """``lambda_dice`` * Dice + ``lambda_focal`` * focal (``gamma``, ``alpha``)."""

    name = "dice_focal"

    def __init__(self, smooth: float = 1e-5, gamma: float = 2.0, alpha: float | None = None,
                 lambda_dice: float = 1.0, lambda_focal: float = 1.0, **common):
        super().__init__(smooth, **common)
        self.gamma = _number(gamma, "gamma")
        self.alpha = None if alpha is None else _number(alpha, "alpha", 0.0, 1.0)
        self.lambda_dice = _number(lambda_dice, "lambda_dice")
        self.lambda_focal = _number(lambda_focal, "lambda_focal")

    def per_image(self, target, pred, multilabel):
        focal = self.pixel_mean(
            self.cross_entropy_terms(target, pred, multilabel, self.gamma, self.alpha)
        )
        dice = super().per_image(target, pred, multilabel)
        return self.lambda_dice * dice + self.lambda_focal * focal


def segmentation_loss(name="dice_ce", **options) -> SegmentationLoss:
    """A segmentation loss by name (``SEG_LOSSES``), its options checked now, not at the first step.

    Args:
        name: "dice", "ce", "dice_ce", "focal", "dice_focal", "tversky" or "focal_tversky"; or
            a SegmentationLoss (returned as is, then no options).
        **options: the loss's own (``smooth``, ``gamma``, ``alpha``, ``beta``, ``lambda_*``) and
            the common ``class_weight``, ``include_background``, ``from_logits``.

    Returns:
        The loss, a callable ``loss(target, prediction, multilabel=False) -> (N,)``.

    Raises:
        UnknownNameError: an unregistered name (with a suggestion).
        InvalidArgumentError: an option the loss does not take, or a bad value.
    """
    if isinstance(name, SegmentationLoss):
        if options:
            raise InvalidArgumentError(
                f"loss={name!r} is already built; give its options to segmentation_loss(name, ...) "
                f"once, not again ({sorted(options)})."
            )
        return name
    return SEG_LOSSES.build(name, options)


def deep_supervision_weights(n: int) -> list[float]:
    """nnU-Net's weights of ``n`` outputs, full resolution first: halving per level, sum 1."""
    raw = [0.5**i for i in range(n)]
    return [r / sum(raw) for r in raw]
