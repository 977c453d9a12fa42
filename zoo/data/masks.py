"""Masks in: a NIfTI label map, a DICOM-SEG or an RTSTRUCT -> labels on a reference volume's grid.

``read_mask(path, reference)`` returns a ``Mask`` whose ``array`` lies voxel for voxel on the
reference volume (``zoo.load_series`` or ``zoo.read_nifti``): an integer label map ``(Z, Y, X)``,
0 = background and k = class k, or with ``multilabel=True`` one binary channel per class
``(Z, Y, X, K)`` (segments that overlap need that form).

How each format reaches the grid:

- NIfTI: the label map's affine must describe the reference grid itself, or the same voxels
  with axes permuted or flipped (a lossless reorientation, applied); anything else is refused
  (DataError naming shape / spacing / origin / orientation and by how much) unless
  ``resample=True``, which maps it by nearest neighbour.
- DICOM-SEG (``zoo.data.dicom_seg``): frames placed by their positions; the SEG must reference
  the reference's series (SeriesInstanceUID, or FrameOfReferenceUID when it names no series).
- RTSTRUCT (``zoo.data.rtstruct``): contours rasterised on the reference grid (a voxel is inside
  when its centre is inside the polygon), same series check.

The series checks need a DICOM reference (a Volume with ``sources``); against a NIfTI
reference only the geometry is checked.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zoo.data.dicom_seg import SEG_SOP_CLASSES, read_seg, referenced_series, seg_segments
from zoo.data.dicom_seg import write_dicom_seg as write_dicom_seg
from zoo.data.geometry import (
    Geometry,
    exact_index_map,
    geometry_of,
    grid_differences,
    place_exact,
    resample_nearest,
)
from zoo.data.nifti import SUFFIXES, read_nifti_array
from zoo.data.references import series_uids
from zoo.data.rtstruct import (
    RTSTRUCT_SOP_CLASS,
    frames_of_reference,
    rasterise,
    rtstruct_rois,
)
from zoo.data.rtstruct import referenced_series as rtstruct_series
from zoo.errors import DataError, InvalidArgumentError

__all__ = ["Mask", "read_mask", "write_dicom_seg"]


@dataclass(frozen=True, eq=False)
class Mask:
    """Labels on a reference grid: ``array`` (Z, Y, X) integers (0 background, k = class k) or,
    when ``multilabel``, (Z, Y, X, K) uint8 channels (channel k-1 = class k)."""

    array: np.ndarray
    classes: tuple[str, ...]  # the name of class k at index k-1
    geometry: Geometry  # the reference grid the array lies on
    source: str  # the file read
    kind: str  # "nifti", "dicom-seg" or "rtstruct"

    @property
    def multilabel(self) -> bool:
        return self.array.ndim == 4


def _kind(path: Path) -> tuple[str, object]:
    """("nifti", None) or ("dicom-seg" / "rtstruct", the pydicom header) for a mask file."""
    if path.name.lower().endswith((*SUFFIXES, ".hdr")):
        return "nifti", None
    import pydicom
    from pydicom.errors import InvalidDicomError

    if not path.is_file():
        raise DataError(f"mask file {path} does not exist (or is not a file).")
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        sop_class, modality = str(ds.get("SOPClassUID", "")), str(ds.get("Modality", ""))
    except (InvalidDicomError, OSError, ValueError, EOFError, AttributeError, KeyError):
        sop_class = modality = ""
    if sop_class in SEG_SOP_CLASSES or modality == "SEG":
        return "dicom-seg", None
    if sop_class == RTSTRUCT_SOP_CLASS or modality == "RTSTRUCT":
        return "rtstruct", ds
    raise DataError(f"mask file {path} is neither NIfTI (.nii, .nii.gz) nor a DICOM-SEG or "
                    f"RTSTRUCT (Modality {modality or 'missing'}); give a label map in one of "
                    "those formats.")


def _check_series(path, kind: str, named_series: set[str], named_frames: set[str],
                  reference) -> None:
    """DataError when a SEG/RTSTRUCT names another series (or frame of reference) than the
    reference volume's. Nothing to check against a reference without DICOM sources."""
    uids = series_uids(reference)
    if uids is None:
        return
    if named_series:
        if uids.series not in named_series:
            raise DataError(f"{kind} file {path} references series "
                            f"{', '.join(sorted(named_series))}, but the reference volume is "
                            f"series {uids.series}; give the series it was made on.")
        return
    if named_frames and uids.frame_of_reference and uids.frame_of_reference not in named_frames:
        raise DataError(f"{kind} file {path} is drawn in frame of reference "
                        f"{', '.join(sorted(named_frames))}, but the reference volume's is "
                        f"{uids.frame_of_reference}; give the series it was made on.")


def _class_names(classes) -> tuple[tuple[str, ...] | None, bool]:
    """(class names or None, whether SEG/RTSTRUCT segments are matched to them by name)."""
    if classes is None:
        return None, False
    if isinstance(classes, int | np.integer) and not isinstance(classes, bool):
        if classes < 1:
            raise InvalidArgumentError(f"classes={classes!r}: give the number of foreground "
                                       "classes (>= 1) or their names.")
        return tuple(f"class {k}" for k in range(1, int(classes) + 1)), False
    if isinstance(classes, str) or not all(isinstance(c, str) for c in classes):
        raise InvalidArgumentError(f"classes={classes!r}: give the number of foreground classes "
                                   "or a list of their names (class k = classes[k-1]).")
    names = tuple(classes)
    if not names or "" in {n.strip() for n in names} or len(
            {n.strip().lower() for n in names}) != len(names):
        raise InvalidArgumentError(f"classes={classes!r}: give distinct, non-empty names.")
    return names, True


def _check_labels(label_map: np.ndarray, names, path) -> tuple[str, ...]:
    """The class names of a NIfTI label map; DataError for values outside the classes."""
    values = np.unique(label_map)
    bad = values[(values < 0) | (values != np.round(values))]
    if bad.size:
        raise DataError(f"mask file {path} holds values {bad[:5].tolist()} that are not class "
                        "labels (labels are 0 = background, 1 .. K); give an integer label map.")
    largest = int(values.max(initial=0))
    if names is None:
        return tuple(str(k) for k in range(1, largest + 1))
    outside = values[values > len(names)]
    if outside.size:
        raise DataError(f"mask file {path} holds labels {outside[:5].astype(int).tolist()} outside "
                        f"the declared classes 0 .. {len(names)} ({', '.join(names)}); fix the "
                        "label map or declare every class.")
    return names


def _nifti_onto(array, grid, reference, path, resample: bool) -> np.ndarray:
    mapping = exact_index_map(grid, reference)
    if mapping is not None:
        placed, _ = place_exact(array, mapping, reference.shape)
        permuted = tuple(grid.shape[mapping[0].index(j)] for j in range(3))
        starts_zero = all(
            mapping[2][i] - (grid.shape[i] - 1 if mapping[1][i] else 0) == 0 for i in range(3))
        if permuted == tuple(reference.shape) and starts_zero:
            return placed
    if resample:
        return resample_nearest(array, grid, reference)
    raise DataError(f"mask file {path} does not lie on the reference volume's voxel grid: "
                    + "; ".join(grid_differences(grid, reference) or ["a partial overlap"])
                    + ". Pass resample=True to map it by nearest neighbour, or give the volume "
                    "it was drawn on.")


def _read_nifti_mask(path, reference, names, multilabel: bool, resample: bool):
    array, grid, _ = read_nifti_array(path, keep_channels=True)
    if array.ndim == 4 and array.shape[3] == 1:
        array = array[..., 0]
    if array.ndim == 4 and not multilabel:
        raise DataError(f"mask file {path} holds {array.shape[3]} channels {array.shape}; pass "
                        "multilabel=True to read one binary channel per class.")
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
            or array.dtype == bool):
        raise DataError(f"mask file {path} holds {array.dtype} voxels; give an integer label map.")
    if array.ndim == 4:
        if np.setdiff1d(np.unique(array), [0, 1]).size:
            raise DataError(f"mask file {path} is 4D {array.shape} but not binary channels; a "
                            "multi-label mask holds 0/1 per class channel.")
        names = names or tuple(str(k) for k in range(1, array.shape[3] + 1))
        if array.shape[3] != len(names):
            raise DataError(f"mask file {path} has {array.shape[3]} channels for "
                            f"{len(names)} declared classes; declare one class per channel.")
        return _nifti_onto(array.astype(np.uint8), grid, reference, path, resample), names
    names = _check_labels(array, names, path)
    labels = _nifti_onto(array.astype(_label_dtype(len(names))), grid, reference, path, resample)
    if multilabel:
        return _one_hot(labels, len(names)), names
    return labels, names


def _label_dtype(count: int):
    return np.uint8 if count < 256 else np.uint16 if count < 65536 else np.int32


def _one_hot(labels: np.ndarray, count: int) -> np.ndarray:
    return np.stack([labels == k for k in range(1, count + 1)], axis=-1).astype(np.uint8)


def _assign(numbers, found_names, names, by_name: bool, path, kind):
    """The class label (1 .. K) of each segment/ROI."""
    if names is None:
        return list(numbers)
    if by_name:
        index = {n.strip().lower(): k for k, n in enumerate(names, start=1)}
        unknown = [n for n in found_names if n.strip().lower() not in index]
        if unknown:
            raise DataError(f"{kind} file {path} holds segment(s) {unknown} that are not among "
                            f"the declared classes {list(names)}; declare them, or pass "
                            "classes=K to keep the file's own numbering.")
        return [index[n.strip().lower()] for n in found_names]
    outside = [n for n in numbers if not 1 <= n <= len(names)]
    if outside:
        raise DataError(f"{kind} file {path} holds segment number(s) {outside} outside the "
                        f"declared classes 1 .. {len(names)}; declare every class.")
    return list(numbers)


def _compose(stacked: np.ndarray, labels, count: int, multilabel: bool, path, kind) -> np.ndarray:
    """Binary channels of the file's segments -> a label map or one channel per class."""
    if multilabel:
        out = np.zeros(stacked.shape[:3] + (count,), np.uint8)
        for channel, label in enumerate(labels):
            out[..., label - 1] |= stacked[..., channel]
        return out
    out = np.zeros(stacked.shape[:3], _label_dtype(count))
    for channel, label in enumerate(labels):
        where = stacked[..., channel].astype(bool)
        clash = where & (out != 0) & (out != label)
        if clash.any():
            raise DataError(f"{kind} file {path}: segments overlap in {int(clash.sum())} voxels "
                            "(e.g. class " + str(int(out[clash][0])) + f" and {label}); pass "
                            "multilabel=True for one channel per class.")
        out[where] = label
    return out


def read_mask(path, reference, *, classes=None, multilabel: bool = False,
              resample: bool = False) -> Mask:
    """Read a NIfTI label map, DICOM-SEG or RTSTRUCT onto ``reference``'s voxel grid.

    Args:
        path: ``.nii`` / ``.nii.gz`` label map, or a DICOM-SEG / RTSTRUCT file.
        reference: the image the mask belongs to: the Volume from ``zoo.load_series`` (series
            references checked) or ``zoo.read_nifti``, or a ``zoo.data.geometry.Geometry``.
        classes: None (labels as the file numbers them: NIfTI values, SEG segment numbers,
            RTSTRUCT ROIs with area in order), the number K of foreground classes (labels must
            lie in 0 .. K), or class names (class k = ``classes[k-1]``; SEG segments and
            RTSTRUCT ROIs are matched to them by name, case-insensitively).
        multilabel: return ``(Z, Y, X, K)`` binary channels instead of a label map (overlapping
            segments need it).
        resample: map a mask drawn on another grid by nearest neighbour instead of refusing it.

    Returns:
        A ``Mask``: ``array`` on the reference grid, ``classes`` (names), ``geometry``,
        ``source``, ``kind``.

    Raises:
        DataError: an unreadable file, a mask not on the reference grid (without ``resample``),
            a SEG/RTSTRUCT of another series, labels outside ``classes``, overlapping segments
            without ``multilabel``. InvalidArgumentError: bad ``classes``.
    """
    path = Path(path)
    grid = geometry_of(reference)
    kind, header = _kind(path)
    names, by_name = _class_names(classes)
    if kind == "nifti":
        array, names = _read_nifti_mask(path, grid, names, multilabel, resample)
        return Mask(array, tuple(names), grid, os.fspath(path), kind)
    if kind == "dicom-seg":
        seg = read_seg(path)
        _check_series(path, "DICOM-SEG", referenced_series(seg),
                      {str(seg.get("FrameOfReferenceUID", ""))} - {""}, reference)
        numbers, found, stacked = seg_segments(seg, path, grid, resample=resample,
                                               sop_uids=lambda: _sop_uids(reference))
    else:
        _check_series(path, "RTSTRUCT", rtstruct_series(header), frames_of_reference(header),
                      reference)
        rois = rtstruct_rois(header, path)
        numbers = list(range(1, len(rois) + 1))
        found = [name for _, name, _ in rois]
        stacked = np.stack([rasterise(c, grid, path, name) for _, name, c in rois], axis=-1
                           ) if rois else np.zeros(grid.shape + (0,), np.uint8)
        stacked = stacked.astype(np.uint8)
    labels = _assign(numbers, found, names, by_name, path, kind.upper())
    count = len(names) if names is not None else max(labels, default=0)
    names = names or _default_names(numbers, found, count)
    array = _compose(stacked, labels, count, multilabel, path, kind.upper())
    return Mask(array, tuple(names), grid, os.fspath(path), kind)


def _default_names(numbers, found, count) -> tuple[str, ...]:
    by_number = dict(zip(numbers, found))
    return tuple(by_number.get(k, f"segment {k}") for k in range(1, count + 1))


def _sop_uids(reference):
    """SOPInstanceUIDs of the reference's slices in z order (single-frame sources), else None."""
    sources = getattr(reference, "sources", ())
    if not sources or len({p for p, _ in sources}) != len(sources) or (
            np.shape(reference.array)[0] != len(sources)):
        return None
    import pydicom

    return [str(pydicom.dcmread(p, stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
                .SOPInstanceUID) for p, _ in sources]
