"""Where a (Z, Y, X) voxel grid lies in the patient: the one geometry every volume and mask shares.

Conventions (those of ``zoo.data.series.Volume``, so a DICOM series, a NIfTI file and a mask
compare directly):

- arrays are indexed ``[z, y, x]``: slice, row, column;
- ``spacing`` is ``(z, y, x)`` in mm;
- ``origin`` is the patient position (LPS, mm) of the centre of voxel ``[0, 0, 0]``;
- ``direction`` rows are unit LPS vectors of the **x** (column), **y** (row) and **z** (slice)
  index steps, in that order (for DICOM: ImageOrientationPatient's row and column vectors, then
  the slice normal).

Two grids are "the same" when every voxel centre of one lies within ``tol`` voxels of the
corresponding voxel centre of the other. A grid that is the same *up to* a permutation or flip of
its axes, or a whole-voxel shift, maps onto another exactly (``exact_index_map``): that is a
lossless reorientation, not a resampling.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from zoo.errors import DataError

AXES = ("z", "y", "x")
GRID_TOL = 0.05
"""Voxel centres closer than this fraction of a voxel count as the same point (DICOM stores
positions as decimal strings, NIfTI its affine as float32)."""


@dataclass(frozen=True, eq=False)
class Geometry:
    """A regular voxel grid in patient space (see the module docstring for the conventions)."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: np.ndarray  # (3, 3) rows: x, y, z index steps as unit LPS vectors

    def index_to_lps(self) -> np.ndarray:
        """4x4 matrix taking ``(z, y, x, 1)`` array indices to LPS mm."""
        d = np.asarray(self.direction, float)
        m = np.eye(4)
        m[:3, 0] = d[2] * self.spacing[0]
        m[:3, 1] = d[1] * self.spacing[1]
        m[:3, 2] = d[0] * self.spacing[2]
        m[:3, 3] = self.origin
        return m

    def lps_to_index(self) -> np.ndarray:
        """4x4 matrix taking LPS mm to continuous ``(z, y, x, 1)`` array indices."""
        return np.linalg.inv(self.index_to_lps())

    @classmethod
    def from_index_to_lps(cls, matrix, shape) -> Geometry:
        """The geometry whose ``index_to_lps()`` is ``matrix`` (4x4 over ``(z, y, x)``)."""
        m = np.asarray(matrix, float)
        steps = m[:3, :3]
        spacing = np.linalg.norm(steps, axis=0)
        if not np.all(np.isfinite(m)) or np.any(spacing <= 0):
            raise DataError(f"voxel-to-patient matrix {m[:3].round(4).tolist()} is not finite or "
                            "has a zero axis; the image has no usable geometry.")
        unit = steps / spacing
        direction = np.stack([unit[:, 2], unit[:, 1], unit[:, 0]])
        return cls(tuple(int(n) for n in shape), tuple(float(s) for s in spacing),
                   tuple(float(v) for v in m[:3, 3]), direction)


def geometry_of(obj) -> Geometry:
    """The ``Geometry`` of a Volume (``zoo.load_series``, ``zoo.read_nifti``), or ``obj`` itself.

    A DICOM volume whose slices are not evenly spaced (a gap, irregular steps) has no regular
    grid: DataError, fix by ``load_series(..., target_spacing=...)``.
    """
    if isinstance(obj, Geometry):
        return obj
    try:
        array, spacing, origin, direction = obj.array, obj.spacing, obj.origin, obj.direction
    except AttributeError:
        raise DataError(f"{type(obj).__name__} has no geometry; give a Volume from "
                        "zoo.load_series / zoo.read_nifti or a zoo.data.geometry.Geometry."
                        ) from None
    positions = getattr(obj, "positions", None)
    if positions is not None and len(positions) > 1:
        regular = np.arange(len(positions)) * spacing[0]
        worst = float(np.max(np.abs(np.asarray(positions, float) - regular)))
        if worst > GRID_TOL * spacing[0]:
            raise DataError(f"the volume's slices are not evenly spaced (a slice lies {worst:.3g} "
                            f"mm off a regular {spacing[0]:.4g} mm grid: a gap or irregular "
                            "steps), so it has no regular voxel grid. Load the series with "
                            "target_spacing=... to resample it onto one.")
    _refuse_shear(obj, spacing)
    return Geometry(tuple(int(n) for n in np.shape(array)[:3]), tuple(float(s) for s in spacing),
                    tuple(float(v) for v in origin), np.asarray(direction, float))


def _refuse_shear(volume, spacing) -> None:
    """DataError for a gantry-tilted series: its slices step off their normal, so the voxels form
    a sheared grid that a (spacing, origin, direction) geometry would misplace."""
    report = getattr(volume, "report", None)
    tilt = float(getattr(report, "tilt_deg", 0.0) or 0.0)
    depth = (np.shape(volume.array)[0] - 1) * spacing[0]
    drift = depth * np.tan(np.deg2rad(min(tilt, 89.0)))
    if drift > GRID_TOL * min(spacing[1:]):
        raise DataError(f"the volume's slices step {tilt:.3g} deg off their normal (gantry tilt), "
                        f"drifting {drift:.3g} mm in-plane over the series: its voxels do not form "
                        "an orthogonal grid. Resample it onto one (e.g. dcm2niix's tilt "
                        "correction) before pairing it with masks.")


def _corners(shape) -> np.ndarray:
    """(8, 4) homogeneous (z, y, x, 1) indices of the corner voxels of ``shape``."""
    ends = [(0, max(n - 1, 0)) for n in shape]
    return np.array([[*c, 1.0] for c in itertools.product(*ends)], float)


def _angle_deg(a, b) -> float:
    cos = float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def grid_differences(a, b, tol: float = GRID_TOL) -> list[str]:
    """What differs between grids ``a`` and ``b`` (shape, spacing, origin, orientation), each as
    a phrase with the amount; empty when every voxel centre matches within ``tol`` voxels."""
    a, b = geometry_of(a), geometry_of(b)
    found = []
    if a.shape != b.shape:
        found.append(f"shape {a.shape} vs {b.shape}")
    for i, name in enumerate(AXES):
        if abs(a.spacing[i] - b.spacing[i]) > tol * b.spacing[i] / max(b.shape[i], 1):
            found.append(f"{name} spacing {a.spacing[i]:.6g} vs {b.spacing[i]:.6g} mm")
    for i, name in zip((2, 1, 0), AXES):  # direction rows are x, y, z
        angle = _angle_deg(a.direction[i], b.direction[i])
        if angle > 0.01:
            what = "flipped" if angle > 179.99 else f"rotated {angle:.3g} deg"
            found.append(f"{name} axis {what}")
    shift = np.subtract(a.origin, b.origin)
    if np.linalg.norm(shift) > tol * min(b.spacing):
        found.append(f"origin {tuple(round(v, 3) for v in a.origin)} vs "
                     f"{tuple(round(v, 3) for v in b.origin)} mm "
                     f"({np.linalg.norm(shift):.3g} mm apart)")
    if not found and a.shape == b.shape:
        moved = (b.lps_to_index() @ a.index_to_lps() @ _corners(a.shape).T).T - _corners(a.shape)
        worst = float(np.abs(moved[:, :3]).max())
        if worst > tol:
            found.append(f"voxel centres up to {worst:.3g} voxels apart")
    return found


def check_same_grid(a, b, *, tol: float = GRID_TOL, what: str = "the mask",
                    against: str = "the reference volume") -> None:
    """DataError unless ``a`` and ``b`` are the same voxel grid (within ``tol`` voxels), naming
    what differs by how much and the fix (resample one onto the other)."""
    found = grid_differences(a, b, tol)
    if found:
        raise DataError(f"{what} does not lie on the voxel grid of {against}: "
                        + "; ".join(found) + ". Resample it onto that grid (read_mask(..., "
                        "resample=True) does so by nearest neighbour), or give the matching "
                        "reference.")


def exact_index_map(src, dst, tol: float = GRID_TOL):
    """``(perm, flip, offset)`` when every voxel centre of ``src`` falls on a voxel centre of
    ``dst`` (within ``tol`` voxels), else None.

    ``dst`` index along axis ``perm[i]`` = ``offset[i] + (-1 if flip[i] else 1) * src index``
    along axis ``i``: an axis permutation, flips and a whole-voxel shift, no interpolation.
    """
    src, dst = geometry_of(src), geometry_of(dst)
    m = dst.lps_to_index() @ src.index_to_lps()
    linear = m[:3, :3]
    signs = np.round(linear)
    if sorted(np.abs(signs).sum(axis=0)) != [1, 1, 1] or sorted(np.abs(signs).sum(axis=1)) != [
            1, 1, 1]:
        return None
    exact = np.eye(4)
    exact[:3, :3] = signs
    exact[:3, 3] = np.round(m[:3, 3])
    corners = _corners(src.shape)
    if np.abs((m - exact) @ corners.T).max() > tol:
        return None
    perm = tuple(int(np.argmax(np.abs(signs[:, i]))) for i in range(3))
    flip = tuple(bool(signs[perm[i], i] < 0) for i in range(3))
    offset = tuple(int(exact[perm[i], 3]) for i in range(3))
    return perm, flip, offset


def place_exact(array: np.ndarray, mapping, shape) -> tuple[np.ndarray, int]:
    """``array`` (on a source grid, trailing channel axes allowed) moved onto a grid of ``shape``
    by an ``exact_index_map`` result; returns (the placed array, non-zero voxels left outside)."""
    perm, flip, offset = mapping
    source_axis = [perm.index(j) for j in range(3)]
    moved = array.transpose(*source_axis, *range(3, array.ndim))
    moved = np.flip(moved, axis=[j for j in range(3) if flip[source_axis[j]]]) if any(
        flip) else moved
    out = np.zeros(tuple(shape) + array.shape[3:], array.dtype)
    src_slices, dst_slices = [], []
    for j in range(3):
        n = moved.shape[j]
        start = offset[source_axis[j]] - (n - 1 if flip[source_axis[j]] else 0)
        lo, hi = max(start, 0), min(start + n, shape[j])
        if hi <= lo:
            return out, int(np.count_nonzero(array))
        src_slices.append(slice(lo - start, hi - start))
        dst_slices.append(slice(lo, hi))
    inside = moved[tuple(src_slices)]
    out[tuple(dst_slices)] = inside
    return out, int(np.count_nonzero(moved)) - int(np.count_nonzero(inside))


def resample_nearest(array: np.ndarray, src, dst) -> np.ndarray:
    """``array`` on grid ``src`` sampled at every voxel centre of grid ``dst`` by nearest
    neighbour (labels stay labels); voxels outside ``src`` become 0. One slice at a time."""
    src, dst = geometry_of(src), geometry_of(dst)
    m = src.lps_to_index() @ dst.index_to_lps()
    yy, xx = np.mgrid[0:dst.shape[1], 0:dst.shape[2]]
    plane = np.stack([np.zeros(yy.size), yy.ravel(), xx.ravel(), np.ones(yy.size)])
    out = np.zeros(tuple(dst.shape) + array.shape[3:], array.dtype)
    for z in range(dst.shape[0]):
        plane[0] = z
        idx = np.rint(m[:3] @ plane).astype(np.int64)
        ok = np.all((idx >= 0) & (idx < np.array(array.shape[:3])[:, None]), axis=0)
        flat = out[z].reshape(-1, *array.shape[3:])
        flat[ok] = array[idx[0, ok], idx[1, ok], idx[2, ok]]
        out[z] = flat.reshape(out[z].shape)
    return out
