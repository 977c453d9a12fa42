"""The segmentation ``tf.data`` pipeline: cases -> samples (zoo.data.seg_sampling) -> augmented
alike (zoo.data.seg_augment) -> batches of (image, mask) or (patch, centre label).

Streaming: a shuffled index of cases is mapped in parallel (``tf.numpy_function``) to
``samples_per_case`` samples of one case, so a case is loaded once per epoch and only its
samples are kept; ``unbatch``, a seeded shuffle buffer that mixes cases, then ``batch``.
Cases are arrays in memory, or items a ``loader`` (or the item itself, when callable) turns into
(image, mask) arrays on use, e.g. a NIfTI reader. Every random number of a case's samples comes
from one ``np.random.Generator`` seeded by (seed, case, a per-epoch draw of
``tf.data.Dataset.random(seed)``), so a dataset built twice with the same seed yields the same
batches, and each epoch new ones.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

from zoo.data.seg_augment import make_policy
from zoo.data.seg_sampling import Case, make_case, make_sampler
from zoo.errors import DataError, InvalidArgumentError


def _is_pair(item) -> bool:
    if isinstance(item, Mapping):
        return "image" in item and "mask" in item
    return isinstance(item, tuple | list) and len(item) == 2


def _unpack(got, name: str):
    if isinstance(got, Mapping) and "image" in got and "mask" in got:
        return got["image"], got["mask"]
    if isinstance(got, tuple | list) and len(got) == 2:
        return got[0], got[1]
    raise DataError(
        f"{name}: the loader returned {type(got).__name__}; a loader returns (image, mask) "
        "arrays or {'image': ..., 'mask': ...}."
    )


def _name(item, index: int) -> str:
    if isinstance(item, str | os.PathLike):
        return f"case {index} ({os.fspath(item)})"
    return f"case {index}"


class SegmentationData:
    """The numpy side of ``segmentation_dataset``: case loading, sampling and augmentation.

    ``samples(index, draw)`` -> (images, targets) of one case, the function ``tf.data`` runs;
    ``image_shape`` / ``target_shape`` / ``target_dtype`` describe one sample; ``len()`` is the
    number of samples per epoch.
    """

    def __init__(self, cases, sampler="patch", *, loader=None, augment=None,
                 samples_per_case: int = 4, seed: int = 0, num_classes: int | None = None,
                 one_hot: bool = False, multilabel: bool | None = None, **sampler_options):
        if isinstance(cases, str | os.PathLike | Mapping) or not isinstance(cases, Sequence):
            raise InvalidArgumentError(
                "cases= takes a list: (image, mask) pairs, {'image', 'mask'} dicts, callables "
                "returning them, or items (paths) with loader=."
            )
        if not cases:
            raise DataError("cases= is empty; give at least one (image, mask) case.")
        if isinstance(samples_per_case, bool) or not isinstance(samples_per_case, int) or (
            samples_per_case < 1
        ):
            raise InvalidArgumentError(
                f"samples_per_case={samples_per_case!r}: give a positive integer."
            )
        if one_hot and not num_classes:
            raise InvalidArgumentError("one_hot=True needs num_classes= (the number of classes).")
        if loader is not None and not callable(loader):
            raise InvalidArgumentError("loader= takes a function: item -> (image, mask) arrays.")
        self.items, self.loader = list(cases), loader
        self.sampler = make_sampler(sampler, **sampler_options)
        self.policy = make_policy(augment, seed)
        self.samples_per_case, self.seed = samples_per_case, int(seed)
        self.num_classes, self.one_hot, self.multilabel = num_classes, bool(one_hot), multilabel
        self._cases = self._eager()
        self._describe(self._cases[0] if self._cases else self.load(0))
        for case in self._cases or ():
            self._check(case)

    def _eager(self) -> list[Case] | None:
        """Every case checked now when all are arrays in memory; None when any loads lazily."""
        if self.loader is not None or not all(_is_pair(i) for i in self.items):
            return None
        return [self._case(item, _name(item, i)) for i, item in enumerate(self.items)]

    def _case(self, got, name: str) -> Case:
        image, mask = _unpack(got, name)
        if isinstance(image, str | os.PathLike) or isinstance(mask, str | os.PathLike):
            raise InvalidArgumentError(
                f"{name} holds paths ({os.fspath(image)!r}, ...); pass loader= a function "
                "reading an item into (image, mask) arrays (e.g. a NIfTI reader)."
            )
        return make_case(image, mask, name, multilabel=self.multilabel,
                         num_classes=self.num_classes)

    def load(self, index: int) -> Case:
        """Case ``index``, loaded (and checked) now."""
        if self._cases is not None:
            return self._cases[index]
        item, name = self.items[index], _name(self.items[index], index)
        if self.loader is not None:
            got = self.loader(item)
        elif callable(item):
            got = item()
        elif _is_pair(item):
            got = item
        else:
            raise InvalidArgumentError(
                f"{name} is a {type(item).__name__}; give (image, mask) arrays, a function "
                "returning them, or loader= to read such items."
            )
        return self._case(got, name)

    def _describe(self, case: Case) -> None:
        """Shapes and dtypes of one sample, from the first case (every case must match)."""
        if self.one_hot and case.multilabel:
            raise InvalidArgumentError(
                f"one_hot=True with a multi-label mask ({case.name}: {case.mask.shape}): its "
                "channels are already one target per class; drop one_hot."
            )
        self.sampler.check(case)
        self.image_shape, self.window_shape = self.sampler.shapes(case)
        tail = self.sampler.target(np.zeros(self.window_shape, np.int32)).shape
        if self.one_hot:
            tail = (*tail, self.num_classes)
        self.target_shape = tuple(tail)
        self.target_dtype = np.float32 if (self.one_hot or case.multilabel) else np.int32

    def _check(self, case: Case) -> None:
        self.sampler.check(case)
        shapes = self.sampler.shapes(case)
        if shapes != (self.image_shape, self.window_shape):
            raise DataError(
                f"{case.name} gives samples of shape {shapes[0]} (mask {shapes[1]}), the first "
                f"case {self.image_shape} (mask {self.window_shape}); batches need one shape: "
                "give patch_size=..., or resample the cases to one grid and channel count."
            )

    def target(self, mask: np.ndarray) -> np.ndarray:
        """The target of one (augmented) mask window: labels, one-hot or multi-label floats."""
        t = self.sampler.target(mask)
        if self.one_hot:
            return np.eye(self.num_classes, dtype=np.float32)[t]
        return np.asarray(t, self.target_dtype)

    def samples(self, index, draw) -> tuple[np.ndarray, np.ndarray]:
        """(images, targets) of ``samples_per_case`` samples of case ``index``; ``draw`` is the
        per-epoch random integer that, with the seed and the index, seeds the Generator."""
        index = int(index)
        case = self.load(index)
        if self._cases is None:
            self._check(case)
        rng = np.random.default_rng([self.seed, index, int(draw) % 2**63])
        images, targets = [], []
        for _ in range(self.samples_per_case):
            s = self.sampler.draw(case, rng)
            image, mask = s.image, s.mask
            if self.policy is not None:
                image, mask = self.policy.apply(image, mask, rng)
            images.append(image)
            targets.append(self.target(mask))
        return np.stack(images).astype(np.float32), np.stack(targets)

    def __len__(self) -> int:
        return len(self.items) * self.samples_per_case

    def dataset(self, batch_size: int = 2, shuffle: bool = True, repeat: bool = False,
                drop_remainder: bool = False, shuffle_buffer: int | None = None):
        """The batched ``tf.data.Dataset`` of (image, target), static shapes set."""
        import tensorflow as tf

        n, per = len(self.items), self.samples_per_case
        image_shape, target_shape = [per, *self.image_shape], [per, *self.target_shape]
        ydtype = tf.as_dtype(self.target_dtype)

        def load(index, draw):
            x, y = tf.numpy_function(self.samples, [index, draw], (tf.float32, ydtype),
                                     stateful=False)
            x.set_shape(image_shape)
            y.set_shape(target_shape)
            return x, y

        ds = tf.data.Dataset.range(n)
        if shuffle:
            ds = ds.shuffle(n, seed=self.seed, reshuffle_each_iteration=True)
        if repeat:
            ds = ds.repeat()
        ds = tf.data.Dataset.zip(
            ds, tf.data.Dataset.random(seed=self.seed, rerandomize_each_iteration=True)
        )
        ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).unbatch()
        if shuffle and per > 1:
            buffer = shuffle_buffer or 4 * per
            ds = ds.shuffle(buffer, seed=self.seed + 1, reshuffle_each_iteration=True)
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
        return ds.prefetch(tf.data.AUTOTUNE)


def segmentation_dataset(cases, sampler="patch", *, augment=None, batch_size: int = 2,
                         samples_per_case: int = 4, seed: int = 0, loader=None,
                         num_classes: int | None = None, one_hot: bool = False,
                         multilabel: bool | None = None, shuffle: bool = True,
                         repeat: bool = False, drop_remainder: bool = False,
                         shuffle_buffer: int | None = None, **sampler_options):
    """A batched ``tf.data.Dataset`` of (image, mask), or (patch, centre label), for segmentation.

    ``model.fit(ds)`` works: shapes are static (the batch axis too with ``drop_remainder``).
    In-memory cases are all checked here; lazily loaded ones as they load (a DataError then
    surfaces inside TensorFlow's error, its message kept). The first lazy case is loaded once
    here to learn the sample shapes. The numpy side is on the dataset's ``.segmentation``
    attribute (a SegmentationData).

    Args:
        cases: a list of (image, mask) pairs or {'image', 'mask'} dicts (image (D, H, W[, C]),
            mask (D, H, W) labels or (D, H, W, K) 0/1 channels), of callables returning one, or
            of items ``loader`` reads.
        sampler: a name (slice, 2.5d, patch, centre) or a Sampler (zoo.data.seg_sampling).
        augment: None, True (the default policy), a SegAugment, or transforms for one
            (names, (name, options) pairs, objects; zoo.data.seg_augment), seeded by ``seed``.
        batch_size: samples per batch.
        samples_per_case: samples cut from a case each time it is loaded (once per epoch).
        seed: makes the whole stream reproducible.
        loader: ``item -> (image, mask)`` for cases given as paths or other items.
        num_classes: labels must lie in 0..num_classes-1 (needed by ``one_hot``).
        one_hot: float32 one-hot targets (..., num_classes) instead of int32 labels.
        multilabel: None decides by the mask's shape; multi-label targets are float32 (..., K).
        shuffle: shuffle cases and mix samples of several cases in a batch.
        repeat: repeat forever (then pass ``steps_per_epoch`` to fit).
        drop_remainder: drop the last, smaller batch (a static batch size).
        shuffle_buffer: samples in the mixing buffer (default 4 * samples_per_case).
        **sampler_options: options of a named sampler (patch_size, fg_fraction, fg_mode, stack,
            balance).

    Returns:
        The ``tf.data.Dataset``; images float32 (B, ..., C), targets int32 labels or float32.

    Raises:
        InvalidArgumentError: bad options (unknown option, sampler or transform names
            included: UnknownNameError).
        DataError: a case whose mask does not match its image, labels outside num_classes, a
            volume smaller than the patch, cases of different sample shapes.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidArgumentError(f"batch_size={batch_size!r}: use a positive integer.")
    data = SegmentationData(
        cases, sampler, loader=loader, augment=augment, samples_per_case=samples_per_case,
        seed=seed, num_classes=num_classes, one_hot=one_hot, multilabel=multilabel,
        **sampler_options,
    )
    ds = data.dataset(batch_size, shuffle, repeat, drop_remainder, shuffle_buffer)
    ds.segmentation = data
    return ds
