"""``zoo dicom info PATH`` (a summary without PHI) and ``zoo dicom convert PATH OUT`` (PNG / .npy).

Registered into ``zoo``'s parser by ``add_dicom_parser(subparsers)``; also runs alone as
``python -m zoo.data.dicom_cli``. Neither command imports TensorFlow.
"""

from __future__ import annotations

import argparse
import json
import struct
import zlib
from collections import Counter
from pathlib import Path

import numpy as np

from zoo.data.dicom import find_dicom_files, read_dicom, read_metadata
from zoo.data.windows import DEFAULT_CT_STACK, resolve_window, stack_windows
from zoo.errors import (
    DicomError,
    DicomValueError,
    InvalidArgumentError,
    MissingPixelDataError,
    NotDicomError,
    ZooError,
)
from zoo.outputs import staged


def write_png(path, image: np.ndarray) -> Path:
    """Write a (H, W) or (H, W, 1|3) uint8 array as a PNG (zlib only; no Pillow needed).

    Args:
        path: the PNG file to write.
        image: uint8 pixels, grey or RGB.

    Returns:
        ``Path(path)``.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise InvalidArgumentError(f"write_png takes uint8 pixels, got {image.dtype}.")
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        colour = 0
    elif image.ndim == 3 and image.shape[-1] == 3:
        colour = 2
    else:
        raise InvalidArgumentError(
            f"write_png takes (H, W), (H, W, 1) or (H, W, 3) pixels, got {image.shape}."
        )
    h, w = image.shape[:2]
    raw = b"".join(b"\x00" + image[r].tobytes() for r in range(h))  # filter type 0 per row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))
    path = Path(path)
    path.write_bytes(png)
    return path


def to_uint8(pixels: np.ndarray, meta, windows=None) -> np.ndarray:
    """(H, W, C) physical values -> (H, W, 1|3) uint8 for viewing.

    HU: the given windows (1 or 3, 3 giving an RGB stack), else the file's own window, else the
    soft-tissue preset. Colour: scaled by its value range. Other grey: 0.5-99.5 percentile stretch.
    Non-finite pixels are refused: a PNG must never hide an inf or NaN.

    Args:
        pixels: one frame (H, W, C) from ``zoo.read_dicom``.
        meta: its metadata (modality, units, the file's own window).
        windows: CT window names or ``(centre, width)`` pairs, 1 or 3.

    Returns:
        uint8 (H, W, 1) or (H, W, 3).
    """
    if not np.isfinite(pixels).all():
        raise DicomValueError(f"{getattr(meta, 'path', 'the image')}: pixels are not finite "
                              "(inf or NaN); "
                              "no PNG is written. Check the file's rescale tags (RescaleSlope "
                              "(0028,1053)).")
    if meta.units == "HU":
        wins = (
            [resolve_window(w) for w in windows]
            if windows
            else [meta.window or resolve_window(DEFAULT_CT_STACK[0])]
        )
        if len(wins) not in (1, 3):
            raise InvalidArgumentError(
                f"{len(wins)} windows: give one (grey PNG) or three (an RGB stack)."
            )
        y = stack_windows(pixels[..., 0], wins)
    elif pixels.shape[-1] == 3:
        y = np.clip(pixels / max((meta.value_range or (0, 255))[1], 1.0), 0, 1)
    else:
        lo, hi = np.percentile(pixels, (0.5, 99.5))
        y = np.clip((pixels - lo) / max(hi - lo, 1e-6), 0, 1)
    return np.round(y * 255).astype(np.uint8)


def summarize(path) -> dict:
    """A PHI-free summary of a file, or of a folder grouped by series.

    Args:
        path: a DICOM file or a folder.

    Returns:
        A JSON-ready dict (geometry, modality, transfer syntax, series counts; skipped files with
        the reason); never a patient identifier.
    """
    path = Path(path)
    if path.is_file():
        return read_metadata(path).to_dict()
    files = find_dicom_files(path)
    series: dict[str, dict] = {}
    skipped = Counter()
    not_read = []
    for f in files:
        try:
            meta = read_metadata(f)
        except DicomError as e:
            skipped[type(e).__name__] += 1
            not_read.append({"file": str(f), "error": type(e).__name__})
            continue
        s = series.setdefault(
            meta.series_key or "(none)",
            {"files": 0, "modality": meta.modality, "size": [meta.rows, meta.columns], "frames": 0},
        )
        s["files"] += 1
        s["frames"] += meta.frames
    return {"path": str(path), "files": len(files), "series": series, "not_read": dict(skipped),
            "not_read_files": not_read}


def _info(args) -> int:
    print(json.dumps(summarize(args.path), indent=2, default=list))
    return 0


def _convert(args) -> int:
    """Convert into a staged copy of OUT, swapped in when done (zoo.outputs: never user files)."""
    out = Path(args.out)
    with staged([out], writer="zoo dicom convert", overwrite=args.overwrite) as (stage,):
        stage.mkdir()
        status = _convert_into(stage, out, args)
    return status


def _convert_into(out: Path, shown: Path, args) -> int:
    src = Path(args.path)
    if args.volume:
        from zoo.data.series import load_series

        vol = load_series(src, on_problem="warn", target_spacing=args.spacing)
        if not np.isfinite(vol.array).all():
            raise DicomValueError(f"{src}: the volume holds non-finite values; nothing is written.")
        np.save(out / "volume.npy", vol.array)
        (out / "volume.json").write_text(
            json.dumps(
                {
                    "spacing_zyx_mm": vol.spacing,
                    "origin": vol.origin,
                    "direction": vol.direction.tolist(),
                    "problems": vol.report.problems,
                },
                indent=2,
            )
        )
        print(
            f"{shown / 'volume.npy'}: {vol.array.shape} float32, spacing "
            f"{tuple(round(s, 4) for s in vol.spacing)} mm"
        )
        return 0
    files = find_dicom_files(src) if src.is_dir() else [src]
    written, failed, broken = 0, [], 0
    for f in files:
        try:
            image = read_dicom(f)
            pngs = ([] if args.format == "npy" else
                    [to_uint8(image.pixels[k], image.meta, args.window)
                     for k in range(image.meta.frames)])
        except ZooError as e:
            if not src.is_dir():
                raise
            failed.append(f"{f}: {type(e).__name__}")
            broken += not isinstance(e, NotDicomError | MissingPixelDataError)
            continue
        stem = f.stem if not src.is_dir() else "_".join(f.relative_to(src).with_suffix("").parts)
        if args.format == "npy":
            np.save(out / f"{stem}.npy", image.pixels)
            written += 1
            continue
        for k, png in enumerate(pngs):
            name = f"{stem}.png" if image.meta.frames == 1 else f"{stem}_f{k:03d}.png"
            write_png(out / name, png)
            written += 1
    print(
        f"wrote {written} file(s) to {shown}"
        + (f"; {len(failed)} not converted:\n  " + "\n  ".join(failed) if failed else "")
    )
    # exit 1 when an image could not be converted (files that hold no image are only listed)
    return 1 if broken or (files and not written) else 0


def _spacing_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not np.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"--spacing {text!r}: give a positive, finite spacing "
                                         "in mm (e.g. 1.0)")
    return value


def _window_arg(text: str):
    if "," in text:
        try:
            c, w = (float(v) for v in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"--window {text!r}: use a preset name or CENTER,WIDTH"
            ) from None
        return (c, w)
    return text


def add_dicom_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``dicom info`` and ``dicom convert`` to ``zoo``'s subparsers.

    Args:
        subparsers: the ``zoo`` parser's sub-parsers action.

    Returns:
        The ``dicom`` parser.
    """
    p = subparsers.add_parser(
        "dicom", help="DICOM files: PHI-free summary, conversion to PNG / .npy"
    )
    sub = p.add_subparsers(dest="dicom_command", required=True)
    q = sub.add_parser("info", help="summary of a file or folder (no names, IDs or dates)")
    q.add_argument("path")
    q.set_defaults(func=_info)
    q = sub.add_parser(
        "convert", help="windowed PNG per frame, float32 .npy in physical units, or a series volume"
    )
    q.add_argument("path")
    q.add_argument("out", help="output folder")
    q.add_argument("--format", choices=("png", "npy"), default="png")
    q.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a previous `zoo dicom convert` output at OUT (never files the zoo did not "
        "write)",
    )
    q.add_argument(
        "--window",
        action="append",
        type=_window_arg,
        help="preset (brain, lung, bone, ...) or CENTER,WIDTH in HU; give 3 for an RGB stack",
    )
    q.add_argument(
        "--volume", action="store_true", help="stack the folder as one series into volume.npy"
    )
    q.add_argument("--spacing", type=_spacing_arg, default=None,
                   help="with --volume: resample to this isotropic spacing (mm)")
    q.set_defaults(func=_convert)
    return p
