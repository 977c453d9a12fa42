"""``zoo predict MODEL INPUT --out DIR``: class scores for images and DICOM files, as a CSV.

INPUT is an image (``.png`` / ``.npy``), a DICOM file, or a folder of them (searched
recursively; files of other types are skipped). Each readable image (each frame of a
multi-frame DICOM) gets one row: its path relative to INPUT (never a patient identifier),
the frame, one score per class and the predicted label. DICOM pixels are brought into the
model's input range as ``zoo.dicom_dataset`` does (HU windows, colour scaling, or the image's
0.5-99.5 percentile stretch) and resized to the model's input size. Unreadable files are
listed in ``skipped.csv`` and do not stop the run. ``summary.json`` gives the counts, the
engine and the model. Exit 0 when at least one image was predicted, 1 when none was.
Outputs are written through zoo.outputs (never over a user's files).
"""

from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

from zoo.errors import DataError, ZooError
from zoo.outputs import claim_dir, finish_dir

IMAGE_SUFFIXES = (".png", ".npy")
OUTPUTS = ("predictions.csv", "skipped.csv", "summary.json")


def _items(source: Path) -> list[Path]:
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise DataError(
            f"zoo predict: input {str(source)!r} does not exist; give an image, a DICOM file "
            "or a folder."
        )
    return sorted(p for p in source.rglob("*") if p.is_file() and not p.name.startswith("."))


def _is_dicom(path: Path) -> bool:
    if path.suffix.lower() == ".dcm":
        return True
    with open(path, "rb") as f:
        head = f.read(132)
    return head[128:132] == b"DICM"


def _dicom_frames(path: Path, chans: int, out_range) -> list[np.ndarray]:
    """The frames of a DICOM file in the model's value range, (H, W, chans) each."""
    from zoo.data.pipeline import _affine, _apply, decode_item
    from zoo.data.windows import DEFAULT_CT_STACK, resolve_windows

    array, info = decode_item(path, volumes=False)
    windows = resolve_windows(DEFAULT_CT_STACK if chans == 3 else DEFAULT_CT_STACK[:1])
    ab = _affine(info, windows, chans)
    return [
        _apply(frame if frame.shape[-1] == chans else frame[..., :1], ab, out_range)
        for frame in array
    ]


def _fit(image: np.ndarray, shape) -> np.ndarray:
    """``image`` with the model's channel count and spatial size (bilinear resize)."""
    h, w, chans = shape
    if image.shape[-1] == 4:
        image = image[..., :3]
    if image.shape[-1] != chans:
        if image.shape[-1] == 1:
            image = np.repeat(image, chans, axis=-1)
        elif chans == 1:
            image = image.mean(axis=-1, keepdims=True)
        else:
            raise DataError(
                f"the image has {image.shape[-1]} channels and the model takes {chans}."
            )
    size = (h or image.shape[0], w or image.shape[1])
    if image.shape[:2] != size:
        from keras import ops

        image = ops.convert_to_numpy(ops.image.resize(image, size, interpolation="bilinear"))
    return image.astype(np.float32)


def _load(path: Path, shape, out_range) -> list[np.ndarray]:
    if path.suffix.lower() in IMAGE_SUFFIXES:
        from zoo.train.folder_data import (
            _read_image,
        )  # 8- and 16-bit PNG; a corrupt one is a DataError

        return [_fit(_read_image(path), shape)]
    if _is_dicom(path):
        return [_fit(frame, shape) for frame in _dicom_frames(path, shape[-1], out_range)]
    raise DataError(f"not an image or DICOM file (use {', '.join(IMAGE_SUFFIXES)} or DICOM)")


def _class_names(model, n: int) -> list[str]:
    """The weight card's class names (``labels = "no-lesion, lesion"``), else class_0, ..."""
    from zoo.hub.cards import get_card

    try:
        labels = [
            s.strip() for s in get_card(str(getattr(model, "zoo_weights", ""))).labels.split(",")
        ]
    except (ZooError, AttributeError):
        labels = []
    return labels if len(labels) == n and all(labels) else [f"class_{i}" for i in range(n)]


def predict_folder(
    model_spec,
    source,
    out,
    *,
    engine: str = "auto",
    batch: int = 16,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Predict every readable image under ``source``; write the CSVs and summary into ``out``."""
    from zoo.infer.predictor import compile_for_inference, resolve_model
    from zoo.models.factory import input_contract

    source = Path(source)
    items = _items(source)
    model = resolve_model(model_spec)
    shape = tuple(model.inputs[0].shape[1:])
    if len(shape) != 3:
        raise DataError(
            f"zoo predict: model {model.name!r} takes {shape}; it predicts 2D images "
            "(H, W, C) only."
        )
    try:
        out_range = tuple(input_contract(model)["input_range"])
    except ZooError:
        out_range = (0.0, 255.0)
    predictor = compile_for_inference(model, engine=engine, precision="fp32", batch=batch)
    folder = claim_dir(out, writer="zoo predict", overwrite=overwrite, names=OUTPUTS)
    start, rows, skipped, pending = time.perf_counter(), 0, [], []
    root = source if source.is_dir() else source.parent
    with open(folder / "predictions.csv", "w", newline="") as f:
        writer = csv.writer(f)
        names = None

        def flush():
            nonlocal names, rows
            if not pending:
                return
            scores = np.asarray(predictor.predict(np.stack([x for _, _, x in pending])))
            scores = scores.reshape(len(pending), -1)
            if names is None:
                names = _class_names(model, scores.shape[1])
                writer.writerow(["file", "frame", *names, "predicted"])
            for (rel, frame, _), s in zip(pending, scores, strict=True):
                writer.writerow([rel, frame, *(f"{v:.6g}" for v in s), names[int(np.argmax(s))]])
            rows += len(pending)
            pending.clear()

        for i, path in enumerate(items, 1):
            rel = path.relative_to(root).as_posix()
            try:
                frames = _load(path, shape, out_range)
            except (ZooError, OSError, ValueError) as e:
                skipped.append((rel, str(e).splitlines()[0][:300]))
            else:
                pending += [(rel, k, x) for k, x in enumerate(frames)]
                if len(pending) >= batch:
                    flush()
            if progress and sys.stderr.isatty():
                print(f"\rzoo predict: {i}/{len(items)} files", end="", file=sys.stderr, flush=True)
        flush()
    with open(folder / "skipped.csv", "w", newline="") as f:
        csv.writer(f).writerows([("file", "reason"), *skipped])
    summary = {
        "model": model.name,
        "engine": predictor.engine,
        "precision": predictor.precision,
        "files": len(items),
        "predicted": rows,
        "skipped": len(skipped),
        "seconds": round(time.perf_counter() - start, 3),
        "note": predictor.note,
    }
    (folder / "summary.json").write_text(json.dumps(summary, indent=2))
    finish_dir(folder, writer="zoo predict")
    return summary


def _run(args) -> int:
    summary = predict_folder(
        args.model,
        args.input,
        args.out,
        engine=args.engine,
        batch=args.batch,
        overwrite=args.overwrite,
    )
    print(
        f"zoo predict: {summary['predicted']} image(s) predicted, "
        f"{summary['skipped']} file(s) skipped "
        f"(see {Path(args.out) / 'skipped.csv'}); engine {summary['engine']}; results in {args.out}"
    )
    return 0 if summary["predicted"] else 1


def add_predict_parser(subparsers) -> None:
    """Register ``zoo predict`` on the CLI's subparsers."""
    p = subparsers.add_parser(
        "predict", help="class scores for images / DICOM files (a file or a folder) as a CSV"
    )
    p.add_argument(
        "model", help="a .keras file or a zoo name with weights, e.g. simple_cnn.phantom"
    )
    p.add_argument("input", help="an image (.png/.npy), a DICOM file, or a folder of them")
    p.add_argument(
        "--out", required=True, help="output folder (predictions.csv, skipped.csv, summary.json)"
    )
    p.add_argument("--engine", default="auto", help="auto, tensorflow, onnxruntime or openvino")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument(
        "--overwrite", action="store_true", help="replace a previous zoo predict output at --out"
    )
    p.set_defaults(func=_run)
