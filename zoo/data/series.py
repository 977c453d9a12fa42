"""A folder (or list) of DICOM slices -> one volume in the right order with the right spacing.

Slices are sorted by their position along the slice normal (``cross(row, column)`` of
ImageOrientationPatient dotted with ImagePositionPatient), never by file name or
InstanceNumber alone. Gaps (missing slices), duplicates, irregular spacing and slices of
another orientation are found and, by ``on_problem``, warned about, raised or ignored; every
finding is in ``volume.report``. Resampling to a target spacing interpolates along the real
slice positions, so a gap is bridged rather than squeezed.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from zoo.data.dicom import DicomMeta, find_dicom_files, geometry_error, read_dicom
from zoo.errors import (
    DicomError,
    InvalidArgumentError,
    MissingPixelDataError,
    NotDicomError,
    SeriesError,
    VolumeSizeError,
)

MAX_VOXELS = 2**28
"""The largest volume ``resample`` builds: 268 million voxels, 1 GiB of float32. Larger outputs
(a target spacing of 1e-3 mm) are refused before any allocation."""
MAX_UPSAMPLING = 64
"""``resample`` refuses to build more than this many output voxels per input voxel: a slice
displaced by 1e5 mm would otherwise "bridge" a 100 m gap with 40,000 interpolated slices."""


class SeriesWarning(UserWarning):
    """A series stacked despite a problem (gap, duplicate, orientation); see volume.report."""


@dataclass
class SeriesReport:
    """What was found while stacking; ``problems`` are the findings ``on_problem`` acted on."""

    files: int = 0
    slices: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, why): EVERY file left out
    # (slice index before the gap, slices missing)
    gaps: list[tuple[int, int]] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)  # files dropped: same position, same pixels
    tilt_deg: float = 0.0  # angle between the slice step and the normal (gantry tilt)
    orientation_spread_deg: float = 0.0
    sorted_by: str = "position along the slice normal"
    problems: list[str] = field(default_factory=list)


@dataclass
class Volume:
    """``array`` (Z, Y, X) float32 in physical units (HU for CT); spacing (z, y, x) in mm."""

    array: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: np.ndarray  # rows: column step (x), row step (y), slice normal (z), patient LPS
    positions: np.ndarray  # (Z,) slice offsets along the normal, mm
    meta: DicomMeta
    report: SeriesReport
    # (file, frame) of each stacked slice, in order, before any resampling: how a DICOM-SEG or
    # RTSTRUCT is matched to its series (zoo.data.masks reads the UIDs from these files when it
    # needs them, so the volume itself holds no identifiers). Empty for volumes not from DICOM.
    sources: tuple[tuple[str, int], ...] = ()


def _angle_deg(a, b) -> float:
    cos = abs(float(np.dot(a, b)) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))
    return float(np.degrees(np.arccos(min(1.0, cos))))


def _slices(paths, report: SeriesReport):
    """(pixels (H, W), meta, position or None, file label, (file, frame)) per slice, one per frame
    of a file."""
    out, broken = [], []
    for path in paths:
        try:
            image = read_dicom(path)
            if image.meta.invalid:
                raise geometry_error(image.meta)
        except (NotDicomError, MissingPixelDataError) as e:  # not an image: expected in a folder
            report.skipped.append((str(path), f"{type(e).__name__}: {e}"))
            continue
        except DicomError as e:  # an unusable image: skipped, and a problem of the series
            report.skipped.append((str(path), f"{type(e).__name__}: {e}"))
            broken.append(str(path))
            continue
        if image.meta.channels != 1:
            raise SeriesError(
                f"DICOM file {path} is a colour ({image.meta.photometric}) image; a series volume "
                "takes grey slices (CT, MR, PET)."
            )
        frames = image.meta.frame_positions or [image.meta.image_position] * image.meta.frames
        for f in range(image.meta.frames):
            label = str(path) if image.meta.frames == 1 else f"{path} frame {f}"
            out.append((image.pixels[f, ..., 0], image.meta, frames[f], label, (str(path), f)))
    return out, broken


def _sources(source) -> list[Path]:
    if isinstance(source, str | Path):
        path = Path(source)
        return find_dicom_files(path) if path.is_dir() else [path]
    paths = [Path(p) for p in source]
    if not paths:
        raise SeriesError("no files given; pass a folder or a non-empty list of DICOM files.")
    return paths


def load_series(source, *, series: str | None = None, on_problem: str = "warn", target_spacing=None,
                angle_tolerance_deg: float = 1.0, spacing_tolerance: float = 0.1) -> Volume:
    """Stack the slices in ``source`` (a folder, a file list, or one multi-frame file) into a
    Volume.

    series: the ``series_key`` to take when the files hold several series (see the error).
    on_problem: "warn" (SeriesWarning), "raise" (SeriesError) or "ignore", for gaps, duplicates
        at one position with different pixels, irregular spacing and inconsistent orientation.
        Files of different size, or no image at all, always raise.
    target_spacing: None, a number (isotropic mm) or (z, y, x) mm: resample by linear
        interpolation along the real slice positions.
    """
    if on_problem not in ("warn", "raise", "ignore"):
        raise InvalidArgumentError(f"on_problem={on_problem!r}: use 'warn', 'raise' or 'ignore'.")
    if target_spacing is not None:
        _target(target_spacing)  # a bad spacing fails before any file is read
    report = SeriesReport()
    paths = _sources(source)
    report.files = len(paths)
    slices, broken = _slices(paths, report)
    _check_some_slices(paths, slices, report)
    slices = _pick_series(slices, series, report)
    if broken:
        first = next(why for p, why in report.skipped if p == broken[0])
        _problem(report, on_problem,
                 f"{len(broken)} image file(s) could not be used and are left out of the volume "
                 f"(all listed in report.skipped), e.g. {first}")
    meta = slices[0][1]
    geometric = all(s[1].image_orientation is not None and s[2] is not None for s in slices)
    if geometric:
        order, offsets, normal, orient, found = _order_by_position(slices, report,
                                                                   angle_tolerance_deg)
    else:
        order, offsets, normal, orient, found = _order_by_instance(slices, report)
    for text in found:
        _problem(report, on_problem, text)
    slices = [slices[i] for i in order]
    slices, offsets, found = _drop_duplicates(slices, offsets[order], report)
    for text in found:
        _problem(report, on_problem, text)
    steps = np.diff(offsets)
    spacing_z = float(np.median(steps)) if len(steps) else float(meta.slice_thickness or 1.0)
    for text in _spacing_problems(slices, steps, spacing_z, spacing_tolerance, report):
        _problem(report, on_problem, text)
    if geometric and len(slices) > 1:
        report.tilt_deg = _angle_deg(np.asarray(slices[-1][2]) - np.asarray(slices[0][2]), normal)

    row_spacing, col_spacing = meta.pixel_spacing or (1.0, 1.0)
    direction = np.stack([orient[0, :3], orient[0, 3:], normal])
    array = np.stack([s[0] for s in slices]).astype(np.float32)
    origin = tuple(float(v) for v in (slices[0][2] if geometric else (0.0, 0.0, 0.0)))
    spacing = (spacing_z, float(row_spacing), float(col_spacing))
    report.slices = len(slices)
    if target_spacing is not None:
        array, offsets, spacing = resample(array, offsets, spacing, target_spacing)
    return Volume(array, spacing, origin, direction, offsets - offsets[0], meta, report,
                  tuple(s[4] for s in slices))


def _problem(report: SeriesReport, on_problem: str, text: str) -> None:
    """Record a problem; raise, warn (at load_series' caller) or stay quiet, per ``on_problem``."""
    report.problems.append(text)
    if on_problem == "raise":
        raise SeriesError(text + " (on_problem='warn' stacks anyway and reports it).")
    if on_problem == "warn":
        warnings.warn(text, SeriesWarning, stacklevel=3)


def _check_some_slices(paths: list[Path], slices: list, report: SeriesReport) -> None:
    """A SeriesError listing the first skipped files when no file held a usable image."""
    if not slices:
        raise SeriesError(f"none of the {len(paths)} file(s) holds a usable image; skipped: "
                          + "; ".join(f"{p} ({why.split(';')[0]})" for p, why in report.skipped[:5])
                          + ("" if len(report.skipped) <= 5
                             else f"; and {len(report.skipped) - 5} more"))


def _pick_series(slices: list, series: str | None, report: SeriesReport) -> list:
    """The slices of one series (the asked ``series``, or the only one) that can be stacked."""
    keys = Counter(s[1].series_key for s in slices)
    if series is not None:
        other = {s[3].split(" frame ")[0] for s in slices if s[1].series_key != series}
        slices = [s for s in slices if s[1].series_key == series]
        if not slices:
            raise SeriesError(f"series={series!r} is not among the series found: {dict(keys)}.")
        report.skipped += [(p, f"another series (series_key != {series!r})") for p in sorted(other)]
    elif len(keys) > 1:
        raise SeriesError(
            f"the files hold {len(keys)} series (series_key: slices) {dict(keys)}; pass "
            "series='<series_key>' to pick one, or separate them into folders."
        )
    shapes = Counter(s[0].shape for s in slices)
    if len(shapes) > 1:
        raise SeriesError(
            f"slices of different sizes {dict(shapes)} cannot be stacked; e.g. "
            f"{next(s[3] for s in slices if s[0].shape != slices[0][0].shape)}. Remove the odd "
            "files."
        )
    return slices


def _order_by_position(slices: list, report: SeriesReport, angle_tolerance_deg: float):
    """(order, offsets along the normal, normal, orientation, problems) from the slices'
    positions, projected on the majority orientation's normal."""
    found = []
    orient = np.array([s[1].image_orientation for s in slices], float)
    normals = np.cross(orient[:, :3], orient[:, 3:])
    # the majority orientation
    common = Counter(tuple(np.round(o, 3)) for o in orient).most_common(1)[0][0]
    main = int(np.argmin([np.abs(o - np.array(common)).max() for o in orient]))
    normal = normals[main] / np.linalg.norm(normals[main])
    orient = orient[[main]]
    spread = [_angle_deg(n, normal) for n in normals]
    report.orientation_spread_deg = max(spread)
    if report.orientation_spread_deg > angle_tolerance_deg:
        odd = slices[int(np.argmax(spread))][3]
        found.append(f"inconsistent ImageOrientationPatient (0020,0037): {odd} is tilted "
                     f"{report.orientation_spread_deg:.1f} deg from the series' main orientation")
    offsets = np.array([float(np.dot(s[2], normal)) for s in slices])
    return np.argsort(offsets, kind="stable"), offsets, normal, orient, found


def _order_by_instance(slices: list, report: SeriesReport):
    """The fallback without positions: InstanceNumber order, SliceThickness apart, axial."""
    found = ["ImagePositionPatient/ImageOrientationPatient missing on some slices; sorted by "
             "InstanceNumber"]
    report.sorted_by = "InstanceNumber"
    order = np.argsort([s[1].instance_number or 0 for s in slices], kind="stable")
    normal = np.array([0.0, 0.0, 1.0])
    offsets = np.arange(len(slices), dtype=float) * float(slices[0][1].slice_thickness or 1.0)
    orient = np.array([[1.0, 0, 0, 0, 1.0, 0]])
    return order, offsets, normal, orient, found


def _drop_duplicates(slices: list, offsets: np.ndarray, report: SeriesReport):
    """(slices, offsets, problems) with one slice per position: identical copies are noted in
    report.duplicates, different pixels at one position keep the first and are a problem."""
    found = []
    keep = [0]
    for i in range(1, len(slices)):
        if abs(offsets[i] - offsets[keep[-1]]) < 1e-3:
            if np.array_equal(slices[i][0], slices[keep[-1]][0]):
                report.duplicates.append(slices[i][3])
            else:
                found.append(
                    f"{slices[i][3]} and {slices[keep[-1]][3]} lie at the same position with "
                    "different pixels; the first is kept"
                )
                report.skipped.append((slices[i][3], f"same position as {slices[keep[-1]][3]} with "
                                                     "different pixels; the first is kept"))
            continue
        keep.append(i)
    return [slices[i] for i in keep], offsets[keep], found


def _spacing_problems(slices: list, steps: np.ndarray, spacing_z: float,
                      spacing_tolerance: float, report: SeriesReport) -> list[str]:
    """Irregular steps, then the gaps (recorded in report.gaps), as problem texts in that order."""
    found = []
    for i, step in enumerate(steps):
        if step > 1.5 * spacing_z:
            report.gaps.append((i, int(round(step / spacing_z)) - 1))
        elif abs(step - spacing_z) > spacing_tolerance * spacing_z:
            found.append(
                f"irregular slice spacing: {step:.3f} mm after {slices[i][3]} against "
                f"{spacing_z:.3f} mm"
            )
    for i, n in report.gaps:
        found.append(f"{n} slice(s) missing between {slices[i][3]} and {slices[i + 1][3]} "
                     f"({steps[i]:.2f} mm apart, spacing {spacing_z:.2f} mm)")
    return found


def _interp_axis(array: np.ndarray, axis: int, old: np.ndarray, new: np.ndarray) -> np.ndarray:
    """Linear interpolation of ``array`` along ``axis`` from ``old`` (increasing) to ``new``."""
    idx = (
        np.clip(np.searchsorted(old, new, side="right") - 1, 0, len(old) - 2)
        if len(old) > 1
        else np.zeros(len(new), int)
    )
    if len(old) == 1:
        return np.take(array, idx, axis=axis)
    t = np.clip((new - old[idx]) / (old[idx + 1] - old[idx]), 0.0, 1.0)
    shape = [1] * array.ndim
    shape[axis] = len(new)
    t = t.reshape(shape).astype(np.float32)
    return np.take(array, idx, axis=axis) * (1 - t) + np.take(array, idx + 1, axis=axis) * t


def _target(target_spacing) -> tuple[float, float, float]:
    try:
        target = tuple(float(v) for v in np.broadcast_to(np.asarray(target_spacing, float), (3,)))
    except (TypeError, ValueError):
        target = ()
    if len(target) != 3 or not all(np.isfinite(target)) or min(target) <= 0:
        raise InvalidArgumentError(f"target_spacing={target_spacing!r}: give a positive, "
                                   "finite number or "
                                   "(z, y, x) in mm.")
    return target


def resampled_shape(z_positions, shape, spacing, target_spacing) -> tuple[int, int, int]:
    """The (Z, Y, X) size ``resample`` would build; refuses non-finite spacings and huge sizes."""
    target = _target(target_spacing)
    z = np.asarray(z_positions, float)
    if not np.isfinite(z).all() or not all(np.isfinite(spacing)) or min(spacing[1:]) <= 0:
        raise SeriesError("the series' geometry is not finite or not positive (slice "
                          "positions from "
                          f"{z.min():g} to {z.max():g} mm, spacing {tuple(spacing)} mm); check "
                          "ImagePositionPatient (0020,0032) and PixelSpacing (0028,0030).")
    out = (int(np.floor((z[-1] - z[0]) / target[0] + 1e-3)) + 1,
           *(int(np.floor((n - 1) * sp / t + 1e-3)) + 1
             for n, sp, t in zip(shape[1:], spacing[1:], target[1:])))
    voxels = int(np.prod([float(n) for n in out]))
    if voxels > MAX_VOXELS:
        raise VolumeSizeError(
            f"resampling {tuple(shape)} voxels spanning {z[-1] - z[0]:.6g} x "
            f"{(shape[1] - 1) * spacing[1]:.6g} x "
            f"{(shape[2] - 1) * spacing[2]:.6g} mm to target_spacing {target} mm would build "
            f"{out} = {voxels:.3g} "
            f"voxels ({voxels * 4 / 2**30:.3g} GiB float32), over the limit of {MAX_VOXELS:.3g} "
            "(zoo.data.series.MAX_VOXELS). Use a larger target spacing, or check the slice "
            "positions "
            "(report.gaps) for a slice far from the others.")
    given = int(np.prod([float(n) for n in shape]))
    if voxels > MAX_UPSAMPLING * given and voxels > 2**20:
        gap = float(np.diff(np.sort(z)).max()) if len(z) > 1 else 0.0
        raise VolumeSizeError(
            f"resampling {tuple(shape)} voxels to target_spacing {target} mm would build {out} "
            f"= {voxels:.3g} "
            f"voxels, {voxels / given:.3g} times the input (limit zoo.data.series.MAX_UPSAMPLING = "
            f"{MAX_UPSAMPLING}); the slices span {z[-1] - z[0]:.6g} mm with a largest step of "
            f"{gap:.6g} mm. "
            "Check the slice positions (ImagePositionPatient (0020,0032), report.gaps) for a "
            "slice far from "
            "the others, or use a larger target spacing.")
    return out


def resample(array: np.ndarray, z_positions: np.ndarray, spacing, target_spacing):
    """Resample a (Z, Y, X) volume to ``target_spacing``; z interpolates between the real positions.

    The output size is computed first (``resampled_shape``): non-finite spacings and outputs over
    ``MAX_VOXELS`` are refused before anything is allocated.
    """
    target = _target(target_spacing)
    nz, ny, nx = resampled_shape(z_positions, array.shape, spacing, target)
    z = np.asarray(z_positions, float)
    new_z = z[0] + np.arange(nz) * target[0]
    out = _interp_axis(array, 0, z, new_z)
    for axis, n_new, old_sp, new_sp in ((1, ny, spacing[1], target[1]),
                                        (2, nx, spacing[2], target[2])):
        old = np.arange(array.shape[axis]) * old_sp
        out = _interp_axis(out, axis, old, np.arange(n_new) * new_sp)
    return out.astype(np.float32), new_z, target
