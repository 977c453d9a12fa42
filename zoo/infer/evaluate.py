"""``zoo evaluate`` for segmentation models: whole-volume inference per case, then Dice, IoU,
HD95 and ASD per case and class (``zoo.metrics.segmentation``), with bootstrap CIs.

Data layout::

    DATA/images/<name>.npy | .nii.gz | .nii     one image or volume per case, in the model's
                                                input range ((D, H, W[, C]) or (H, W[, C]))
    DATA/masks/<name>.<same or other suffix>    its integer label map (spatial shape only)

Cases pair by name (the file name without its suffix). ``.npy`` arrays carry no geometry: give
their voxel size with ``spacing`` (``--spacing Z Y X``, array order; default 1 mm). NIfTI images
are read by ``zoo.data.nifti.read_nifti`` and bring their own spacing; a NIfTI mask is read onto
its image's grid by ``zoo.data.masks.read_mask``. Listing and reading the cases is
``zoo.data.seg_folder``'s (``zoo finetune --task segmentation`` reads the same layout).
Classifiers on labelled folders go to ``zoo.train.cli``'s path, unchanged.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from zoo.data.seg_folder import (  # noqa: F401  (SUFFIXES: kept importable from here)
    SUFFIXES,
    is_segmentation_folder,
    read_case,
    segmentation_cases,
)
from zoo.errors import DataError
from zoo.infer.segment import segment
from zoo.metrics.segmentation import CONVENTIONS, case_metrics, summarize_cases


def is_segmenter(model) -> bool:
    """Whether ``model`` maps an image to outputs of its own spatial size (per-voxel scores).

    Args:
        model: a Keras model.

    Returns:
        True when the first output has the input's rank and spatial size (unknown sizes match).
    """
    inp, out = tuple(model.inputs[0].shape), tuple(model.outputs[0].shape)
    return len(inp) == len(out) >= 4 and all(
        a is None or b is None or a == b for a, b in zip(inp[1:-1], out[1:-1], strict=True)
    )


def _spacing_of(name, image_spacing, mask_spacing, spacing, shape) -> tuple[float, ...]:
    """The case's voxel size: the files' own (which must agree), else ``spacing``, else 1 mm."""
    if image_spacing and mask_spacing and not np.allclose(image_spacing, mask_spacing, rtol=1e-4):
        raise DataError(
            f"case {name!r}: image spacing {image_spacing} and mask spacing {mask_spacing} "
            "differ; resample the mask onto the image grid."
        )
    own = mask_spacing or image_spacing
    if own is not None:
        return tuple(own)[: len(shape)]
    if spacing is None:
        return (1.0,) * len(shape)
    return tuple(float(s) for s in spacing)


def _case(model, name, image_path, mask_path, options: dict):
    """(mask, predicted labels, spacing) of one case."""
    image, image_spacing, volume = read_case(image_path)
    mask, mask_spacing, _ = read_case(mask_path, reference=volume)
    dims = len(model.inputs[0].shape) - 2
    if mask.ndim == dims + 1 and mask.shape[-1] == 1:
        mask = mask[..., 0]  # a label map saved with a channel axis
    if image.shape[:dims] != mask.shape or mask.ndim != dims:
        raise DataError(
            f"case {name!r}: image of shape {image.shape} and mask of shape {mask.shape}; the "
            f"mask must have the image's {dims} spatial axes (no channel axis)."
        )
    spacing = _spacing_of(name, image_spacing, mask_spacing, options["spacing"], mask.shape)
    seg = segment(model, image, options["roi"], options["overlap"],
                  tta_flips=options["tta_flips"], largest_component=options["largest_component"],
                  threshold=options["threshold"], batch=options["batch"])
    return mask, seg.labels, spacing


def evaluate_segmentation(
    model,
    data,
    *,
    roi=None,
    overlap: float = 0.5,
    tta_flips=False,
    largest_component=False,
    threshold: float | None = None,
    spacing=None,
    ci: float = 0.95,
    n_boot: int = 1000,
    seed: int = 0,
    batch: int = 8,
) -> dict:
    """Segment every case of ``data`` with ``model`` and compare with its masks.

    Args:
        model: a Keras segmentation model (per-voxel class probabilities).
        data: a folder with ``images/`` and ``masks/`` (module docstring).
        roi: sliding-window size (default the model's input size).
        overlap: window overlap, in [0, 1).
        tta_flips: test-time flips (``zoo.infer.segment.segment``).
        largest_component: keep each foreground class's largest component.
        threshold: foreground threshold of a one-channel model (default 0.5).
        spacing: voxel size in mm of ``.npy`` cases, array order (default 1 mm).
        ci: confidence level of the bootstrap intervals over cases.
        n_boot: bootstrap resamples.
        seed: the bootstrap seed.
        batch: windows per model call.

    Returns:
        ``{"n_cases", "num_classes", "cases": rows (case, class, dice, iou, hd95_mm, asd_mm,
        flag, spacing), "classes": per-class means with CIs, "conventions", "options"}``.

    Raises:
        DataError: a bad folder, a model that is not a segmenter, or a case whose image and mask
            do not match.
    """
    if not is_segmenter(model):
        raise DataError(
            f"zoo evaluate: the model maps {tuple(model.inputs[0].shape)[1:]} inputs to "
            f"{tuple(model.outputs[0].shape)[1:]}; a folder with images/ and masks/ needs a "
            "segmentation model (per-voxel outputs). For a classifier give a folder with "
            "labels.csv."
        )
    channels = int(model.outputs[0].shape[-1])
    num_classes = 2 if channels == 1 else channels
    options = {"roi": roi, "overlap": overlap, "tta_flips": tta_flips, "batch": batch,
               "largest_component": largest_component, "spacing": spacing,
               "threshold": threshold if channels == 1 else None}
    rows = []
    for name, image_path, mask_path in segmentation_cases(data):
        mask, labels, case_spacing = _case(model, name, image_path, mask_path, options)
        rows += [{"case": name, **r, "spacing": " ".join(f"{s:g}" for s in case_spacing)}
                 for r in case_metrics(mask, labels, num_classes, spacing=case_spacing)]
    return {"n_cases": len({r["case"] for r in rows}), "num_classes": num_classes, "cases": rows,
            "classes": summarize_cases(rows, ci=ci, n_boot=n_boot, seed=seed),
            "conventions": CONVENTIONS,
            "options": {k: v for k, v in options.items() if k != "batch"}}


def _json_safe(value):
    """NaN -> None (strict JSON), recursively."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_segmentation_report(report: dict, out, *, overwrite: bool = False) -> Path:
    """``metrics.csv`` (one row per case and class) and ``summary.json`` in the folder ``out``.

    Written through ``zoo.outputs.staged``: all or nothing, never over a folder the zoo did
    not write, and over an earlier output only with ``overwrite``.

    Args:
        report: ``evaluate_segmentation``'s result.
        out: the output folder.
        overwrite: replace an earlier zoo output at ``out``.

    Returns:
        The output folder.

    Raises:
        OutputError: ``out`` exists and may not be replaced.
    """
    from zoo.outputs import staged

    with staged([out], writer="zoo evaluate", overwrite=overwrite) as (folder,):
        folder.mkdir()
        rows = report["cases"]
        with open(folder / "metrics.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        summary = {k: v for k, v in report.items() if k != "cases"}
        (folder / "summary.json").write_text(json.dumps(_json_safe(summary), indent=2) + "\n")
    return Path(out)


def _evaluate(args) -> int:
    """``zoo evaluate``: a segmentation folder goes here, anything else to the classifier path."""
    if not is_segmentation_folder(args.data):
        from zoo.train.cli import _evaluate as evaluate_classifier

        return evaluate_classifier(args)
    from zoo.metrics.segmentation import format_segmentation_report
    from zoo.outputs import check_target
    from zoo.saving import load_model

    if args.out:
        check_target(args.out, overwrite=args.overwrite)  # refuse before the inference, not after
    model_path = Path(args.model)
    if model_path.is_dir() and (model_path / "best.keras").is_file():
        model_path = model_path / "best.keras"
    roi = roi_argument(args.roi)
    report = evaluate_segmentation(
        load_model(model_path), args.data, roi=roi, overlap=args.overlap,
        tta_flips=args.tta, largest_component=args.largest_component,
        threshold=args.threshold, spacing=args.spacing, n_boot=args.bootstrap, seed=args.seed,
        batch=args.batch_size)
    report.update(model=str(model_path), data=str(args.data))
    print(format_segmentation_report(report))
    if args.out:
        write_segmentation_report(report, args.out, overwrite=args.overwrite)
    return 0


def add_window_options(group, roi_default: str = "the model's input size") -> None:
    """``--roi``, ``--overlap``, ``--tta``, ``--largest-component``: how a segmentation model is
    applied to a whole volume (``zoo.infer.segment.segment``); ``zoo evaluate`` and
    ``zoo predict`` share them.

    Args:
        group: the parser or argument group to add them to.
        roi_default: what ``--roi`` defaults to, for the help text.
    """
    group.add_argument("--roi", type=int, nargs="+", default=None, metavar="N",
                       help=f"sliding-window size per spatial axis, or one for all (default "
                       f"{roi_default})")
    group.add_argument("--overlap", type=float, default=0.5, help="window overlap in [0, 1)")
    group.add_argument("--tta", action="store_true",
                       help="average the predictions of all flips over the spatial axes")
    group.add_argument("--largest-component", action="store_true",
                       help="keep only the largest connected component of each foreground class")


def roi_argument(roi):
    """``--roi`` as ``segment`` takes it: None, one int for every axis, or one per axis.

    Args:
        roi: the parsed ``--roi`` list (or None).

    Returns:
        None, an int, or the list.
    """
    return roi[0] if roi and len(roi) == 1 else roi


def add_evaluate_parser(sub):
    """Register ``zoo evaluate``: the classifier options plus the segmentation ones.

    Args:
        sub: the ``zoo`` parser's sub-parsers action.

    Returns:
        The ``evaluate`` parser.
    """
    from zoo.train.cli import add_evaluate_parser as add_classifier_options

    p = add_classifier_options(sub)
    g = p.add_argument_group("segmentation (DATA with images/ and masks/)")
    add_window_options(g)
    g.add_argument("--spacing", type=float, nargs="+", default=None, metavar="MM",
                   help="voxel size of .npy cases in mm, array order (Z Y X); NIfTI has its own")
    p.set_defaults(func=_evaluate)
    return p
