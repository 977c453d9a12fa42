"""Segmentation metrics, in numpy and scipy: Dice, IoU, the 95th-percentile Hausdorff distance
and the average symmetric surface distance in millimetres, per class and per case, with
bootstrap confidence intervals over cases.

Conventions (MONAI's, so numbers compare with ``monai.metrics``):

- **Surface.** The surface of a mask is its boundary voxels: foreground voxels with at least
  one face neighbour (4-connectivity in 2D, 6 in 3D) in the background or outside the image,
  i.e. ``mask & ~binary_erosion(mask)`` with the image border counting as background.
- **Distances** are Euclidean, in millimetres: every surface voxel of one mask to the nearest
  surface voxel of the other, with voxel centres ``index * spacing`` (spacing per axis in the
  array's order, (z, y, x) for volumes, so anisotropic voxels count right), computed by
  ``scipy.ndimage.distance_transform_edt(..., sampling=spacing)``.
- **HD95** (``percentile=95``) is symmetric as the *maximum of the two directed percentiles*:
  max(P95(prediction -> reference), P95(reference -> prediction)), each percentile linearly
  interpolated (``numpy.percentile``'s default, ``torch.quantile``'s too). ``percentile=100``
  is the classic Hausdorff distance.
- **ASD** is symmetric as the mean of the *pooled* distances of both directions (MONAI's
  ``compute_average_surface_distance(symmetric=True)``), not the mean of the two means.
- **Empty masks.** Surface distances need a surface on both sides. When the reference and the
  prediction of a class are both empty, Dice and IoU are 1 (nothing to find, nothing found)
  and HD95/ASD are NaN flagged ``"both empty"``; when only one is empty, Dice and IoU are 0 and
  HD95/ASD are NaN flagged ``"empty prediction"`` or ``"empty reference"``. Means over cases
  leave NaN out and report how many cases they count (``n``) and the flags.

Label maps hold integer classes 0..num_classes-1; class 0 (background) is left out of the
reports unless ``include_background=True``.
"""

from __future__ import annotations

import numpy as np

from zoo.errors import DataError, InvalidArgumentError
from zoo.metrics.classification import bootstrap_ci

BOTH_EMPTY, EMPTY_PREDICTION, EMPTY_REFERENCE = "both empty", "empty prediction", "empty reference"


def _masks(y_true, y_pred, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Two boolean masks of one shape, from 0/1 or bool arrays."""
    t, p = np.asarray(y_true), np.asarray(y_pred)
    if t.shape != p.shape:
        raise DataError(
            f"masks of shapes {t.shape} (true) and {p.shape} (predicted); give masks of one shape."
        )
    if not (np.isin(t, (0, 1)).all() and np.isin(p, (0, 1)).all()):
        raise DataError(
            f"{what}: binary masks must hold 0/1; threshold probabilities first or give "
            "num_classes= for label maps."
        )
    return t.astype(bool), p.astype(bool)


def _overlap(y_true, y_pred, num_classes, axis, empty: float, union: bool):
    """Dice (``union=False``) or IoU of binary masks, or one value per class of label maps."""
    if num_classes is not None:
        t, p = np.asarray(y_true), np.asarray(y_pred)
        if t.shape != p.shape:
            _masks(t, p, "")  # the shape error
        return np.array(
            [_overlap(t == c, p == c, None, axis, empty, union) for c in range(num_classes)]
        )
    t, p = _masks(y_true, y_pred, "iou" if union else "dice")
    inter = np.sum(t & p, axis=axis, dtype=np.float64)
    total = np.sum(t, axis=axis, dtype=np.float64) + np.sum(p, axis=axis, dtype=np.float64)
    num, den = (inter, total - inter) if union else (2 * inter, total)
    out = np.where(den > 0, num / np.where(den > 0, den, 1), empty)
    return float(out) if np.ndim(out) == 0 else out


def dice(y_true, y_pred, *, num_classes: int | None = None, axis=None, empty: float = 1.0):
    """Dice coefficient 2|A and B| / (|A| + |B|) of binary masks, or per class of label maps.

    Args:
        y_true: reference mask (0/1 or bool, any shape) or label map with ``num_classes``.
        y_pred: predicted mask or label map of the same shape.
        num_classes: give it for label maps: one Dice per class 0..num_classes-1.
        axis: axes to sum for one Dice per image, e.g. (1, 2) for (N, H, W) masks.
        empty: the score of two empty masks (1: nothing to find, nothing found).

    Returns:
        A float, or an array (per image with ``axis``, per class with ``num_classes``).

    Raises:
        DataError: masks of different shapes, or binary masks with values other than 0/1.
    """
    return _overlap(y_true, y_pred, num_classes, axis, empty, union=False)


def iou(y_true, y_pred, *, num_classes: int | None = None, axis=None, empty: float = 1.0):
    """Intersection over union |A and B| / |A or B| (the Jaccard index); IoU = D / (2 - D).

    Args:
        y_true: reference mask (0/1 or bool, any shape) or label map with ``num_classes``.
        y_pred: predicted mask or label map of the same shape.
        num_classes: give it for label maps: one IoU per class 0..num_classes-1.
        axis: axes to sum for one IoU per image, e.g. (1, 2) for (N, H, W) masks.
        empty: the score of two empty masks.

    Returns:
        A float, or an array (per image with ``axis``, per class with ``num_classes``).

    Raises:
        DataError: masks of different shapes, or binary masks with values other than 0/1.
    """
    return _overlap(y_true, y_pred, num_classes, axis, empty, union=True)


jaccard = iou


def _spacing(spacing, ndim: int) -> np.ndarray:
    """Voxel spacing per axis in mm: None (1 mm), one number, or one per axis."""
    s = np.ones(ndim) if spacing is None else np.asarray(spacing, np.float64).reshape(-1)
    if s.size == 1:
        s = np.repeat(s, ndim)
    if s.size != ndim or not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise InvalidArgumentError(
            f"spacing={spacing!r}: give one positive voxel size in mm per axis of the {ndim}D "
            "masks, in array order ((z, y, x) for volumes), or one number for all axes."
        )
    return s


def surface(mask) -> np.ndarray:
    """The boundary voxels of a binary mask (module docstring): face-connected erosion's rim.

    Args:
        mask: boolean or 0/1 array, 2D or 3D.

    Returns:
        A boolean array of the mask's shape, True on the surface voxels.
    """
    from scipy.ndimage import binary_erosion, generate_binary_structure

    m = np.asarray(mask, bool)
    return m & ~binary_erosion(m, generate_binary_structure(m.ndim, 1), border_value=0)


def empty_flag(y_true, y_pred) -> str:
    """``""``, ``"both empty"``, ``"empty prediction"`` or ``"empty reference"``.

    Args:
        y_true: reference binary mask.
        y_pred: predicted binary mask.

    Returns:
        Why surface distances of the pair are undefined, or ``""`` when they are defined.
    """
    t, p = bool(np.any(y_true)), bool(np.any(y_pred))
    if t and p:
        return ""
    return BOTH_EMPTY if not (t or p) else EMPTY_PREDICTION if t else EMPTY_REFERENCE


def surface_distances(y_true, y_pred, spacing=None) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances in mm: (prediction -> reference, reference -> prediction).

    Each surface voxel of one mask to the nearest surface voxel of the other (module
    docstring). The masks are cropped to the bounding box of their union first, which changes
    no distance (the erosion treats the crop's border as background, as it is).

    Args:
        y_true: reference binary mask, 2D or 3D.
        y_pred: predicted binary mask of the same shape.
        spacing: voxel size in mm per axis (array order), one number, or None for 1 mm.

    Returns:
        Two 1D float64 arrays; both empty when either mask is empty (see ``empty_flag``).

    Raises:
        DataError: masks of different shapes or not 0/1.
        InvalidArgumentError: a spacing that is not one positive number per axis.
    """
    from scipy.ndimage import distance_transform_edt

    t, p = _masks(y_true, y_pred, "surface_distances")
    s = _spacing(spacing, t.ndim)
    if not (t.any() and p.any()):
        return np.empty(0), np.empty(0)
    idx = np.nonzero(t | p)
    box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in idx)
    st, sp = surface(t[box]), surface(p[box])
    to_true = distance_transform_edt(~st, sampling=s)[sp]
    to_pred = distance_transform_edt(~sp, sampling=s)[st]
    return to_true, to_pred


def _check_percentile(percentile: float) -> None:
    if not 0 <= percentile <= 100:
        raise InvalidArgumentError(
            f"percentile={percentile!r}: give a value in [0, 100] (95 for HD95, 100 for the "
            "classic Hausdorff distance)."
        )


def _hd(to_true: np.ndarray, to_pred: np.ndarray, percentile: float) -> float:
    if not (to_true.size and to_pred.size):
        return float("nan")
    return float(max(np.percentile(to_true, percentile), np.percentile(to_pred, percentile)))


def _asd(to_true: np.ndarray, to_pred: np.ndarray) -> float:
    if not (to_true.size and to_pred.size):
        return float("nan")
    return float(np.concatenate([to_true, to_pred]).mean())


def hausdorff_distance(y_true, y_pred, *, spacing=None, percentile: float = 95.0) -> float:
    """Symmetric percentile Hausdorff distance in mm (module docstring: MONAI's convention).

    Args:
        y_true: reference binary mask, 2D or 3D.
        y_pred: predicted binary mask of the same shape.
        spacing: voxel size in mm per axis (array order), one number, or None for 1 mm.
        percentile: 95 for HD95, 100 for the maximum.

    Returns:
        The distance, or NaN when either mask is empty (``empty_flag`` says which).

    Raises:
        DataError: masks of different shapes or not 0/1.
        InvalidArgumentError: a bad spacing or percentile.
    """
    _check_percentile(percentile)
    return _hd(*surface_distances(y_true, y_pred, spacing), percentile)


def average_surface_distance(y_true, y_pred, *, spacing=None) -> float:
    """Average symmetric surface distance in mm: the mean of both directions' pooled distances.

    Args:
        y_true: reference binary mask, 2D or 3D.
        y_pred: predicted binary mask of the same shape.
        spacing: voxel size in mm per axis (array order), one number, or None for 1 mm.

    Returns:
        The distance, or NaN when either mask is empty (``empty_flag`` says which).

    Raises:
        DataError: masks of different shapes or not 0/1.
        InvalidArgumentError: a bad spacing.
    """
    return _asd(*surface_distances(y_true, y_pred, spacing))


def _label_map(a, num_classes: int, what: str) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype == bool:
        a = a.astype(np.int64)
    if not np.issubdtype(a.dtype, np.integer):
        if not (np.issubdtype(a.dtype, np.floating) and np.array_equal(a, np.round(a))):
            raise DataError(
                f"{what}: a label map holds integer classes (found {a.dtype} values such as "
                f"{a.ravel()[:3].tolist()}); take the argmax or threshold probabilities first."
            )
        a = a.astype(np.int64)
    bad = np.unique(a[(a < 0) | (a >= num_classes)])
    if bad.size:
        raise DataError(
            f"{what}: label values {bad[:5].tolist()} are outside the declared classes "
            f"0..{num_classes - 1}; fix the mask or give num_classes={int(bad.max()) + 1}."
        )
    return a


def case_metrics(
    y_true,
    y_pred,
    num_classes: int,
    *,
    spacing=None,
    percentile: float = 95.0,
    include_background: bool = False,
) -> list[dict]:
    """Dice, IoU, HD95 and ASD (mm) of one case's label maps, one row per class.

    Args:
        y_true: reference label map (integers 0..num_classes-1), 2D or 3D.
        y_pred: predicted label map of the same shape.
        num_classes: the number of classes, background included.
        spacing: voxel size in mm per axis (array order), one number, or None for 1 mm.
        percentile: the Hausdorff percentile (the column is ``hd95_mm`` for 95).
        include_background: also report class 0.

    Returns:
        Rows ``{"class", "dice", "iou", "hd95_mm", "asd_mm", "flag"}``; ``flag`` is ``""`` or
        why the surface distances are NaN (module docstring).

    Raises:
        DataError: label maps of different shapes, or values outside 0..num_classes-1.
        InvalidArgumentError: a bad num_classes, spacing or percentile.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise InvalidArgumentError(
            f"num_classes={num_classes!r}: give the number of classes with background (2 for "
            "a binary mask)."
        )
    _check_percentile(percentile)
    t = _label_map(y_true, num_classes, "y_true")
    p = _label_map(y_pred, num_classes, "y_pred")
    if t.shape != p.shape:
        raise DataError(
            f"label maps of shapes {t.shape} (true) and {p.shape} (predicted); give one shape."
        )
    s = _spacing(spacing, t.ndim)
    rows = []
    for c in range(0 if include_background else 1, num_classes):
        tc, pc = t == c, p == c
        to_true, to_pred = surface_distances(tc, pc, s)
        rows.append({"class": c, "dice": dice(tc, pc), "iou": iou(tc, pc),
                     _hd_key(percentile): _hd(to_true, to_pred, percentile),
                     "asd_mm": _asd(to_true, to_pred), "flag": empty_flag(tc, pc)})
    return rows


def _hd_key(percentile: float) -> str:
    return f"hd{percentile:g}_mm".replace(".", "_")


def _nanmean(values) -> float:
    """The mean of the finite values (NaN, without a warning, when there are none)."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")


def summarize_cases(rows, *, ci: float = 0.95, n_boot: int = 1000, seed: int = 0) -> dict:
    """Per-class means over cases with percentile-bootstrap CIs (cases resampled).

    Args:
        rows: ``case_metrics`` rows of every case; other columns (``case``, ``flag``, any
            text) are carried, only the numeric ones are averaged.
        ci: the confidence level.
        n_boot: bootstrap resamples.
        seed: the resampling seed.

    Returns:
        ``{class: {metric: {"value", "low", "high", "level", "n_boot", "dropped", "n"},
        "flags": {flag: count}}}``; NaN values (empty masks) are left out of a mean and ``n``
        counts the cases it averages.
    """
    out: dict = {}
    for c in sorted({r["class"] for r in rows}):
        mine = [r for r in rows if r["class"] == c]
        keys = [k for k, v in mine[0].items() if k != "class"
                and isinstance(v, float | int) and not isinstance(v, bool)]  # the metric columns
        entry: dict = {}
        for key in keys:
            values = np.array([r[key] for r in mine], np.float64)
            entry[key] = {**bootstrap_ci(_nanmean, values, n_boot=n_boot, level=ci, seed=seed),
                          "n": int(np.isfinite(values).sum())}
        flags = [r["flag"] for r in mine if r["flag"]]
        entry["flags"] = {f: flags.count(f) for f in sorted(set(flags))}
        out[c] = entry
    return out


def segmentation_report(
    cases,
    num_classes: int,
    *,
    spacing=None,
    ci: float = 0.95,
    names=None,
    percentile: float = 95.0,
    include_background: bool = False,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict:
    """The per-case table and the per-class means with bootstrap CIs of a segmentation.

    Args:
        cases: pairs ``(y_true, y_pred)`` of label maps, or triples ``(y_true, y_pred,
            spacing)`` for cases with their own voxel size.
        num_classes: the number of classes, background included.
        spacing: voxel size in mm of cases given as pairs (None: 1 mm).
        ci: the confidence level of the intervals.
        names: one name per case (default ``case0``, ``case1``, ...).
        percentile: the Hausdorff percentile.
        include_background: also report class 0.
        n_boot: bootstrap resamples.
        seed: the resampling seed.

    Returns:
        ``{"n_cases", "cases": [rows with "case"], "classes": summarize_cases(...),
        "conventions": {...}}``.

    Raises:
        DataError: no cases, names that do not match the cases, or bad label maps.
    """
    cases = list(cases)
    names = [f"case{i}" for i in range(len(cases))] if names is None else list(names)
    if not cases or len(names) != len(cases):
        raise DataError(
            f"segmentation_report: {len(cases)} cases and {len(names)} names; give at least one "
            "case and one name per case."
        )
    rows = []
    for name, case in zip(names, cases, strict=True):
        y_true, y_pred, *own = case
        rows += [{"case": name, **r} for r in case_metrics(
            y_true, y_pred, num_classes, spacing=own[0] if own else spacing,
            percentile=percentile, include_background=include_background)]
    return {"n_cases": len(cases), "cases": rows,
            "classes": summarize_cases(rows, ci=ci, n_boot=n_boot, seed=seed),
            "conventions": CONVENTIONS}


CONVENTIONS = {
    "surface": "boundary voxels: foreground with a face neighbour in the background or outside",
    "hausdorff": "max of the two directed percentiles (MONAI), linear interpolation",
    "asd": "mean of the pooled distances of both directions (MONAI, symmetric)",
    "empty": "both empty: dice=iou=1, distances NaN; one empty: dice=iou=0, distances NaN",
}


def _cell(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def format_segmentation_report(report: dict) -> str:
    """``segmentation_report``'s result as a plain-text table and per-class summary lines.

    Args:
        report: the dict ``segmentation_report`` (or ``zoo evaluate``) returns.

    Returns:
        The per-case rows, then per class each metric's mean with its CI and case count.
    """
    rows = report["cases"]
    cols = list(rows[0]) if rows else []
    table = [cols] + [[_cell(r[k]) for k in cols] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(cols))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip()
             for line in table]
    lines.append(f"{report['n_cases']} cases; mean over cases (bootstrap CI):")
    for c, entry in report["classes"].items():
        parts = [f"{k} {m['value']:.4f} ({100 * m['level']:.0f}% CI {m['low']:.4f} - "
                 f"{m['high']:.4f}, n={m['n']})" for k, m in entry.items() if k != "flags"]
        flags = ", ".join(f"{n} {f}" for f, n in entry["flags"].items())
        lines.append(f"class {c}: " + "; ".join(parts) + (f"; NaN: {flags}" if flags else ""))
    return "\n".join(lines)
