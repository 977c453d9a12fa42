"""What both ``zoo predict`` paths (classifiers in zoo.infer.cli, segmenters in
zoo.infer.predict_segmentation) share: INPUT streamed folder by folder into rows, the rows' keys
(paths, SeriesInstanceUIDs or pseudonyms), warnings kept without identifiers, the request checks
and the pseudonym mapping file.

No patient identifier reaches a row, a reason or a note: rows carry a path relative to INPUT or
a UID, ``--pseudonymise`` replaces those by random pseudonyms, and every message has the
absolute paths it quotes replaced by those keys.
"""

from __future__ import annotations

import csv
import os
import re
import secrets
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from zoo.errors import DataError, InvalidArgumentError, ZooError
from zoo.explain.inputs import fit_image, fit_volume
from zoo.outputs import check_target, staged

IMAGE_SUFFIXES = (".png", ".npy")
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
    return fit_volume(norm(array[..., None]), shape), volume.report.slices, _left_out(volume)


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
    reader = _ItemReader(model.input_shape, model.input_range, root, keys, notes)
    for files in _folders(source):
        yield from (reader.volumes(files) if model.volumes else reader.images(files))


def _left_out(volume) -> list[tuple[str, str]]:
    """(file, why) of the files load_series left out of a volume (frames of a used file aside)."""
    return [(p, why) for p, why in volume.report.skipped if " frame " not in p]


class _ItemReader:
    """Reads one folder's files into rows; every message names files by their row id only.

    Subclasses change what a row holds through ``read_series`` (one DICOM series) and
    ``read_volume_file`` (one file of ``VOLUME_SUFFIXES``); grouping, keys and skips stay here.
    """

    VOLUME_SUFFIXES = (".npy",)

    def __init__(self, shape, out_range, root: Path, keys: RowKeys, notes: _Notes):
        self.shape, self.out_range = shape, out_range
        self.root, self.keys, self.notes = root, keys, notes

    def read_series(self, paths: list[Path]):
        """(the row's input, slices, files left out and why) of one series' files."""
        return _read_series(paths, self.shape, self.out_range)

    def read_volume_file(self, path: Path):
        """(slices, the row's input) of one volume file."""
        return 1, _read_npy_volume(path, self.shape)

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
        x, slices, left_out = notes.run(lambda: self.read_series(paths), names)
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
        """One row per volume file (.npy) and per DICOM series of the folder."""
        dicom = []
        for path in files:
            if not path.name.lower().endswith(self.VOLUME_SUFFIXES):
                dicom.append(path)
                continue
            try:
                slices, x = self.notes.run(lambda p=path: self.read_volume_file(p),
                                           self.names_of([path]))
            except _READ_ERRORS as e:
                yield self.skip(path, e)
            else:
                yield self.file_key(path), slices, x
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

