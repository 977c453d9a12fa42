"""``zoo predict MODEL INPUT --out DIR``: class scores for images, DICOM files and series, as a CSV.

MODEL is a ``.keras`` file, a zoo name/tag, or a model ``zoo export`` wrote (ONNX, OpenVINO IR,
SavedModel; see zoo.infer.sources). INPUT is an image (``.png`` / ``.npy``), a DICOM file, or a
folder of them (searched recursively, one folder at a time, so a large archive is streamed:
at most one batch of decoded inputs is held in memory).

- A 2D model gets one row per image (per frame of a multi-frame DICOM), keyed by the file's
  path relative to INPUT.
- A 3D model gets one row per DICOM series, keyed by its SeriesInstanceUID: the files of one
  folder sharing a SeriesInstanceUID are stacked by zoo.data.series.load_series (geometry
  order; gaps and duplicates are noted, not fatal), and one row per ``.npy`` volume.

DICOM pixels are brought into the model's input range as ``zoo.dicom_dataset`` does (HU
windows, colour scaling, or the image's 0.5-99.5 percentile stretch) and resized to the
model's input size. No patient identifier is written: rows carry a path or a UID only, and
``--pseudonymise`` replaces those by random pseudonyms, with the mapping in a separate file
(``DIR.pseudonyms.csv`` beside DIR, or ``--mapping``) that the user keeps locally.
``--heatmaps METHOD`` writes one overlay per row (zoo.explain + zoo.figures; Keras models only).
Unreadable files are listed in ``skipped.csv`` and do not stop the run. Exit 0 when at least one
row was predicted, 1 when none was. Outputs are written through zoo.outputs.
"""

from __future__ import annotations

import csv
import json
import os
import re
import secrets
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from zoo.errors import DataError, InvalidArgumentError, ZooError
from zoo.explain.cli import fit_image, fit_volume
from zoo.outputs import check_target, claim_dir, finish_dir, staged

IMAGE_SUFFIXES = (".png", ".npy")
OUTPUTS = ("predictions.csv", "skipped.csv", "summary.json", "heatmaps")
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
_READ_ERRORS = (ZooError, OSError, ValueError)


# --- inputs ------------------------------------------------------------------------------------


def _folders(source: Path) -> Iterator[list[Path]]:
    """The files of ``source`` and of every non-hidden folder below it, sorted, lazily."""
    if source.is_file():
        yield [source]
        return
    if not source.is_dir():
        raise DataError(f"zoo predict: input {str(source)!r} does not exist; give an image, a "
                        "DICOM file or a folder.")
    for root, dirs, names in os.walk(source):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files = [Path(root) / n for n in sorted(names) if not n.startswith(".")]
        if files:
            yield files


def _is_dicom(path: Path) -> bool:
    if path.suffix.lower() == ".dcm":
        return True
    with open(path, "rb") as f:
        head = f.read(132)
    return head[128:132] == b"DICM"


def _normaliser(units: str, array: np.ndarray, value_range, chans: int, out_range):
    """The in-range transform ``zoo.dicom_dataset`` applies (HU windows, colour, percentiles);
    ``out_range`` None: the model takes Hounsfield units, its own windows inside the graph."""
    if out_range is None:
        if units != "HU":
            raise DataError(f"the model takes Hounsfield units (its CT windows are inside it) and "
                            f"this image's pixels are {units or 'not calibrated'}, not HU; give "
                            "CT images, or a model without built-in windows.")
        return lambda x: np.asarray(x, np.float32)
    from zoo.data.pipeline import _affine, _apply
    from zoo.data.windows import DEFAULT_CT_STACK, resolve_windows

    info = {"units": units, "value_range": list(value_range or (0.0, 1.0))}
    if units not in ("HU", "RGB"):
        sample = array.ravel()[:: max(1, array.size // 1_000_000)]
        info["percentiles"] = [float(v) for v in np.percentile(sample, (0.5, 99.5))]
    windows = resolve_windows(DEFAULT_CT_STACK if chans == 3 else DEFAULT_CT_STACK[:1])
    ab = _affine(info, windows, chans)
    return lambda x: _apply(x, ab, out_range)


def _dicom_frames(path: Path, chans: int, out_range) -> list[np.ndarray]:
    """The frames of a DICOM file in the model's value range, (H, W, chans) each."""
    from zoo.data.pipeline import decode_item

    array, info = decode_item(path, volumes=False)
    norm = _normaliser(info["units"], array, info["value_range"], chans, out_range)
    return [norm(frame if frame.shape[-1] == chans else frame[..., :1]) for frame in array]


def _read_image(path: Path, shape, out_range) -> list[np.ndarray]:
    """The frames of one image file, fitted to a 2D model."""
    if path.suffix.lower() in IMAGE_SUFFIXES:
        from zoo.train.folder_data import _read_image  # 8/16-bit PNG, .npy; corrupt: DataError

        return [fit_image(_read_image(path), shape)]
    if _is_dicom(path):
        return [fit_image(frame, shape) for frame in _dicom_frames(path, shape[-1], out_range)]
    raise DataError(f"not an image or DICOM file (use {', '.join(IMAGE_SUFFIXES)} or DICOM)")


def _read_npy_volume(path: Path, shape) -> np.ndarray:
    array = np.load(path, allow_pickle=False).astype(np.float32)
    if array.ndim == 3:
        array = array[..., None]
    if array.ndim != 4:
        raise DataError(f"a .npy of shape {array.shape}; a 3D model takes volumes (D, H, W) or "
                        "(D, H, W, C), already in its input range.")
    return fit_volume(array, shape)


def series_uid(path: Path) -> str:
    """The file's SeriesInstanceUID, read from the header only.

    A value that is not a UID (a corrupt file may hold any text there) is replaced by a hash of
    it, so no other text from the file reaches an output.

    Args:
        path: a DICOM file.

    Returns:
        The UID, or ``series-<12 hex digits>`` for a value that is not one.
    """
    from zoo.data.dicom import open_dataset

    ds = open_dataset(path, stop_before_pixels=True)
    with warnings.catch_warnings():  # pydicom's warning about a bad UI value quotes the value
        warnings.simplefilter("ignore")
        value = str(ds.get("SeriesInstanceUID", "") or "").strip()
    if _UID.fullmatch(value) and len(value) <= 64:
        return value
    import hashlib

    return "series-" + hashlib.sha256(value.encode()).hexdigest()[:12]


def _read_series(paths: list[Path], shape, out_range):
    """(volume fitted to the model, slices, files left out and why) of one series' files.

    Gaps and duplicates are warned about (the summary notes them) and the volume is predicted;
    files that hold no usable image are left out and come back to be reported."""
    from zoo.data.series import load_series

    volume = load_series(paths, on_problem="warn")
    array = volume.array
    norm = _normaliser(volume.meta.units, array, (float(array.min()), float(array.max())),
                       shape[-1], out_range)
    left_out = [(p, why) for p, why in volume.report.skipped if " frame " not in p]
    return fit_volume(norm(array[..., None]), shape), volume.report.slices, left_out


# --- row keys ----------------------------------------------------------------------------------


class RowKeys:
    """Row keys as written: the path / UID itself, or with ``pseudonymise`` a random pseudonym
    (the mapping stays in memory and goes to the user's local mapping file only)."""

    def __init__(self, pseudonymise: bool):
        self.pseudonymise, self.mapping, self._given = pseudonymise, [], {}

    def __call__(self, real: str, kind: str) -> str:
        if not self.pseudonymise:
            return real
        if real not in self._given:
            self._given[real] = f"anon-{secrets.token_hex(6)}"
            self.mapping.append((self._given[real], kind, real))
        return self._given[real]

    def clean(self, text: str, replace: dict) -> str:
        """``text`` with every path in ``replace`` swapped for its row key (pseudonym)."""
        for real, key in sorted(replace.items(), key=lambda kv: -len(kv[0])):
            text = text.replace(real, key)
        return text


# --- the run -----------------------------------------------------------------------------------


def _heatmap(model, x: np.ndarray, method: str, cls: int, path: Path, title: str) -> None:
    from zoo.explain.api import explain_batch
    from zoo.figures import explanation_figure

    heat = explain_batch(model, x[None], method, class_index=cls)[0]
    if heat.ndim == 3:  # a volume: the slice through the map's peak
        depth = int(np.unravel_index(int(np.argmax(heat)), heat.shape)[0])
        x, heat, title = x[depth], heat[depth], f"{title}, slice {depth}/{len(heat)}"
    explanation_figure(path, x, heat, title=title)


class _Notes:
    """Warnings raised while reading (a gap in a series, an odd tag), kept for the summary with
    paths replaced by row ids, instead of printed: a log must not name what the CSV hides."""

    def __init__(self, keys: RowKeys, root: Path, limit: int = 20):
        self.keys, self.limit, self.count, self.kept = keys, limit, 0, []
        self.root = {str(root) + os.sep: "", str(root): "INPUT"}

    def run(self, fn, names: dict):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                return fn()
            finally:
                for w in caught:
                    self.count += 1
                    text = str(w.message).splitlines()[0][:300] if str(w.message) else ""
                    text = self.keys.clean(text, {**names, **self.root})
                    if len(self.kept) < self.limit and text not in self.kept:
                        self.kept.append(text)


def _uid_or_none(path: Path) -> str | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return series_uid(path)
        except _READ_ERRORS:
            return None


def _items(source: Path, model, root: Path, keys: RowKeys, notes: _Notes):
    """(row id, frame/slices, fitted input) or (shown name, None, reason) per item, streamed."""
    reader = _ItemReader(model, root, keys, notes)
    for files in _folders(source):
        yield from (reader.volumes(files) if model.volumes else reader.images(files))


class _ItemReader:
    """Reads one folder's files into rows; every message names files by their row id only."""

    def __init__(self, model, root: Path, keys: RowKeys, notes: _Notes):
        self.shape, self.out_range = model.input_shape, model.input_range
        self.root, self.keys, self.notes = root, keys, notes

    def file_key(self, path: Path) -> str:
        return self.keys(path.relative_to(self.root).as_posix(), "file")

    def names_of(self, paths) -> dict:
        """Absolute path -> what a message may show instead."""
        keys, root = self.keys, self.root
        return {str(p): self.file_key(p) if keys.pseudonymise else p.relative_to(root).as_posix()
                for p in paths}

    def skip(self, path: Path, e) -> tuple:
        shown = self.file_key(path)
        text = e if isinstance(e, str) else _reason(e, self.keys, {})
        return shown, None, self.keys.clean(text, {**self.names_of([path]),
                                                   str(self.root) + os.sep: ""})

    def series(self, paths: list[Path], uid: str | None = None):
        """One series' row and its left-out files; SeriesError when the files hold several."""
        names, notes = self.names_of(paths), self.notes
        x, slices, left_out = notes.run(
            lambda: _read_series(paths, self.shape, self.out_range), names)
        if uid is None:
            used = [p for p in paths if str(p) not in {q for q, _ in left_out}]
            uid = notes.run(lambda: series_uid(used[0]), names)
        for p, why in left_out:
            yield self.skip(Path(p), why)
        yield self.keys(uid, "SeriesInstanceUID"), slices, x

    def images(self, files):
        """One row per frame of each 2D image file."""
        for path in files:
            try:
                frames = self.notes.run(lambda p=path: _read_image(p, self.shape, self.out_range),
                                        self.names_of([path]))
            except _READ_ERRORS as e:
                yield self.skip(path, e)
            else:
                yield from ((self.file_key(path), k, x) for k, x in enumerate(frames))

    def volumes(self, files):
        """One row per .npy volume and per DICOM series of the folder."""
        dicom = []
        for path in files:
            if path.suffix.lower() != ".npy":
                dicom.append(path)
                continue
            try:
                yield self.file_key(path), 1, _read_npy_volume(path, self.shape)
            except _READ_ERRORS as e:
                yield self.skip(path, e)
        if not dicom:
            return
        ends = {_uid_or_none(dicom[0]), _uid_or_none(dicom[-1])} - {None}
        if len(ends) < 2:  # the usual folder, one series: each file parsed once
            try:
                yield from list(self.series(dicom))
                return
            except _READ_ERRORS:  # several series after all, or nothing usable: file by file
                pass
        yield from self.grouped_series(dicom)

    def grouped_series(self, dicom: list[Path]):
        """Rows of a folder holding several series: files grouped by SeriesInstanceUID."""
        keys, groups = self.keys, {}
        for path in dicom:
            try:
                uid = self.notes.run(lambda p=path: series_uid(p), self.names_of([path]))
            except _READ_ERRORS as e:
                yield self.skip(path, e)
            else:
                groups.setdefault(uid, []).append(path)
        for uid, paths in groups.items():
            try:
                yield from list(self.series(paths, uid))
            except _READ_ERRORS as e:  # one line per file, each naming the series
                why = f"series {keys(uid, 'SeriesInstanceUID')}: {_reason(e, keys, {})}"
                clean = keys.clean(why, {**self.names_of(paths), str(self.root) + os.sep: ""})
                for path in paths:
                    yield self.skip(path, clean)


def _reason(e: Exception, keys: RowKeys, names: dict) -> str:
    text = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
    return keys.clean(text, names)  # absolute paths -> the row's id (relative path or pseudonym)


def predict_folder(
    model_spec,
    source,
    out,
    *,
    engine: str = "auto",
    batch: int = 16,
    heatmaps: str | None = None,
    pseudonymise: bool = False,
    mapping=None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Predict every readable image / series under ``source``; write the CSVs and summary to
    ``out``.

    Args:
        model_spec: a ``.keras`` file, a zoo name/tag, a model, or a ``zoo export`` output
            (ONNX file, OpenVINO or SavedModel folder with its sidecar JSON).
        source: an image, a DICOM file, a series folder or a folder of studies.
        out: the output folder (``predictions.csv``, ``skipped.csv``, ``summary.json``,
            ``heatmaps/``); an earlier run is replaced only with ``overwrite``.
        engine: the inference engine for Keras models (``zoo.compile_for_inference``).
        batch: images (or series) per forward pass.
        heatmaps: an explanation method (``zoo.explain.METHODS``) for one overlay per row.
        pseudonymise: random row ids instead of paths and SeriesInstanceUIDs.
        mapping: where the pseudonym -> UID/path table goes, default ``<out>.pseudonyms.csv``
            beside ``out`` (never inside it, so ``out`` can be shared).
        overwrite: replace an earlier ``zoo predict`` output.
        progress: print a progress line on a terminal.

    Returns:
        The summary (counts of rows and skips, the model, the engine, notes), also written to
        ``summary.json``.

    Raises:
        RandomWeightsError: a bare architecture name. DataError / OptionalDependencyError: a
            model or export that cannot run here. OutputError: ``out`` is not an earlier run.
    """
    from zoo.infer.sources import open_model

    source, out, mapping = _check_request(source, out, heatmaps, pseudonymise, mapping, overwrite)
    model = open_model(model_spec, engine=engine, batch=batch)
    if heatmaps and model.keras_model is None:
        raise InvalidArgumentError(
            f"--heatmaps {heatmaps}: heat maps need the Keras model (gradients, layers), and "
            f"{str(model_spec)!r} is an exported {model.kind} model; give the .keras file or "
            "the zoo name it was exported from, or leave out --heatmaps."
        )
    folder = claim_dir(out, writer="zoo predict", overwrite=overwrite, names=OUTPUTS)
    keys = RowKeys(pseudonymise)
    root = source if source.is_dir() else source.parent
    notes = _Notes(keys, root)
    start, skipped = time.perf_counter(), []
    tty = progress and sys.stderr.isatty()
    with open(folder / "predictions.csv", "w", newline="") as f:
        rows = _RowWriter(csv.writer(f), model, heatmaps, folder)
        for key, frame, x in _items(source, model, root, keys, notes):
            if frame is None:
                skipped.append((key, x))
            else:
                rows.add(key, frame, x, batch)
            if tty:
                print(f"\rzoo predict: {rows.rows + len(rows.pending)} predicted, "
                      f"{len(skipped)} skipped", end="", file=sys.stderr, flush=True)
        rows.flush()
    if tty:
        print(file=sys.stderr)
    with open(folder / "skipped.csv", "w", newline="") as f:
        csv.writer(f).writerows([("id", "reason"), *skipped])
    seconds = time.perf_counter() - start
    summary = {
        "model": model.name,
        "model_kind": model.kind,
        "engine": model.engine,
        "precision": model.precision,
        "rows": "one per DICOM series / volume" if model.volumes else "one per image or frame",
        "predicted": rows.rows,
        "skipped": len(skipped),
        "seconds": round(seconds, 3),
        "rows_per_s": round(rows.rows / seconds, 3) if seconds > 0 else None,
        "heatmaps": heatmaps,
        "pseudonymised": pseudonymise,
        "note": model.note,
        "warnings": notes.count,
        "warning_examples": notes.kept,
    }
    if pseudonymise:
        _write_mapping(mapping, keys, overwrite, summary)
    (folder / "summary.json").write_text(json.dumps(summary, indent=2))
    finish_dir(folder, writer="zoo predict")
    return summary


def _check_request(source, out, heatmaps, pseudonymise, mapping, overwrite):
    """(source, out, mapping) as paths, after the checks that need no model and write nothing."""
    if heatmaps is not None:
        from zoo.explain.api import METHODS

        METHODS.check(heatmaps)
    source, out = Path(source), Path(out).absolute()
    if not out.name:
        raise InvalidArgumentError(f"--out {str(out)!r}: give a new folder for the results.")
    if pseudonymise:
        mapping = Path(mapping) if mapping else out.with_name(out.name + ".pseudonyms.csv")
        if mapping.resolve().is_relative_to(out.resolve()):
            raise InvalidArgumentError(f"--mapping {str(mapping)!r} is inside --out; put the "
                                       "pseudonym mapping outside the folder you share.")
        check_target(mapping, overwrite=overwrite)
    elif mapping:
        raise InvalidArgumentError("--mapping applies with --pseudonymise only.")
    if not source.exists():
        raise DataError(f"zoo predict: input {str(source)!r} does not exist; give an image, a "
                        "DICOM file or a folder.")
    return source, out, mapping


class _RowWriter:
    """predictions.csv: inputs are batched, predicted, and written one row each (and heat maps)."""

    def __init__(self, writer, model, heatmaps, folder: Path):
        self.writer, self.model, self.heatmaps, self.folder = writer, model, heatmaps, folder
        self.names, self.rows, self.pending = None, 0, []

    def add(self, key, frame, x, batch: int) -> None:
        self.pending.append((key, frame, x))
        if len(self.pending) >= batch:
            self.flush()

    def _header(self, n_scores: int) -> None:
        """Class names (or class_i where the model has none that fit) as the first row."""
        model = self.model
        names = model.class_names
        if not names or len(names) != n_scores:
            names = [f"class_{i}" for i in range(n_scores)]
        self.names = names
        extra = ["heatmap"] if self.heatmaps else []
        self.writer.writerow(["id", "slices" if model.volumes else "frame", *names,
                              "predicted", *extra])

    def flush(self) -> None:
        pending, heatmaps, names = self.pending, self.heatmaps, self.names
        if not pending:
            return
        scores = np.asarray(self.model.predict(np.stack([x for _, _, x in pending])))
        scores = scores.reshape(len(pending), -1)
        if names is None:
            self._header(scores.shape[1])
            names = self.names
        for (key, frame, x), s in zip(pending, scores, strict=True):
            cls = int(np.argmax(s))
            extra = []
            if heatmaps:
                rel = f"heatmaps/{self.rows + 1:06d}.png"
                _heatmap(self.model.keras_model, x, heatmaps, cls, self.folder / rel,
                         f"row {self.rows + 1}: {heatmaps}, {names[cls]} {s[cls]:.3f}")
                extra = [rel]
            self.writer.writerow([key, frame, *(f"{v:.6g}" for v in s), names[cls], *extra])
            self.rows += 1
        pending.clear()


def _write_mapping(mapping: Path, keys: RowKeys, overwrite: bool, summary: dict) -> None:
    """The pseudonym -> UID/path table, outside the shared folder; noted in the summary."""
    with staged([mapping], writer="zoo predict", overwrite=overwrite) as (tmp,):
        with open(tmp, "w", newline="") as f:
            csv.writer(f).writerows([("pseudonym", "kind", "original"), *keys.mapping])
    summary["mapping"] = str(mapping)
    summary["mapping_note"] = (
        "row ids are random pseudonyms; the file named in 'mapping' links them back to "
        "SeriesInstanceUIDs and paths. Keep it locally; do not share it with these results."
    )


def _run(args) -> int:
    summary = predict_folder(
        args.model,
        args.input,
        args.out,
        engine=args.engine,
        batch=args.batch,
        heatmaps=args.heatmaps,
        pseudonymise=args.pseudonymise,
        mapping=args.mapping,
        overwrite=args.overwrite,
    )
    what = "series/volume(s)" if "series" in summary["rows"] else "image(s)"
    print(
        f"zoo predict: {summary['predicted']} {what} predicted, "
        f"{summary['skipped']} file(s) skipped "
        f"(see {Path(args.out) / 'skipped.csv'}); engine {summary['engine']}; results in {args.out}"
    )
    if args.pseudonymise:
        print(f"zoo predict: pseudonym mapping in {summary['mapping']}: keep it local, do not "
              "share it with the results.")
    return 0 if summary["predicted"] else 1


def add_predict_parser(subparsers) -> None:
    """Register ``zoo predict`` on the CLI's subparsers.

    Args:
        subparsers: the ``zoo`` parser's sub-parsers action.
    """
    from zoo.explain.api import METHODS

    p = subparsers.add_parser(
        "predict",
        help="class scores for images, DICOM files, series and folders of studies, as a CSV",
    )
    p.add_argument(
        "model",
        help="a .keras file, a zoo name with weights (simple_cnn.phantom), or a zoo export "
        "output (.onnx, OpenVINO folder, SavedModel folder)",
    )
    p.add_argument("input", help="an image (.png/.npy), a DICOM file, or a folder of them")
    p.add_argument(
        "--out", required=True, help="output folder (predictions.csv, skipped.csv, summary.json)"
    )
    p.add_argument("--engine", default="auto", help="auto, tensorflow, onnxruntime or openvino")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--heatmaps", metavar="METHOD", choices=list(METHODS),
                   help=f"write an overlay per row ({', '.join(METHODS)}); Keras models only")
    p.add_argument("--pseudonymise", action="store_true",
                   help="random row ids; the mapping to UIDs/paths goes to a separate local file")
    p.add_argument("--mapping", help="where --pseudonymise writes the mapping "
                   "(default: OUT.pseudonyms.csv beside OUT)")
    p.add_argument(
        "--overwrite", action="store_true", help="replace a previous zoo predict output at --out"
    )
    p.set_defaults(func=_run)
