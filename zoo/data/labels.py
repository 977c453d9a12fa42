"""The zoo's one labels CSV format, ``path,label[,patient]``, and its one reader.

Used by ``zoo.dicom_dataset`` (a CSV as the source or as ``labels=``) and ``zoo finetune
--data`` (``labels.csv`` in the data folder)::

    path,label,patient
    case001/slice_0001.dcm,lesion,P01
    case002/slice_0001.dcm,normal,P02

- A header line is required; ``path`` and ``label`` must be in it, ``patient`` is optional
  (for splitting by patient; its values are never printed), other columns are ignored.
- ``path`` is relative to the CSV's folder (an absolute path is kept as is): a file, or a
  series folder for the volume samplers.
- ``label`` is an integer class (0, 1, ...), a class name (names are numbered in sorted
  order, or by ``classes=``) or, when every label is a number and one is not an integer, a
  float regression target.
- The old ``file`` column (``file,label``, once read by ``zoo finetune``) is still read as
  ``path`` with a ``FutureWarning``: data folders made for earlier versions keep working
  while they are renamed.

Every problem is a ``LabelsError`` naming the CSV, the line and the fix.
"""

from __future__ import annotations

import csv
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zoo.errors import LabelsError

COLUMNS = ("path", "label", "patient")


@dataclass(frozen=True)
class Labels:
    """A read labels CSV: one entry per data row, in file order."""

    csv: Path
    paths: tuple[Path, ...]  # resolved against the CSV's folder
    labels: np.ndarray  # (N,) int32 class indices, or float32 regression targets
    classes: tuple[str, ...] | None  # class names by index; None for regression targets
    patients: tuple[str, ...] | None  # the patient column, when present
    lines: tuple[int, ...]  # line of each row in the CSV (1-based, the header is line 1)

    def __len__(self) -> int:
        return len(self.paths)


def _fail(csv_path: Path, line: int | None, text: str) -> LabelsError:
    where = f"labels CSV {csv_path}" + (f", line {line}" if line else "")
    return LabelsError(f"{where}: {text}")


def _header(csv_path: Path, fields) -> dict[str, str]:
    """Map the canonical column names to the header's own spelling (case and spaces ignored)."""
    names = {str(f).strip().lower(): f for f in (fields or []) if f is not None}
    if "path" not in names and "file" in names:
        warnings.warn(
            f"labels CSV {csv_path}: the column 'file' is deprecated; rename it to 'path' "
            "(the format is path,label[,patient]).",
            FutureWarning,
            stacklevel=4,
        )
        names["path"] = names["file"]
    missing = [c for c in ("path", "label") if c not in names]
    if missing:
        found = ", ".join(repr(str(f).strip()) for f in fields or []) or "nothing"
        raise _fail(
            csv_path,
            1,
            f"the header has no {' or '.join(repr(c) for c in missing)} column (found {found}). "
            "The first line must name the columns 'path' and 'label' (and optionally "
            "'patient'); the old 'file' and 'label' columns are still read, deprecated.",
        )
    return {c: names[c] for c in COLUMNS if c in names}


def _classes(csv_path: Path, raw: list[str], lines: list[int], classes):
    """(labels, class names): integer ids, names numbered in sorted order, or float targets."""
    if classes is not None:
        return _given_classes(csv_path, raw, lines, tuple(str(c) for c in classes))
    numbers = []
    for value in raw:
        try:
            numbers.append(float(value))
        except ValueError:
            numbers = None
            break
    if numbers is None:  # class names
        names = tuple(sorted(set(raw)))
        return np.asarray([names.index(v) for v in raw], np.int32), names
    return _numeric_labels(csv_path, raw, lines, numbers)


def _given_classes(csv_path: Path, raw: list[str], lines: list[int], classes: tuple[str, ...]):
    """Labels against a class list the caller gave: a class name or its index, else a DataError."""
    index = {c: i for i, c in enumerate(classes)}
    out = []
    for value, line in zip(raw, lines):
        if value in index:
            out.append(index[value])
        elif value.isdigit() and int(value) < len(classes):
            out.append(int(value))
        else:
            raise _fail(
                csv_path,
                line,
                f"unknown label {value!r}; the known classes are {list(classes)} (or their indices "
                f"0-{len(classes) - 1}). Fix the label or the class list.",
            )
    return np.asarray(out, np.int32), classes


def _numeric_labels(csv_path: Path, raw: list[str], lines: list[int], numbers: list[float]):
    """All-number labels: class ids 0..K-1 when every one is a whole number, else float targets."""
    bad = next(((v, line) for v, x, line in zip(raw, numbers, lines) if not np.isfinite(x)), None)
    if bad:
        raise _fail(csv_path, bad[1], f"label {bad[0]!r} is not a finite number; fix the label.")
    if all(float(x).is_integer() for x in numbers):
        ids = np.asarray(numbers, np.int64)
        negative = next((line for x, line in zip(ids, lines) if x < 0), None)
        if negative:
            raise _fail(
                csv_path,
                negative,
                "a class label must be an integer >= 0 or a class name; fix the label.",
            )
        return ids.astype(np.int32), tuple(str(i) for i in range(int(ids.max()) + 1))
    return np.asarray(numbers, np.float32), None


def read_labels(
    csv_path, *, classes: Sequence[str] | None = None, must_exist: bool = True
) -> Labels:
    """Read a ``path,label[,patient]`` CSV.

    classes: the class names by index (e.g. the training set's, for a validation CSV); a label
        outside them is an error. Without it, integer labels are class ids and names are
        numbered in sorted order.
    must_exist: every listed path must exist (a file, or a folder for series).
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise LabelsError(
            f"labels CSV {csv_path} not found; give the path of a CSV with the header "
            "path,label[,patient] (paths relative to the CSV's folder)."
        )
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = _header(csv_path, reader.fieldnames)
            rows = []
            for row in reader:
                rows.append((reader.line_num, row))
    except (UnicodeDecodeError, csv.Error) as e:
        raise LabelsError(
            f"labels CSV {csv_path} cannot be read as a UTF-8 CSV ({type(e).__name__}); save it as "
            "plain comma-separated UTF-8 text."
        ) from None
    if not rows:
        raise _fail(
            csv_path, None, "no data rows after the header; add one line per item: path,label."
        )
    paths, raw, lines, patients = [], [], [], []
    for line, row in rows:
        path = (row.get(columns["path"]) or "").strip()
        label = (row.get(columns["label"]) or "").strip()
        if not path or not label:
            raise _fail(
                csv_path,
                line,
                f"the {'path' if not path else 'label'} is empty; every line needs "
                "path,label (or delete the line).",
            )
        full = Path(path) if Path(path).is_absolute() else csv_path.parent / path
        if must_exist and not full.exists():
            raise _fail(
                csv_path,
                line,
                f"{full}: listed in the labels CSV but not found; fix the path (relative "
                "to the CSV's folder) or add the file.",
            )
        paths.append(full)
        raw.append(label)
        lines.append(line)
        if "patient" in columns:
            patients.append((row.get(columns["patient"]) or "").strip())
    labels, names = _classes(csv_path, raw, lines, classes)
    return Labels(
        csv_path,
        tuple(paths),
        labels,
        names,
        tuple(patients) if "patient" in columns else None,
        tuple(lines),
    )
