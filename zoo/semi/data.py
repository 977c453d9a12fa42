"""The labelled and unlabelled streams of semi-supervised training, and their checks.

``SemiStream`` gives the engine ``dataset(epoch)``: a deterministic order per epoch (what an
exact resume needs) of ``({"labelled": xl, "unlabelled": xu, "index": iu}, yl, wl)`` batches.
One epoch is one pass over the unlabelled images; the labelled images are reshuffled and cycled as
often as that takes. ``iu`` holds each unlabelled image's row in ``u`` (temporal ensembling and
pseudo-labels keep per-image state by it), or -1 when the unlabelled stream is a tf.data pipeline
(e.g. the DICOM one), which either stream may be.
"""

from __future__ import annotations

import math

import numpy as np

from zoo.errors import DataError, InvalidArgumentError


def _positive(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise InvalidArgumentError(f"{name}={value!r}: give a positive integer.")
    return int(value)


def _is_dataset(data) -> bool:
    return type(data).__module__.startswith("tensorflow") and hasattr(data, "element_spec")


def check_inputs(x, y, u, num_classes: int) -> None:
    """DataErrors, before training, for inputs semi-supervised training cannot use.

    Unlabelled images of another shape or value range than the labelled ones, no unlabelled
    images, labels outside [0, num_classes), NaN or infinite values.
    """
    x, y, u = np.asarray(x), np.asarray(y), np.asarray(u)
    if len(x) != len(y):
        raise DataError(f"{len(x)} labelled images but {len(y)} labels; give one label per image.")
    if len(x) == 0:
        raise DataError("no labelled images; give at least one per class.")
    if u.ndim == 0 or len(u) == 0:
        raise DataError("no unlabelled images (unlabelled= is empty); give the unlabelled pool, "
                        "or train with method='supervised' / zoo.finetune.")
    if u.shape[1:] != x.shape[1:]:
        raise DataError(f"unlabelled images of shape {u.shape[1:]} but labelled ones of shape "
                        f"{x.shape[1:]}; resample both to one shape and channel count.")
    for what, a in (("labelled images", x), ("unlabelled images", u), ("labels", y)):
        if a.dtype.kind not in "biuf":
            raise DataError(f"the {what} are of type {a.dtype}; give numbers.")
        if not np.all(np.isfinite(a)):
            raise DataError(f"the {what} hold NaN or infinity; drop or fix those examples.")
    _check_labels(y, num_classes)
    _check_same_range(x, u)


def _check_labels(y: np.ndarray, num_classes: int) -> None:
    if y.ndim != 1:
        raise DataError(f"labels of shape {y.shape}; give one class index per image (N,).")
    if not np.all(np.mod(y, 1) == 0):
        raise DataError(f"labels such as {y[:3].tolist()} are not class indices 0..K-1.")
    if y.min() < 0 or y.max() >= num_classes:
        raise DataError(f"labels go from {y.min():g} to {y.max():g} but there are {num_classes} "
                        f"classes; give class indices 0..{num_classes - 1} (or num_classes=).")


def _check_same_range(x: np.ndarray, u: np.ndarray) -> None:
    """Same value range: e.g. [0, 1] unlabelled images next to [0, 255] labelled ones."""
    lo, hi = float(x.min()), float(x.max())
    ulo, uhi = float(u.min()), float(u.max())
    span = max(hi - lo, 1e-6)
    uspan = max(uhi - ulo, 1e-6)
    if uspan > 4 * span or span > 4 * uspan or ulo > hi or uhi < lo:
        raise DataError(
            f"unlabelled images span [{ulo:.3g}, {uhi:.3g}] but labelled ones [{lo:.3g}, "
            f"{hi:.3g}]; scale (or window) both the same way, e.g. grey values in [0, 255].")


class SemiStream:
    """Labelled + unlabelled batches for the engine; see the module docstring.

    labelled: (x, y) arrays, or a tf.data.Dataset of (x, y[, w]) batches (repeated as needed).
    unlabelled: an array u, or a tf.data.Dataset of image batches (or tuples, image first).
    batch_size: labelled images per step. unlabelled_batch_size: unlabelled ones (default
    ``batch_size``). seed: with the epoch, fixes every order.
    """

    def __init__(self, labelled, unlabelled, *, batch_size: int,
                 unlabelled_batch_size: int | None = None, seed: int = 0):
        self.batch_size = _positive(batch_size, "batch_size")
        self.unlabelled_batch_size = _positive(
            unlabelled_batch_size if unlabelled_batch_size is not None else batch_size,
            "unlabelled_batch_size")
        self.seed = int(seed)
        self.labelled, self.unlabelled = labelled, unlabelled
        if not _is_dataset(labelled):
            if not isinstance(labelled, tuple | list) or len(labelled) != 2:
                raise InvalidArgumentError(
                    "labelled= must be (images, labels) or a tf.data.Dataset of batches.")
            x, y = (np.asarray(a) for a in labelled)
            if len(x) != len(y) or len(x) == 0:
                raise DataError(f"labelled= holds {len(x)} images and {len(y)} labels; give one "
                                "label per image, at least one image.")
            self.labelled = (x.astype(np.float32), y.astype(np.int32))
        if not _is_dataset(unlabelled):
            u = np.asarray(unlabelled)
            if u.ndim == 0 or len(u) == 0:
                raise DataError("no unlabelled images (unlabelled= is empty).")
            self.unlabelled = u.astype(np.float32)

    def __len__(self) -> int:
        """Steps per epoch (unknown for an unlabelled tf.data pipeline of unknown length: -1)."""
        if _is_dataset(self.unlabelled):
            return int(self.unlabelled.cardinality())
        return math.ceil(len(self.unlabelled) / self.unlabelled_batch_size)

    def unlabelled_order(self, epoch: int) -> np.ndarray:
        """The rows of ``u`` in this epoch's order."""
        return np.random.default_rng([self.seed, epoch, 1]).permutation(len(self.unlabelled))

    def labelled_order(self, epoch: int, count: int) -> np.ndarray:
        """``count`` labelled rows: this epoch's shuffles of the labelled set, one after another."""
        n = len(self.labelled[0])
        rng = np.random.default_rng([self.seed, epoch, 0])
        return np.concatenate([rng.permutation(n) for _ in range(math.ceil(count / n))])[:count]

    def _unlabelled(self, epoch: int):
        import tensorflow as tf

        if _is_dataset(self.unlabelled):
            def first(*item):  # images, or a tuple with the images first
                x = item[0]
                return tf.cast(x, tf.float32), tf.fill([tf.shape(x)[0]], tf.constant(-1, tf.int64))
            return self.unlabelled.map(first)
        idx = self.unlabelled_order(epoch)
        ds = tf.data.Dataset.from_tensor_slices((self.unlabelled[idx], idx.astype(np.int64)))
        return ds.batch(self.unlabelled_batch_size)

    def _labelled(self, epoch: int, steps: int):
        import tensorflow as tf

        from zoo.train.engine import _normalise_batch

        if _is_dataset(self.labelled):
            return self.labelled.map(_normalise_batch).repeat()
        x, y = self.labelled
        if steps < 0:  # unknown length: an endless seeded shuffle
            ds = tf.data.Dataset.from_tensor_slices((x, y, np.ones(len(y), np.float32)))
            return ds.shuffle(len(y), seed=self.seed + epoch).repeat().batch(self.batch_size)
        idx = self.labelled_order(epoch, steps * self.batch_size)
        ds = tf.data.Dataset.from_tensor_slices((x[idx], y[idx], np.ones(len(idx), np.float32)))
        return ds.batch(self.batch_size)

    def dataset(self, epoch: int):
        """This epoch's ({"labelled", "unlabelled", "index"}, yl, wl) batches."""
        import tensorflow as tf

        from zoo.train.batches import finish_batches

        labelled = self._labelled(epoch, len(self))
        pairs = tf.data.Dataset.zip((labelled, self._unlabelled(epoch)))

        def join(lab, unl):
            xl, yl, wl = lab
            xu, iu = unl
            return ({"labelled": tf.cast(xl, tf.float32), "unlabelled": xu, "index": iu},
                    tf.cast(yl, tf.int32), tf.cast(wl, tf.float32))

        return finish_batches(pairs.map(join))
