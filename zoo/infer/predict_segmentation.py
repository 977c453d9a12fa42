"""``zoo predict`` with a segmentation model: a label map per DICOM series or NIfTI volume, written
back on the source grid as NIfTI and as a DICOM-SEG that references the source series.

``zoo.infer.cli.predict_folder`` sends a Keras model with per-voxel outputs
(``zoo.infer.evaluate.is_segmenter``) here. INPUT is read as for a 3D classifier
(``zoo.infer.predict_common``: folder by folder, DICOM files grouped into series by
SeriesInstanceUID, unreadable files listed in ``skipped.csv``), and ``.nii`` / ``.nii.gz`` files
are volumes of their own.

Preprocessing. DICOM pixels go into the model's input range as for a classifier (HU windows or
the 0.5-99.5 percentile stretch; HU unchanged for a model with its windows inside) but are never
resized, so the prediction lies on the source grid. NIfTI voxels go in as stored, already in the
model's input range (as ``zoo evaluate`` takes them); ``nifti_hu`` says they are Hounsfield units
and windows them as DICOM CT.

Windows. ``zoo.infer.segment.segment`` runs sliding windows with Gaussian blending and optional
flips. The window is ``roi``, else the model's input size; along an axis where the model takes
any size (a fully convolutional U-Net) it is ``DEFAULT_ROI`` (64 voxels in 3D, 256 pixels in
2D: multiples of 2**6, so U-Nets up to depth 6 fit, and memory stays bounded on large scans).
A volume smaller than the window along an axis is padded at its end with its minimum value
(air, background) and the prediction cropped back, as nnU-Net pads images smaller than its
patch. A 2D model segments slice by slice. ``largest_component`` keeps each foreground class's
largest 3D connected component (26-neighbourhood), after cropping.

Outputs, in ``out``::

    predictions.csv       id, slices, then voxels_<class> and ml_<class> per foreground class
                          (mL = voxels x the product of the voxel spacing / 1000), nifti, seg
    masks/<key>.nii.gz    the label map (uint8, 0 background, k class k) on the source grid
    masks/<key>.seg.dcm   DICOM input: a BINARY DICOM-SEG referencing the source slices
    skipped.csv, summary.json; with pseudonymise the mapping file beside ``out``

``<key>`` is the SeriesInstanceUID, the NIfTI file's path relative to INPUT without its suffix,
or with ``pseudonymise`` a random pseudonym (the row id). Identifiers: rows, reasons, notes,
file names and NIfTI headers carry nothing from the source but those keys (``write_nifti``
builds a fresh header; the affine holds only geometry). A DICOM-SEG, as the standard requires
for a viewer to place it, carries its source's patient and study modules (name, ID, birth date,
study UID) and references the source series and slices, so ``.seg.dcm`` files hold them even
with ``pseudonymise``: ``formats="nifti"`` (``--format nifti``) writes no DICOM at all.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import NamedTuple

import numpy as np

from zoo.errors import DataError, InvalidArgumentError
from zoo.explain.inputs import fit_volume
from zoo.infer.evaluate import add_window_options, roi_argument
from zoo.infer.predict_common import (
    _READ_ERRORS,
    RowKeys,
    _folders,
    _ItemReader,
    _left_out,
    _normaliser,
    _Notes,
    _reason,
    _write_mapping,
)
from zoo.infer.segment import keep_largest_component, segment
from zoo.infer.sliding import _per_axis
from zoo.outputs import claim_dir, finish_dir
from zoo.registry import Registry

FORMATS = Registry("segmentation output format", ("nifti", "seg"), argument="--format",
                   hint="Give one or both, comma-separated: --format nifti,seg.")
OUTPUTS = ("predictions.csv", "skipped.csv", "summary.json", "masks")
NIFTI_SUFFIXES = (".nii.gz", ".nii")
DEFAULT_ROI = {2: 256, 3: 64}
DEFAULT_BATCH = 4
SEG_NOTE = (
    "each .seg.dcm is a DICOM Segmentation: as the standard requires, it carries the source "
    "series' patient and study modules and references its series and slices, even with "
    "--pseudonymise. --format nifti writes no DICOM; nothing else in this folder holds "
    "anything from the source but the row ids."
)


@dataclass(frozen=True)
class SegmentOptions:
    """How ``zoo predict`` applies a segmentation model (see the module docstring).

    ``roi``: window size (int or one per spatial axis; default the model's input size, else
    ``DEFAULT_ROI``). ``overlap``, ``tta_flips``, ``largest_component``: as
    ``zoo.infer.segment.segment``. ``formats``: ``"nifti"``, ``"seg"``, both (a comma-separated
    string or a sequence), or None for both on DICOM and NIfTI only on NIfTI input.
    ``nifti_hu``: NIfTI voxels are Hounsfield units (windowed as DICOM CT).
    """

    roi: int | tuple | None = None
    overlap: float = 0.5
    tta_flips: bool | tuple = False
    largest_component: bool = False
    formats: str | tuple | None = None
    nifti_hu: bool = False

    def __post_init__(self):
        if self.formats is not None:
            object.__setattr__(self, "formats", _parse_formats(self.formats))
        if isinstance(self.roi, list):
            object.__setattr__(self, "roi", tuple(self.roi))

    def changed(self) -> list[str]:
        """The options given other values than their defaults."""
        return [f.name for f in fields(self) if getattr(self, f.name) != f.default]

    def writes(self, fmt: str, dicom: bool) -> bool:
        """Whether ``fmt`` is written for a DICOM (``dicom``) or NIfTI input."""
        if fmt == "seg" and not dicom:
            return False
        return self.formats is None or fmt in self.formats


def _parse_formats(formats) -> tuple[str, ...]:
    names = formats.split(",") if isinstance(formats, str) else list(formats)
    names = [FORMATS.check(str(n).strip().lower()) for n in names if str(n).strip()]
    if not names:
        raise InvalidArgumentError(f"--format {formats!r}: give nifti, seg or nifti,seg.")
    return tuple(dict.fromkeys(names))


class _Case(NamedTuple):
    """One volume to segment: its Volume (grid, spacing, DICOM sources) and the model input."""

    volume: object
    x: np.ndarray  # (Z, Y, X, C) float32 in the model's input range
    dicom: bool


class _SegmentationReader(_ItemReader):
    """Rows of DICOM series and NIfTI volumes, each kept with its geometry, never resized."""

    VOLUME_SUFFIXES = (".npy", *NIFTI_SUFFIXES)

    def __init__(self, shape, out_range, root, keys, notes, options: SegmentOptions):
        super().__init__(shape, out_range, root, keys, notes)
        self.options = options

    def read_series(self, paths):
        from zoo.data.series import load_series

        volume = load_series(paths, on_problem="warn")
        if self.options.writes("nifti", dicom=True):
            _check_grid(volume)
        case = self._case(volume, volume.meta.units, dicom=True)
        return case, volume.report.slices, _left_out(volume)

    def read_volume_file(self, path: Path):
        if path.name.lower().endswith(".npy"):
            raise DataError("a .npy array has no voxel geometry to write a mask back onto; a "
                            "segmentation model reads DICOM series and NIfTI volumes (.nii, "
                            ".nii.gz): save the array as NIfTI (zoo.write_nifti).")
        from zoo.data.nifti import read_nifti

        volume = read_nifti(path)
        units = "HU" if self.options.nifti_hu else None
        return volume.array.shape[0], self._case(volume, units, dicom=False)

    def _case(self, volume, units: str | None, dicom: bool) -> _Case:
        """The volume in the model's input range (``units`` None: as stored), channels matched."""
        array, chans = volume.array, self.shape[-1]
        x = array[..., None]
        if units is not None:
            norm = _normaliser(units, array, (float(array.min()), float(array.max())), chans,
                               self.out_range)
            x = norm(x)
        return _Case(volume, fit_volume(x, (None, None, None, chans)), dicom)


def _check_grid(volume) -> None:
    """DataError for a series without a regular grid (a gap): no NIfTI affine describes it."""
    from zoo.data.geometry import geometry_of

    try:
        geometry_of(volume)
    except DataError as e:
        raise DataError(f"{str(e).split(' Load the series')[0]} No NIfTI can describe it; "
                        "--format seg writes its DICOM-SEG only.") from None


# --- the model ---------------------------------------------------------------------------------


def window_size(model, roi=None) -> tuple[int, ...]:
    """The sliding window for ``model``: ``roi``, else its input size, ``DEFAULT_ROI`` on free axes.

    Args:
        model: a Keras segmentation model.
        roi: None, an int, or one int per spatial axis.

    Returns:
        One window size per spatial axis.

    Raises:
        InvalidArgumentError: a ``roi`` that is not positive, or differs from the size the
            model fixes.
    """
    fixed = tuple(model.inputs[0].shape[1:-1])
    dims = len(fixed)
    if roi is None:
        return tuple(DEFAULT_ROI[dims] if f is None else int(f) for f in fixed)
    roi = _per_axis(roi, dims, "roi")
    if any(r < 1 for r in roi):
        raise InvalidArgumentError(f"--roi {roi}: window sizes are positive voxel counts.")
    if any(f is not None and f != r for f, r in zip(fixed, roi, strict=True)):
        raise InvalidArgumentError(
            f"--roi {' '.join(map(str, roi))}: the model takes windows of {fixed} only; leave "
            "out --roi (or give the free axes only a size)."
        )
    return roi


def _class_names(model) -> list[str]:
    """Names of the foreground classes: the weight card's labels after background, else class_k."""
    from zoo.infer.sources import _card_class_names

    channels = int(model.outputs[0].shape[-1])
    count = 1 if channels == 1 else channels - 1
    labels = _card_class_names(model)
    if labels and len(labels) == count + 1:
        return labels[1:]
    return [f"class_{k}" for k in range(1, count + 1)]


def _segment_padded(model, x, window, options: SegmentOptions, batch: int) -> np.ndarray:
    """Labels of one image / volume (spatial, C), padded up to the window and cropped back."""
    spatial = x.shape[:-1]
    pad = [(0, max(0, w - n)) for w, n in zip(window, spatial, strict=True)]
    if any(after for _, after in pad):
        x = np.pad(x, [*pad, (0, 0)], constant_values=float(x.min()))
    seg = segment(model, x, window, options.overlap, tta_flips=options.tta_flips, batch=batch)
    return seg.labels[tuple(slice(0, n) for n in spatial)]


def segment_volume(model, x, window, options: SegmentOptions, batch: int) -> np.ndarray:
    """The (Z, Y, X) label map of one prepared volume: 3D windows, or slice by slice in 2D.

    Args:
        model: a Keras segmentation model, 2D or 3D.
        x: (Z, Y, X, C) in the model's input range.
        window: ``window_size(model, ...)``.
        options: flips, overlap and the largest-component option.
        batch: windows per model call.

    Returns:
        uint8 labels on ``x``'s grid (0 background).
    """
    if len(window) == 2:
        labels = np.stack([_segment_padded(model, s, window, options, batch) for s in x])
    else:
        labels = _segment_padded(model, x, window, options, batch)
    if options.largest_component:
        for c in range(1, int(labels.max(initial=0)) + 1):
            mask = labels == c
            labels[mask & ~keep_largest_component(mask)] = 0
    return labels


# --- outputs -----------------------------------------------------------------------------------


class _MaskWriter:
    """``masks/<key>.nii.gz`` and ``masks/<key>.seg.dcm`` (a repeated key gets ``-2``, ``-3``)."""

    def __init__(self, folder: Path, options: SegmentOptions, names: list[str]):
        self.folder, self.options, self.names, self.used = folder, options, names, set()

    def _stem(self, key: str, dicom: bool) -> str:
        stem = key
        if not dicom:
            stem = next((key[: -len(s)] for s in NIFTI_SUFFIXES if key.lower().endswith(s)), key)
        base, n = stem, 1
        while stem in self.used:
            n += 1
            stem = f"{base}-{n}"
        self.used.add(stem)
        return stem

    def write(self, key: str, labels: np.ndarray, case: _Case) -> list[str]:
        """[nifti path, seg path] relative to the output folder ('' for one not written)."""
        from zoo.data.dicom_seg import write_dicom_seg
        from zoo.data.nifti import write_nifti

        stem, written = self._stem(key, case.dicom), ["", ""]
        if self.options.writes("nifti", case.dicom):
            written[0] = f"masks/{stem}.nii.gz"
            write_nifti(labels, case.volume, self.folder / written[0])
        if self.options.writes("seg", case.dicom):
            written[1] = f"masks/{stem}.seg.dcm"
            write_dicom_seg(labels, case.volume, self.folder / written[1],
                            segment_labels=self.names)
        return written


def _volumes_ml(labels: np.ndarray, spacing, count: int) -> list:
    """voxels, mL, voxels, mL, ... per foreground class 1 .. count."""
    voxel_ml = float(np.prod([float(s) for s in spacing])) / 1000.0
    counts = np.bincount(labels.ravel(), minlength=count + 1)[1 : count + 1]
    return [v for c in counts for v in (int(c), f"{int(c) * voxel_ml:.8g}")]


class _Run:
    """One ``zoo predict`` run of a segmentation model: segment, write, one CSV row per case."""

    def __init__(self, model, folder: Path, options: SegmentOptions, batch: int, reader):
        self.model, self.options, self.batch, self.reader = model, options, batch, reader
        self.window = window_size(model, options.roi)
        self.names = _class_names(model)
        self.writer = _MaskWriter(folder, options, self.names)
        self.predicted, self.skipped = 0, []

    def rows(self, source: Path, tty: bool):
        """The CSV rows of every case under ``source``, streamed (skips are collected)."""
        for files in _folders(source):
            for key, slices, case in self.reader.volumes(files):
                row = None
                if slices is None:
                    self.skipped.append((key, case))
                else:
                    row = self.case(key, slices, case)
                if tty:
                    print(f"\rzoo predict: {self.predicted} segmented, {len(self.skipped)} "
                          "skipped", end="", file=sys.stderr, flush=True)
                if row is not None:
                    yield row

    def header(self) -> list[str]:
        cols = [c for n in self.names for c in (f"voxels_{n}", f"ml_{n}")]
        return ["id", "slices", *cols, "nifti", "seg"]

    def case(self, key: str, slices: int, case: _Case) -> list | None:
        """The CSV row of one case, or None when its masks could not be written (skipped)."""
        reader = self.reader
        sources = [Path(p) for p, _ in case.volume.sources] or [Path(case.volume.meta.path)]
        names = reader.names_of(sources)
        labels = reader.notes.run(
            lambda: segment_volume(self.model, case.x, self.window, self.options, self.batch),
            names)
        try:
            files = reader.notes.run(lambda: self.writer.write(key, labels, case), names)
        except _READ_ERRORS as e:
            self.skipped.append((key, _reason(e, reader.keys, names)))
            return None
        self.predicted += 1
        return [key, slices, *_volumes_ml(labels, case.volume.spacing, len(self.names)), *files]


def predict_segmentation(
    model,
    source,
    out,
    *,
    options: SegmentOptions | None = None,
    name: str | None = None,
    batch: int | None = None,
    pseudonymise: bool = False,
    mapping=None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Segment every DICOM series and NIfTI volume under ``source``; write masks and a CSV.

    ``zoo.infer.cli.predict_folder`` checks the request (paths, mapping) and calls this for a
    segmentation model; see the module docstring for the inputs, windows and outputs.

    Args:
        model: a Keras model with per-voxel outputs (probabilities), 2D or 3D.
        source: a NIfTI file, a DICOM file, a series folder or a folder of studies.
        out: the output folder (``predictions.csv``, ``skipped.csv``, ``summary.json``,
            ``masks/``); an earlier run is replaced only with ``overwrite``.
        options: windows, flips, post-processing and output formats (``SegmentOptions``).
        name: the model's name for the summary (default ``model.name``).
        batch: windows per model call (default ``DEFAULT_BATCH``).
        pseudonymise: random row ids (and mask file names) instead of UIDs and paths.
        mapping: where the pseudonym table goes (required with ``pseudonymise``).
        overwrite: replace an earlier ``zoo predict`` output at ``out``.
        progress: print a progress line on a terminal.

    Returns:
        The summary, also written to ``summary.json``.

    Raises:
        InvalidArgumentError: a bad window or format. OutputError: ``out`` (or ``mapping``)
            exists and may not be replaced.
    """
    from zoo.infer.sources import input_range_of

    options = options or SegmentOptions()
    source, batch = Path(source), batch or DEFAULT_BATCH
    window_size(model, options.roi)  # a bad window fails before anything is written
    out_range, note = input_range_of(model)
    folder = claim_dir(out, writer="zoo predict", overwrite=overwrite, names=OUTPUTS)
    keys = RowKeys(pseudonymise)
    root = source if source.is_dir() else source.parent
    notes = _Notes(keys, root)
    reader = _SegmentationReader(tuple(model.inputs[0].shape[1:]), out_range, root, keys, notes,
                                 options)
    run = _Run(model, folder, options, batch, reader)
    start, tty = time.perf_counter(), progress and sys.stderr.isatty()
    with open(folder / "predictions.csv", "w", newline="") as f:
        table = csv.writer(f)
        table.writerow(run.header())
        table.writerows(run.rows(source, tty))
    if tty:
        print(file=sys.stderr)
    with open(folder / "skipped.csv", "w", newline="") as f:
        csv.writer(f).writerows([("id", "reason"), *run.skipped])
    summary = _summary(run, name or model.name, time.perf_counter() - start, note, notes)
    summary["pseudonymised"] = pseudonymise
    if pseudonymise:
        _write_mapping(mapping, keys, overwrite, summary)
    (folder / "summary.json").write_text(json.dumps(summary, indent=2))
    finish_dir(folder, writer="zoo predict")
    return summary


def _summary(run: _Run, name: str, seconds: float, note: str, notes: _Notes) -> dict:
    options = run.options
    return {
        "model": name,
        "model_kind": "keras",
        "task": "segmentation",
        "engine": "tensorflow",
        "precision": "fp32",
        "rows": "one per DICOM series / NIfTI volume",
        "predicted": run.predicted,
        "skipped": len(run.skipped),
        "seconds": round(seconds, 3),
        "rows_per_s": round(run.predicted / seconds, 3) if seconds > 0 else None,
        "classes": run.names,
        "formats": list(options.formats) if options.formats
        else "nifti and seg for DICOM series, nifti for NIfTI volumes",
        "window": list(run.window),
        "overlap": options.overlap,
        "tta_flips": options.tta_flips,
        "largest_component": options.largest_component,
        "batch": run.batch,
        "nifti_values": "Hounsfield units, windowed as DICOM CT" if options.nifti_hu
        else "as stored (the model's input range)",
        "dicom_seg": SEG_NOTE,
        "note": note,
        "warnings": notes.count,
        "warning_examples": notes.kept,
    }


def add_segmentation_options(parser) -> None:
    """Add the segmentation options to ``zoo predict`` (used when MODEL is a segmenter).

    Args:
        parser: the ``predict`` parser.
    """
    g = parser.add_argument_group(
        "segmentation models (per-voxel outputs): a mask per DICOM series / NIfTI volume")
    add_window_options(g, roi_default="the model's input size; 64 per free axis in 3D, 256 in "
                       "2D")
    g.add_argument("--format", default=None, metavar="nifti,seg",
                   help="masks to write: nifti, seg (DICOM-SEG) or both (default both for DICOM "
                   "series, nifti for NIfTI). A DICOM-SEG carries the source's patient module, as "
                   "DICOM requires; --format nifti writes no DICOM")
    g.add_argument("--nifti-hu", action="store_true",
                   help="NIfTI voxels are Hounsfield units: window them as DICOM CT (default: "
                   "as stored, already in the model's input range)")


def options_from_args(args) -> SegmentOptions:
    """``SegmentOptions`` from parsed ``zoo predict`` arguments.

    Args:
        args: the parsed arguments (``add_segmentation_options``).

    Returns:
        The options.
    """
    return SegmentOptions(roi=roi_argument(args.roi), overlap=args.overlap, tta_flips=args.tta,
                          largest_component=args.largest_component, formats=args.format,
                          nifti_hu=args.nifti_hu)
