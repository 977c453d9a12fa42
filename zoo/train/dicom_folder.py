"""``zoo finetune --data`` on DICOM: a labels CSV of DICOM files or series folders, streamed.

A data folder whose ``labels.csv`` (``path,label[,patient]``, read once by
``zoo.train.folder_data.read_folder_labels``) lists DICOM files (known by content: a ``.dcm``
suffix, the 'DICM' marker after the preamble, or a data set pydicom parses) or series folders is
not loaded into memory like an image folder. Instead:

1. the CSV's rows are split into training and validation by patient (the patient column; without
   it by row, so a series folder stays on one side) with ``zoo.metrics.validation_split``: no
   patient is on both sides, by construction;
2. each side becomes a ``zoo.data.pipeline.dicom_dataset`` (decoded once into the on-disk cache,
   then streamed) at the model's input contract: size, channels and value range, read from its
   weight card without building it, and CT windows (``windows``: preset names or (center,
   width) pairs, one or one per channel);
3. ``zoo.finetune`` trains on the two streams; a series folder is its slices, each with the
   row's label.

Augmentation of a stream is Keras layers (``stream_augmentation``), the stream's counterparts of
the in-memory ``Augment``: shifts that move whole pixels (a translation sampled at the nearest
pixel, borders mirrored) and brightness and contrast jitter. 90-degree turns and flips are not
offered: they need the in-memory path. run.json gains ``data.source`` (the CSV lines on each side,
patient counts, the files the pipeline skipped and why; patient ids are never written) and the
validation metrics, per patient, that an in-memory run gets.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zoo.data.dicom import find_dicom_files, open_dataset
from zoo.data.labels import Labels
from zoo.errors import DataError, InvalidArgumentError, NotDicomError
from zoo.train.folder_data import SUFFIXES, read_folder_labels

_PREAMBLE = 128  # DICOM Part 10: a 128-byte preamble, then b"DICM"

STREAM_AUGMENT = {"shift": 0.0625, "brightness": 0.02, "contrast": 0.05}
"""The stream's augmentation: shifts up to this fraction of each side, brightness up to this
fraction of the input range, contrast by up to this factor (Augment's shift, offset and gain)."""


def is_dicom(path) -> bool:
    """Whether ``path`` is DICOM input: a folder (a series), a ``.dcm`` file, or a file whose
    content is DICOM.

    Args:
        path: a file or folder that exists.

    Returns:
        True for DICOM input, False for anything else (.npy/.png images, other files).
    """
    path = Path(path)
    if path.is_dir() or path.suffix.lower() == ".dcm":
        return True
    if path.suffix.lower() in SUFFIXES:
        return False
    with open(path, "rb") as f:
        if f.read(_PREAMBLE + 4)[_PREAMBLE:] == b"DICM":
            return True
    try:  # no preamble: a raw data set (old ACR-NEMA style) still counts
        open_dataset(path, stop_before_pixels=True)
    except NotDicomError:
        return False
    except DataError:  # DICOM, but damaged: the pipeline names the problem
        return True
    return True


def data_kind(labels: Labels) -> str:
    """``"dicom"`` when every path in a labels CSV is DICOM input, ``"images"`` when none is.

    Args:
        labels: a read labels CSV.

    Returns:
        ``"dicom"`` or ``"images"``.

    Raises:
        DataError: the CSV mixes DICOM and other files (the message names one of each).
    """
    kinds = [is_dicom(p) for p in labels.paths]
    if all(kinds):
        return "dicom"
    if not any(kinds):
        return "images"
    odd = kinds.index(not kinds[0])

    def what(i):
        return "DICOM" if kinds[i] else "not DICOM"

    raise DataError(
        f"labels CSV {labels.csv}: line {labels.lines[odd]} lists {labels.paths[odd]} "
        f"({what(odd)}) but line {labels.lines[0]} lists {labels.paths[0]} ({what(0)}); a data "
        "folder holds DICOM files and series folders, or .npy/.png images, not both. Put them in "
        "two folders."
    )


def is_dicom_folder(folder, labels_csv: str = "labels.csv") -> bool:
    """Whether a ``zoo finetune --data`` folder lists DICOM input (then it is streamed).

    Args:
        folder: the data folder.
        labels_csv: its labels CSV's name.

    Returns:
        True when every path in the CSV is DICOM input.

    Raises:
        DataError: no CSV, a listed path missing (named), or DICOM mixed with images.
    """
    return data_kind(read_folder_labels(folder, labels_csv)) == "dicom"


# ----------------------------------------------------------------------------------------------
# rows: the patient-wise split and each side's files


def row_groups(labels: Labels) -> np.ndarray:
    """One group per CSV row: its patient, or the row itself when there is no patient column.

    Args:
        labels: a read labels CSV.

    Returns:
        (N,) group ids (patient strings, or row numbers).

    Raises:
        DataError: a row with an empty patient (the line is named).
    """
    if labels.patients is None:
        return np.arange(len(labels))
    empty = [line for p, line in zip(labels.patients, labels.lines) if not p]
    if empty:
        raise DataError(
            f"labels CSV {labels.csv}, line {empty[0]}: the patient is empty; give every row its "
            "patient (the split keeps a patient's rows on one side) or drop the column."
        )
    return np.asarray(labels.patients)


def _check_classes(labels: Labels, rows: np.ndarray, what: str, fix: str) -> None:
    present = np.unique(labels.labels[rows])
    if len(present) < 2:
        raise DataError(
            f"labels CSV {labels.csv}: {what} hold only class {labels.classes[present[0]]!r} "
            f"({len(rows)} rows); a classifier needs at least two classes. {fix}"
        )


def split_rows(labels: Labels, fraction: float = 0.2, seed: int = 0):
    """(training rows, validation rows) of a labels CSV: whole patients (or rows) on each side.

    Args:
        labels: a read labels CSV of classes.
        fraction: the share of rows to hold out (whole patients: at least this much).
        seed: the split's seed.

    Returns:
        Two sorted arrays of row indices.

    Raises:
        DataError: one class in the CSV, one patient, or a training side left with one class.
    """
    from zoo.metrics import validation_split

    _check_classes(labels, np.arange(len(labels)), "all rows", "Add rows of the other class(es).")
    train, val = validation_split(len(labels), fraction, groups=row_groups(labels), seed=seed)
    _check_classes(labels, train, "after the split by patient, the training rows",
                   "Add patients of the other class(es), or give a validation folder "
                   "(--val-data).")
    return np.sort(train), np.sort(val)


@dataclass(frozen=True)
class _Side:
    """One side of the split: its files (series folders opened), labels and groups per file."""

    labels: Labels
    rows: np.ndarray
    files: list
    targets: list
    groups: list

    @property
    def lines(self) -> list[int]:
        return [self.labels.lines[r] for r in self.rows]


def _side(labels: Labels, rows) -> _Side:
    groups = row_groups(labels)
    files, targets, file_groups = [], [], []
    for r in rows:
        path = labels.paths[r]
        found = find_dicom_files(path) if path.is_dir() else [path]
        if not found:
            raise DataError(
                f"labels CSV {labels.csv}, line {labels.lines[r]}: {path} is an empty folder; "
                "list a series folder of DICOM files, or a file."
            )
        files += found
        targets += [int(labels.labels[r])] * len(found)
        file_groups += [groups[r]] * len(found)
    return _Side(labels, np.asarray(rows), files, targets, file_groups)


def _check_disjoint(train: Labels, val: Labels) -> None:
    """A validation folder shares no patient with the training folder (ids are never shown)."""
    if train.patients is None or val.patients is None:
        return
    shared = set(train.patients) & set(val.patients)
    if shared:
        raise DataError(
            f"{len(shared)} patient(s) of {val.csv} are also in {train.csv}; a patient must be "
            "in training or validation, not both. Move their rows to one of the two folders."
        )


# ----------------------------------------------------------------------------------------------
# the streams


def model_contract(model, pretrained=None) -> dict:
    """The ``dicom_dataset`` options that give samples a model's input contract.

    A name is resolved without building it: its weight card's input size, channels and range,
    else the architecture's default size, 3 channels and [0, 255] (what ``zoo.load`` builds).

    Args:
        model: a zoo model name (``arch`` or ``arch.tag``) or a model built by ``zoo.load``.
        pretrained: a weights tag or file, for a name without a tag.

    Returns:
        ``{"input_shape": (H, W, C), "input_range": (lo, hi)}``, or ``{"model": model}``.

    Raises:
        InvalidArgumentError: a 3D network (the stream gives 2D slices); UnknownNameError.
    """
    if not isinstance(model, str):
        return {"model": model}
    from zoo.models.factory import plan, resolve

    p = plan(resolve(model, pretrained, want_top=False))
    if len(p.shape) != 3:
        raise InvalidArgumentError(
            f"{model} takes {len(p.shape) - 1}D volumes; zoo finetune --data streams 2D DICOM "
            "slices. Choose a 2D model, or build a volume pipeline with zoo.dicom_dataset("
            "sampler='cube') and call zoo.finetune."
        )
    return {"input_shape": tuple(p.shape), "input_range": p.input_range}


def stream_augmentation(value_range, seed: int = 0) -> list:
    """Keras preprocessing layers that augment a streamed training set without blurring it.

    The stream's counterparts of ``zoo.train.finetune.Augment``'s defaults: a translation
    sampled at the nearest pixel moves whole pixels (borders mirrored), then brightness and
    contrast jitter, clipped to the input range (``STREAM_AUGMENT``).

    Args:
        value_range: the model's input range (lo, hi).
        seed: the layers' seed.

    Returns:
        The layers, in order.
    """
    import keras

    shift, value_range = STREAM_AUGMENT["shift"], tuple(float(v) for v in value_range)
    return [
        keras.layers.RandomTranslation(shift, shift, fill_mode="reflect", interpolation="nearest",
                                       seed=seed, name="augment_shift"),
        keras.layers.RandomBrightness(STREAM_AUGMENT["brightness"], value_range=value_range,
                                      seed=seed + 1, name="augment_brightness"),
        keras.layers.RandomContrast(STREAM_AUGMENT["contrast"], value_range=value_range,
                                    seed=seed + 2, name="augment_contrast"),
    ]


@dataclass
class DicomFolderData:
    """The two streams of a DICOM data folder and what run.json records about them."""

    train: object  # tf.data.Dataset; its DicomDataset on .dicom
    val: object
    classes: tuple[str, ...]
    source: dict  # run.json's data.source: no patient ids
    val_groups: list | None  # the patient of each validation sample, in stream order

    def validation_metrics(self, model) -> dict:
        """Clinical metrics on the validation stream, as plain JSON values (``zoo.finetune``
        computes them itself only for in-memory validation sets)."""
        return json.loads(json.dumps(_validation_metrics(model, self), default=_plain))


def load_dicom_folder(folder, model, *, pretrained=None, val_folder=None, windows="auto",
                      batch_size: int = 32, seed: int = 0, cache_dir=None,
                      skip_unreadable: bool = False,
                      validation_split: float = 0.2) -> DicomFolderData:
    """Split a DICOM data folder by patient and build its training and validation streams.

    Args:
        folder: a folder with ``labels.csv`` (``path,label[,patient]``) listing DICOM files or
            series folders.
        model: a zoo model name or a model built by ``zoo.load``: the samples' contract.
        pretrained: a weights tag or file, for a name without a tag.
        val_folder: a second such folder for validation (default: hold out ``validation_split``
            of the rows, whole patients).
        windows: CT windows, ``"auto"`` (the pipeline's: soft tissue, or soft tissue, lung and
            bone for 3 channels), preset names or (center, width) pairs.
        batch_size: samples per batch.
        seed: the split's and the training stream's seed.
        cache_dir: the decode cache (default ``ZOO_HOME/dicom_cache``).
        skip_unreadable: leave unreadable DICOM files out and list them in ``source["skipped"]``
            (default: refuse them, naming the file).
        validation_split: the share of rows held out without ``val_folder``.

    Returns:
        A DicomFolderData.

    Raises:
        DataError: a missing CSV or file, DICOM mixed with images, one class, an unreadable
            DICOM file (each named); InvalidArgumentError: bad windows or model.
    """
    labels = read_folder_labels(folder)
    _need_dicom(labels)
    if val_folder is None:
        train_rows, val_rows = split_rows(labels, validation_split, seed)
        val_labels = labels
    else:
        val_labels = read_folder_labels(val_folder, classes=labels.classes)
        _need_dicom(val_labels)
        train_rows, val_rows = np.arange(len(labels)), np.arange(len(val_labels))
        _check_classes(labels, train_rows, "all rows", "Add rows of the other class(es).")
        _check_disjoint(labels, val_labels)
    train_side, val_side = _side(labels, train_rows), _side(val_labels, val_rows)
    options = dict(model_contract(model, pretrained), windows=windows, batch_size=batch_size,
                   seed=seed, cache_dir=cache_dir, on_error="skip" if skip_unreadable else "raise")
    train = _stream(train_side, training=True, **options)
    val = _stream(val_side, training=False, **options)
    source = _source(train_side, val_side, train.dicom, val.dicom, val_folder is not None)
    return DicomFolderData(train, val, labels.classes, source, _sample_groups(val_side, val.dicom))


def _need_dicom(labels: Labels) -> None:
    if data_kind(labels) != "dicom":
        raise DataError(
            f"labels CSV {labels.csv} lists images, not DICOM; the images of a folder are "
            "loaded by zoo.train.folder_data.load_labelled_folder."
        )


def _stream(side: _Side, *, training: bool, **options):
    """A dicom_dataset of one side (training: shuffled), refused when the pipeline kept fewer
    than two classes to train on."""
    from zoo.data.pipeline import dicom_dataset

    ds = dicom_dataset(side.files, side.targets, shuffle=training, **options)
    kept = ds.dicom
    if training and len(set(kept.labels)) < 2:
        raise DataError(
            f"labels CSV {side.labels.csv}: the training files the pipeline could read hold "
            f"one class; a classifier needs two. Fix or replace the unreadable files.\n"
            f"{kept.report}"
        )
    return ds


def _sample_groups(side: _Side, kept) -> list | None:
    """The patient of each sample of a validation stream (unshuffled: the index order)."""
    if side.labels.patients is None:
        return None
    patient = {str(f): g for f, g in zip(side.files, side.groups)}
    return [patient[str(kept.items[i])] for i in kept.index[:, 0]]


def _source(train: _Side, val: _Side, train_ds, val_ds, given: bool) -> dict:
    """run.json's ``data.source``: where each side came from, counts, skipped files; no ids."""
    patients = None
    if train.labels.patients is not None and val.labels.patients is not None:
        a, b = set(train.groups), set(val.groups)
        patients = {"train": len(a), "validation": len(b), "in_both": len(a & b)}
    skipped = train_ds.report.skipped + val_ds.report.skipped
    return {
        "kind": "dicom",
        "streamed": True,
        "labels_csv": str(train.labels.csv),
        "validation_csv": str(val.labels.csv),
        "split": "given" if given else ("patient" if patients else "row"),
        "rows": {"train": train.lines, "validation": val.lines},
        "files": {"train": len(train_ds.items), "validation": len(val_ds.items)},
        "samples": {"train": len(train_ds), "validation": len(val_ds)},
        "patients": patients,
        "input_shape": list(train_ds.shape),
        "input_range": list(train_ds.input_range),
        "windows": [list(w) for w in train_ds.windows],
        "cache": {"decoded": train_ds.decoded + val_ds.decoded,
                  "cached": train_ds.cached + val_ds.cached},
        "skipped": [{"path": str(p), "reason": why} for p, why in skipped],
    }


# ----------------------------------------------------------------------------------------------
# fine-tuning


def _check_augment(augment) -> None:
    """What a stream can take: True, False/None, or Keras layers (checked before decoding)."""
    if augment is None or isinstance(augment, bool):
        return
    if isinstance(augment, list | tuple) and all(callable(layer) for layer in augment):
        return
    raise InvalidArgumentError(
        f"augment={augment!r} with DICOM data: a stream takes True (whole-pixel shifts, "
        "brightness and contrast jitter as Keras layers), False, or a list of Keras "
        "preprocessing layers; 90-degree turns and flips (--rot90) need images in memory, so "
        "drop --rot90 or convert the slices to a .npy/.png folder."
    )


def _augment_layers(augment, value_range, seed: int):
    """``augment`` as finetune takes it for a stream: False or Keras layers."""
    if augment is True:
        return stream_augmentation(value_range, seed)
    return list(augment) if augment else False


def _stream_class_weight(class_weight, train, num_classes: int):
    """"balanced" from the training stream's own sample labels (finetune cannot count a stream);
    anything else as given."""
    if not (isinstance(class_weight, str) and class_weight == "balanced"):
        return class_weight
    from zoo.train.batches import class_weights_to_samples

    kept = train.dicom
    y = np.asarray(kept.labels)[kept.index[:, 0]]
    weights = class_weights_to_samples(y, "balanced", num_classes)
    return {int(c): float(w) for c, w in zip(y, weights)}


def finetune_dicom_folder(model, folder, *, pretrained=None, val_folder=None, windows="auto",
                          augment=True, class_weight=None, batch_size: int = 32, seed: int = 0,
                          cache_dir=None, skip_unreadable: bool = False,
                          validation_split: float = 0.2, task: str = "classification",
                          **options):
    """``zoo.finetune`` on a DICOM data folder, streamed, with a patient-wise validation split.

    Args:
        model: a zoo model name (``arch`` or ``arch.tag``) or a model built by ``zoo.load``.
        folder: a folder with ``labels.csv`` listing DICOM files or series folders.
        pretrained: a weights tag or file, for a name without a tag.
        val_folder: a validation folder like ``folder`` (default: whole patients held out).
        windows: CT windows: ``"auto"``, preset names or (center, width) pairs.
        augment: True (``stream_augmentation``), False, or Keras preprocessing layers.
        class_weight: None, ``"balanced"`` (counted on the training stream) or {class: weight}.
        batch_size: samples per batch.
        seed: the split's, the stream's and training's seed.
        cache_dir: the decode cache (default ``ZOO_HOME/dicom_cache``).
        skip_unreadable: skip unreadable DICOM files (listed in the result's ``skipped``).
        validation_split: the share of rows held out without ``val_folder``.
        task: ``"classification"`` only (the CSV holds one class per row).
        **options: the other keyword arguments of ``zoo.finetune`` (epochs, out_dir, ...).

    Returns:
        (FinetuneResult, the data source record that run.json holds as ``data.source``).

    Raises:
        DataError: bad data (named, see ``load_dicom_folder``); InvalidArgumentError: an option a
            stream cannot take.
    """
    from zoo.train.finetune import finetune

    if task != "classification":
        raise InvalidArgumentError(
            f"task={task!r} with DICOM data: the labels CSV gives one class per row, so the "
            "stream is for task='classification'."
        )
    _check_augment(augment)
    data = load_dicom_folder(folder, model, pretrained=pretrained, val_folder=val_folder,
                             windows=windows, batch_size=batch_size, seed=seed,
                             cache_dir=cache_dir, skip_unreadable=skip_unreadable,
                             validation_split=validation_split)
    num_classes = len(data.classes)
    result = finetune(model, data.train, data.val, pretrained=pretrained, num_classes=num_classes,
                      augment=_augment_layers(augment, data.source["input_range"], seed),
                      class_weight=_stream_class_weight(class_weight, data.train, num_classes),
                      batch_size=batch_size, seed=seed, task=task, data_source=data, **options)
    return result, data.source


def _validation_metrics(model, data: DicomFolderData) -> dict:
    """zoo.metrics on the validation stream: per patient when the CSV names patients and each
    has one class, else per image (a patient with slices of both classes has no one label)."""
    from zoo.metrics import classification_report

    probs, ys = [], []
    for x, y in data.val:
        probs.append(np.asarray(model(x, training=False), np.float64))
        ys.append(np.asarray(y))
    y, groups = np.concatenate(ys), data.val_groups
    if groups is not None:
        classes_of = {}
        for g, label in zip(groups, y):
            classes_of.setdefault(g, set()).add(int(label))
        groups = groups if all(len(c) == 1 for c in classes_of.values()) else None
    try:
        return classification_report(y, np.concatenate(probs), groups, n_boot=200)
    except DataError as err:  # e.g. one class in a small validation set: report, do not fail
        return {"error": str(err)}


def _plain(value):
    """json's fallback for numpy numbers and arrays in the metrics."""
    return value.tolist() if hasattr(value, "tolist") else str(value)
