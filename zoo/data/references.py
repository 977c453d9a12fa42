"""The DICOM files behind a volume: what a DICOM-SEG or RTSTRUCT refers to, and writes against.

A ``Volume`` from ``zoo.load_series`` keeps only the (file, frame) of each slice
(``volume.sources``), never a UID; this module reads the UIDs and headers from those files when
a mask is matched to its series or written for it, so identifiers stay in the DICOM files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zoo.data.geometry import GRID_TOL
from zoo.errors import DataError, InvalidArgumentError


@dataclass(frozen=True, repr=False)
class SeriesUIDs:
    """The identifiers a SEG/RTSTRUCT uses to name its series (kept out of reprs and logs)."""

    study: str
    series: str
    frame_of_reference: str


def _header(path):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError, EOFError) as e:
        raise DataError(f"DICOM file {path}, a slice of the reference series, cannot be read "
                        f"again ({type(e).__name__}); was it moved or changed since "
                        "load_series?") from None


def series_uids(reference) -> SeriesUIDs | None:
    """The study, series and frame-of-reference UIDs of a DICOM reference volume; None for a
    volume without DICOM sources (a NIfTI file, a Geometry)."""
    sources = getattr(reference, "sources", ())
    if not sources:
        return None
    ds = _header(sources[0][0])
    return SeriesUIDs(str(ds.get("StudyInstanceUID", "")), str(ds.get("SeriesInstanceUID", "")),
                      str(ds.get("FrameOfReferenceUID", "")))


def load_reference(reference):
    """A Volume with DICOM sources: ``reference`` itself, or a folder / file list stacked by
    ``load_series`` (problems raise: a mask is written only for a clean series)."""
    if getattr(reference, "sources", None):
        return reference
    if isinstance(reference, str | Path | list | tuple):
        from zoo.data.series import load_series

        return load_series(reference, on_problem="raise")
    raise InvalidArgumentError(
        f"reference of type {type(reference).__name__}: give the Volume from zoo.load_series, "
        "or the series' folder or files (a DICOM-SEG/RTSTRUCT refers to DICOM slices).")


def source_headers(volume, shape) -> list:
    """pydicom headers (no pixels) of the slices behind ``volume``, in its z order, after
    checking that a mask of ``shape`` lies on those slices' own grid (not a resampled one).

    A multi-frame source comes back as one header per slice (the same object).
    """
    sources = volume.sources
    rows, columns = volume.meta.rows, volume.meta.columns
    if tuple(shape[:3]) != (len(sources), rows, columns) or volume.array.shape[0] != len(sources):
        raise DataError(
            f"a mask of shape {tuple(shape)} does not lie on the {len(sources)} slices of "
            f"{rows} x {columns} pixels of the reference series (a volume resampled by "
            "target_spacing is not the series' own grid); predict on load_series(folder) "
            "without target_spacing, or resample the mask back.")
    cache = {}
    headers = []
    for path, _ in sources:
        if path not in cache:
            cache[path] = _header(path)
        headers.append(cache[path])
    first = np.asarray(headers[0].get("ImagePositionPatient", volume.origin), float)
    if len(cache) == len(sources) and np.linalg.norm(first - np.asarray(volume.origin)) > (
            GRID_TOL * min(volume.spacing)):
        raise DataError("the reference volume's origin is not its first slice's "
                        "ImagePositionPatient (0020,0032): it was resampled or edited; load the "
                        "series again without target_spacing.")
    return headers
