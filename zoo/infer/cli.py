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
- A segmentation model (per-voxel outputs, zoo.infer.evaluate.is_segmenter) gets one row per
  DICOM series and NIfTI volume, with its mask written as NIfTI and DICOM-SEG:
  zoo.infer.predict_segmentation (``--roi``, ``--overlap``, ``--tta``, ``--largest-component``,
  ``--format``, ``--nifti-hu``).

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
import sys
import time
from pathlib import Path

import numpy as np

from zoo.errors import InvalidArgumentError
from zoo.infer.predict_common import RowKeys, _check_request, _items, _Notes, _write_mapping
from zoo.outputs import claim_dir, finish_dir

OUTPUTS = ("predictions.csv", "skipped.csv", "summary.json", "heatmaps")


# --- the run -----------------------------------------------------------------------------------


def _heatmap(model, x: np.ndarray, method: str, cls: int, path: Path, title: str) -> None:
    from zoo.explain.api import explain_batch
    from zoo.figures import explanation_figure

    heat = explain_batch(model, x[None], method, class_index=cls)[0]
    if heat.ndim == 3:  # a volume: the slice through the map's peak
        depth = int(np.unravel_index(int(np.argmax(heat)), heat.shape)[0])
        x, heat, title = x[depth], heat[depth], f"{title}, slice {depth}/{len(heat)}"
    explanation_figure(path, x, heat, title=title)


def predict_folder(
    model_spec,
    source,
    out,
    *,
    engine: str = "auto",
    batch: int | None = None,
    heatmaps: str | None = None,
    pseudonymise: bool = False,
    mapping=None,
    overwrite: bool = False,
    progress: bool = True,
    segmentation=None,
) -> dict:
    """Predict every readable image / series under ``source``; write the CSVs and summary to
    ``out``.

    Args:
        model_spec: a ``.keras`` file, a zoo name/tag, a model, or a ``zoo export`` output
            (ONNX file, OpenVINO or SavedModel folder with its sidecar JSON).
        source: an image, a DICOM file, a series folder or a folder of studies.
        out: the output folder (``predictions.csv``, ``skipped.csv``, ``summary.json``,
            ``heatmaps/``); an earlier run is replaced only with ``overwrite``.
        engine: the inference engine for Keras models (``zoo.compile_for_inference``);
            segmentation models run on TensorFlow.
        batch: images (or series) per forward pass (default 16); windows per model call for a
            segmentation model (default 4).
        heatmaps: an explanation method (``zoo.explain.METHODS``) for one overlay per row.
        pseudonymise: random row ids instead of paths and SeriesInstanceUIDs.
        mapping: where the pseudonym -> UID/path table goes, default ``<out>.pseudonyms.csv``
            beside ``out`` (never inside it, so ``out`` can be shared).
        overwrite: replace an earlier ``zoo predict`` output.
        progress: print a progress line on a terminal.
        segmentation: a ``zoo.infer.predict_segmentation.SegmentOptions`` for a segmentation
            model (windows, flips, largest component, mask formats); refused for a classifier.

    Returns:
        The summary (counts of rows and skips, the model, the engine, notes), also written to
        ``summary.json``.

    Raises:
        RandomWeightsError: a bare architecture name. DataError / OptionalDependencyError: a
            model or export that cannot run here. OutputError: ``out`` is not an earlier run.
            InvalidArgumentError: options of the other kind of model.
    """
    source, out, mapping = _check_request(source, out, heatmaps, pseudonymise, mapping, overwrite)
    model, segmenter = _open(model_spec, engine, batch or 16, heatmaps, segmentation)
    if segmenter is not None:
        from zoo.infer.predict_segmentation import predict_segmentation

        named = isinstance(model_spec, str) and not model_spec.endswith(".keras")
        return predict_segmentation(
            segmenter, source, out, options=segmentation, batch=batch,
            name=model_spec if named else segmenter.name, pseudonymise=pseudonymise,
            mapping=mapping, overwrite=overwrite, progress=progress)
    batch = batch or 16
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


def _open(model_spec, engine: str, batch: int, heatmaps, segmentation):
    """(PredictModel, None) for a classifier or an export; (None, Keras model) for a segmenter."""
    from zoo.infer.evaluate import is_segmenter
    from zoo.infer.sources import exported_kind, keras_model, open_model

    keras = None
    if not exported_kind(model_spec) and not (isinstance(model_spec, str | Path)
                                              and Path(model_spec).is_dir()):
        keras = keras_model(model_spec)
        if is_segmenter(keras):
            if heatmaps or engine not in ("auto", "tensorflow"):
                raise InvalidArgumentError(
                    f"{'--heatmaps' if heatmaps else '--engine ' + engine}: a segmentation "
                    "model is run as a Keras model on TensorFlow, without heat maps (its "
                    "output is already a map); leave the option out.")
            return None, keras
    changed = segmentation.changed() if segmentation is not None else []
    if changed:
        raise InvalidArgumentError(
            f"{', '.join(changed)}: segmentation options, and MODEL is a classifier (its outputs "
            "are not per-voxel); leave them out.")
    model = open_model(model_spec, engine=engine, batch=batch, model=keras)
    if heatmaps and model.keras_model is None:
        raise InvalidArgumentError(
            f"--heatmaps {heatmaps}: heat maps need the Keras model (gradients, layers), and "
            f"{str(model_spec)!r} is an exported {model.kind} model; give the .keras file or "
            "the zoo name it was exported from, or leave out --heatmaps."
        )
    return model, None


def _run(args) -> int:
    from zoo.infer.predict_segmentation import options_from_args

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
        segmentation=options_from_args(args),
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
    from zoo.infer.predict_segmentation import add_segmentation_options

    p = subparsers.add_parser(
        "predict",
        help="class scores for images, DICOM files, series and folders of studies, as a CSV; "
        "masks (NIfTI, DICOM-SEG) from a segmentation model",
    )
    p.add_argument(
        "model",
        help="a .keras file, a zoo name with weights (simple_cnn.phantom), or a zoo export "
        "output (.onnx, OpenVINO folder, SavedModel folder)",
    )
    p.add_argument("input", help="an image (.png/.npy), a DICOM file, a NIfTI volume "
                   "(segmentation models), or a folder of them")
    p.add_argument(
        "--out", required=True, help="output folder (predictions.csv, skipped.csv, summary.json)"
    )
    p.add_argument("--engine", default="auto", help="auto, tensorflow, onnxruntime or openvino")
    p.add_argument("--batch", type=int, default=None,
                   help="images/series per forward pass (default 16); windows per model call "
                   "for a segmentation model (default 4)")
    p.add_argument("--heatmaps", metavar="METHOD", choices=list(METHODS),
                   help=f"write an overlay per row ({', '.join(METHODS)}); Keras models only")
    p.add_argument("--pseudonymise", action="store_true",
                   help="random row ids; the mapping to UIDs/paths goes to a separate local file")
    p.add_argument("--mapping", help="where --pseudonymise writes the mapping "
                   "(default: OUT.pseudonyms.csv beside OUT)")
    p.add_argument(
        "--overwrite", action="store_true", help="replace a previous zoo predict output at --out"
    )
    add_segmentation_options(p)
    p.set_defaults(func=_run)
