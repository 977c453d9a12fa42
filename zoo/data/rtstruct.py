"""RTSTRUCT contours <-> voxels: rasterise ROI contours onto a reference grid, trace a label map.

Reading (pydicom): each ``CLOSED_PLANAR`` contour of an ROI (``ROIContourSequence`` /
``ContourData``, patient LPS mm) is taken to the reference grid's continuous indices and given to
the slice whose plane it lies on (every point within ``PLANE_TOL`` of a slice spacing of that
plane, else DataError: the contour is not on this series' slices). On its slice the polygon is
rasterised at pixel centres: **a voxel belongs to the ROI when its centre lies inside the
polygon** (matplotlib's ``Path.contains_points``); a centre exactly on an edge may fall either
way, so a traced pixel-boundary contour (edges half a pixel from every centre) reads back
exactly and a smooth contour differs from its ideal shape only at voxels whose centre lies within
the polygon's deviation from that shape. Contours of one ROI on one slice combine by the
even-odd rule (a contour inside another is a hole). ``POINT`` / ``OPEN_PLANAR`` contours mark no
area and are left out; so is an ROI that has only those.

Tracing (for the synthetic RTSTRUCT writer): each 4-connected region's outer boundary and each
hole's boundary becomes one closed polygon along pixel edges.
"""

from __future__ import annotations

import os

import numpy as np

from zoo.data.geometry import geometry_of
from zoo.errors import DataError

RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
PLANE_TOL = 0.25
"""A contour lies on a slice when every point is within this fraction of the slice spacing of
the slice's plane."""


def _where(path) -> str:
    return f"RTSTRUCT file {os.fspath(path)}"


def referenced_series(ds) -> set[str]:
    """SeriesInstanceUIDs the structure set names (ReferencedFrameOfReferenceSequence)."""
    found = set()
    for ref in ds.get("ReferencedFrameOfReferenceSequence", []):
        for study in ref.get("RTReferencedStudySequence", []):
            for series in study.get("RTReferencedSeriesSequence", []):
                if "SeriesInstanceUID" in series:
                    found.add(str(series.SeriesInstanceUID))
    return found


def frames_of_reference(ds) -> set[str]:
    """FrameOfReferenceUIDs the structure set's ROIs are drawn in."""
    found = {str(r.FrameOfReferenceUID) for r in ds.get("ReferencedFrameOfReferenceSequence", [])
             if "FrameOfReferenceUID" in r}
    found |= {str(r.ReferencedFrameOfReferenceUID) for r in ds.get("StructureSetROISequence", [])
              if "ReferencedFrameOfReferenceUID" in r}
    return found


def rtstruct_rois(ds, path) -> list[tuple[int, str, list[np.ndarray]]]:
    """(ROI number, ROI name, closed planar contours as (N, 3) LPS arrays) per ROI with area,
    in StructureSetROISequence order."""
    names = {int(r.ROINumber): str(r.get("ROIName", "")) for r in
             ds.get("StructureSetROISequence", []) if "ROINumber" in r}
    contours: dict[int, list[np.ndarray]] = {}
    for roi in ds.get("ROIContourSequence", []):
        number = int(roi.get("ReferencedROINumber", -1))
        for i, contour in enumerate(roi.get("ContourSequence", [])):
            if str(contour.get("ContourGeometricType", "")).upper() != "CLOSED_PLANAR":
                continue
            try:
                points = np.asarray([float(v) for v in contour.ContourData], float).reshape(-1, 3)
            except (AttributeError, ValueError, TypeError):
                raise DataError(f"{_where(path)}: contour {i + 1} of ROI {number} has no usable "
                                "ContourData (3006,0050); fix or remove it.") from None
            if len(points) < 3 or not np.all(np.isfinite(points)):
                raise DataError(f"{_where(path)}: contour {i + 1} of ROI {number} has "
                                f"{len(points)} points or non-finite coordinates; a closed "
                                "contour needs at least 3 finite points.")
            contours.setdefault(number, []).append(points)
    order = list(names) + [n for n in contours if n not in names]
    return [(n, names.get(n, f"ROI {n}"), contours[n]) for n in order if n in contours]


def polygon_mask(xs, ys, shape) -> np.ndarray:
    """(Y, X) bool: pixel centres (integer x, y) strictly inside the polygon ``(xs, ys)``."""
    from matplotlib.path import Path as PolygonPath

    out = np.zeros(shape, bool)
    x0, x1 = max(int(np.floor(np.min(xs))), 0), min(int(np.ceil(np.max(xs))), shape[1] - 1)
    y0, y1 = max(int(np.floor(np.min(ys))), 0), min(int(np.ceil(np.max(ys))), shape[0] - 1)
    if x1 < x0 or y1 < y0:
        return out
    yy, xx = np.mgrid[y0:y1 + 1, x0:x1 + 1]
    path = PolygonPath(np.column_stack([xs, ys]), closed=False)
    inside = path.contains_points(np.column_stack([xx.ravel(), yy.ravel()]))
    out[y0:y1 + 1, x0:x1 + 1] = inside.reshape(yy.shape)
    return out


def rasterise(contours, reference, path, name: str) -> np.ndarray:
    """(Z, Y, X) bool of one ROI's contours on the reference grid (see the module docstring)."""
    grid = geometry_of(reference)
    to_index = grid.lps_to_index()
    out = np.zeros(grid.shape, bool)
    for i, points in enumerate(contours):
        idx = points @ to_index[:3, :3].T + to_index[:3, 3]
        z = idx[:, 0]
        k = int(np.rint(np.median(z)))
        off = float(np.abs(z - k).max())
        if off > PLANE_TOL:
            what = ("is not parallel to the reference's slices (an orientation mismatch)"
                    if np.ptp(z) > PLANE_TOL else "lies between the reference's slices")
            raise DataError(f"{_where(path)}: contour {i + 1} of ROI {name!r} {what}: its points "
                            f"are up to {off * grid.spacing[0]:.3g} mm off slice {k}'s plane. "
                            "Give the series the structure set was drawn on.")
        if not 0 <= k < grid.shape[0]:
            raise DataError(f"{_where(path)}: contour {i + 1} of ROI {name!r} lies on slice {k}, "
                            f"outside the reference's {grid.shape[0]} slices; give the series "
                            "the structure set was drawn on.")
        out[k] ^= polygon_mask(idx[:, 2], idx[:, 1], grid.shape[1:])
    return out


_STEPS = {(1, 0): 0, (0, 1): 1, (-1, 0): 2, (0, -1): 3}  # (dx, dy) -> index, clockwise on screen


def _boundary_edges(mask: np.ndarray) -> dict:
    """start corner -> list of end corners of the pixel edges between foreground and background,
    directed so the foreground lies on the right (screen coordinates, y down); corner (x, y) is
    the top-left corner of pixel [y, x]."""
    padded = np.pad(mask.astype(bool), 1)
    fg = padded[1:-1, 1:-1]
    edges: dict = {}
    sides = (
        (~padded[:-2, 1:-1], (0, 0), (1, 0)),  # top: left -> right
        (~padded[1:-1, 2:], (1, 0), (1, 1)),  # right: top -> bottom
        (~padded[2:, 1:-1], (1, 1), (0, 1)),  # bottom: right -> left
        (~padded[1:-1, :-2], (0, 1), (0, 0)),  # left: bottom -> top
    )
    for open_side, start, end in sides:
        ys, xs = np.nonzero(fg & open_side)
        for x, y in zip(xs.tolist(), ys.tolist()):
            edges.setdefault((x + start[0], y + start[1]), []).append(
                (x + end[0], y + end[1]))
    return edges


def _next_corner(edges: dict, corner, direction):
    """Pop the edge leaving ``corner``: a right turn first at a saddle (keeps regions
    4-connected and loops from crossing), then straight on, then left."""
    options = edges[corner]
    if len(options) > 1:
        dx, dy = direction
        for want in ((-dy, dx), (dx, dy), (dy, -dx)):
            for j, end in enumerate(options):
                if (end[0] - corner[0], end[1] - corner[1]) == want:
                    return options.pop(j)
    return options.pop()


def trace_contours(mask: np.ndarray) -> list[np.ndarray]:
    """Closed pixel-boundary polygons of a 2D mask, as (N, 2) arrays of (x, y) in pixel
    coordinates (pixel centres are integers, so vertices are at half-integers); one polygon per
    region outline and per hole, collinear vertices merged."""
    edges = _boundary_edges(mask)
    loops = []
    while edges:
        start = next(iter(edges))
        corner, loop, direction = start, [start], None
        while True:
            nxt = _next_corner(edges, corner, direction or (1, 0))
            if not edges[corner]:
                del edges[corner]
            direction = (nxt[0] - corner[0], nxt[1] - corner[1])
            corner = nxt
            if corner == start:
                break
            loop.append(corner)
        loops.append(_merge_collinear(np.asarray(loop, float) - 0.5))
    return loops


def _merge_collinear(points: np.ndarray) -> np.ndarray:
    prev, nxt = np.roll(points, 1, axis=0), np.roll(points, -1, axis=0)
    cross = (points[:, 0] - prev[:, 0]) * (nxt[:, 1] - points[:, 1]) - (
        points[:, 1] - prev[:, 1]) * (nxt[:, 0] - points[:, 0])
    return points[cross != 0]
