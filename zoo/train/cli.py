"""``zoo finetune``: the fine-tuning recipe from the command line."""

from __future__ import annotations

import json

import numpy as np


def _data(args):
    from zoo.errors import InvalidArgumentError

    if bool(args.demo) == bool(args.data):
        raise InvalidArgumentError(
            "zoo finetune: give --data FOLDER (images + labels.csv) or --demo, not both or neither."
        )
    if args.task == "segmentation":
        return _segmentation_data(args)
    if args.demo:
        from zoo.data.synthetic import TARGET_TASK, make_phantoms

        train = make_phantoms(args.demo_size, seed=args.seed + 1, **TARGET_TASK)
        val = make_phantoms(max(8, args.demo_size // 3), seed=args.seed + 2, **TARGET_TASK)
        return (train.images, train.labels), (val.images, val.labels)
    from zoo.train.folder_data import load_labelled_folder

    x, y, names = load_labelled_folder(args.data)
    val = None
    if args.val_data:
        vx, vy, _ = load_labelled_folder(args.val_data, classes=names)
        val = (vx, vy)
    return (x, y), val


def _segmentation_data(args):
    """(images, masks) of --data (and --val-data): folders of images/ + masks/, the layout
    ``zoo evaluate`` scores a segmenter on (zoo.data.seg_folder)."""
    from zoo.data.seg_folder import load_segmentation_folder
    from zoo.errors import InvalidArgumentError

    if args.demo:
        raise InvalidArgumentError(
            "zoo finetune --task segmentation: --demo has phantoms without masks; give --data "
            "FOLDER with images/ and masks/ (`zoo demo segmentation` writes one under "
            "data/nifti/)."
        )
    if args.groups:
        raise InvalidArgumentError(
            "zoo finetune --task segmentation --groups: a segmentation folder has no labels.csv "
            "patient column; split the cases by patient into --data and --val-data instead."
        )
    x, y, _ = load_segmentation_folder(args.data)
    val = None
    if args.val_data:
        vx, vy, _ = load_segmentation_folder(args.val_data)
        val = (vx, vy)
    return (x, y), val


def _groups(args):
    """The labels CSV's patient column, for a patient-wise validation split (--groups)."""
    from pathlib import Path

    from zoo.data.labels import read_labels
    from zoo.errors import InvalidArgumentError

    if not args.groups:
        return None
    if args.demo:
        raise InvalidArgumentError(
            "zoo finetune --groups: the demo phantoms have no patients; use it with --data."
        )
    labels = read_labels(Path(args.data) / "labels.csv")
    if labels.patients is None:
        raise InvalidArgumentError(
            f"zoo finetune --groups: {Path(args.data) / 'labels.csv'} has no patient column; add "
            "one (path,label,patient) or drop --groups."
        )
    return list(labels.patients)


def _options(args) -> dict:
    """The zoo.finetune keywords that in-memory and streamed (DICOM) data share."""
    return dict(
        pretrained=args.pretrained,
        epochs=tuple(args.epochs),
        task=args.task,
        loss=args.loss,
        resume=args.resume,
        checkpoint_every=args.checkpoint_every,
        learning_rate=tuple(args.lr),
        weight_decay=args.weight_decay,
        batch_size=args.batch_size,
        unfreeze_from=args.unfreeze_from,
        class_weight=args.class_weight,
        cache_features=not args.no_cache,
        patience=args.patience,
        seed=args.seed,
        out_dir=args.out,
        overwrite=args.overwrite,
        strategy=args.strategy,
        precision=args.precision,
        verbose=0 if args.quiet else 1,
    )


def _augment(args):
    return False if args.no_augment else ("rot90" if args.rot90 else True)


def _dicom_run(args) -> dict:
    """``--data`` listing DICOM files or series: streamed (zoo.train.dicom_folder)."""
    from zoo.data import decode_pool

    decode_pool.prestart()  # warm by the first decode: it starts while TensorFlow imports
    from zoo.train.dicom_folder import finetune_dicom_folder
    from zoo.train.finetune import deterministic

    _groups(args)  # --groups without a patient column is refused; with one, the split is by it
    deterministic(args.seed)
    result, source = finetune_dicom_folder(
        args.model, args.data, val_folder=args.val_data, windows=_windows(args.window),
        augment=_augment(args), cache_dir=args.cache_dir, skip_unreadable=args.skip_unreadable,
        **_options(args),
    )
    summary = result.to_dict()
    summary["data"] = {k: source[k] for k in ("kind", "split", "files", "samples", "patients",
                                              "skipped")}
    return summary


def _windows(values):
    """--window NAME or CENTER,WIDTH (one, or one per channel) as the pipeline takes them."""
    if not values:
        return "auto"
    from zoo.errors import InvalidArgumentError

    out = []
    for value in values:
        if "," not in value:
            out.append(value)
            continue
        try:
            out.append(tuple(float(v) for v in value.split(",")))
        except ValueError:
            raise InvalidArgumentError(
                f"--window {value}: give a preset name or CENTER,WIDTH in HU, e.g. 40,400."
            ) from None
    return out


def _memory_run(args) -> dict:
    from zoo.errors import InvalidArgumentError
    from zoo.train.finetune import deterministic, finetune

    given = [flag for flag, on in (("--window", args.window), ("--cache-dir", args.cache_dir),
                                   ("--skip-unreadable", args.skip_unreadable)) if on]
    if given:
        raise InvalidArgumentError(
            f"zoo finetune {given[0]}: for --data folders of DICOM files or series only; drop it."
        )
    train, val = _data(args)
    groups = _groups(args)
    deterministic(args.seed)
    result = finetune(args.model, train, val, groups=groups, augment=_augment(args),
                      **_options(args))
    return result.to_dict()


def _run(args) -> int:
    from zoo.train.dicom_folder import is_dicom_folder

    dicom = (bool(args.data) and not args.demo and args.task != "segmentation"
             and is_dicom_folder(args.data))
    summary = _dicom_run(args) if dicom else _memory_run(args)
    summary.pop("history")
    print(json.dumps(summary, indent=2))
    return 0


def add_finetune_parser(sub) -> None:
    """Register ``zoo finetune`` on the CLI's subparsers.

    Args:
        sub: the ``zoo`` parser's sub-parsers action.
    """
    p = sub.add_parser(
        "finetune", help="two-stage fine-tuning (frozen backbone, then unfrozen) with a run record"
    )
    p.add_argument(
        "model",
        nargs="?",
        default="simple_cnn.phantom",
        help="arch or arch.tag (default simple_cnn.phantom)",
    )
    p.add_argument("--pretrained", default=None, help="weights tag or file when MODEL has no tag")
    p.add_argument(
        "--data",
        help="folder with labels.csv (path,label[,patient]) listing .npy/.png images (loaded) or "
        "DICOM files / series folders (streamed, split by patient); with --task segmentation, "
        "images/ and masks/ (.npy, .nii.gz) of the same names",
    )
    p.add_argument("--val-data", help="validation folder (default: hold out 20%% of --data)")
    p.add_argument("--demo", action="store_true", help="use the embedded synthetic phantom task")
    p.add_argument("--demo-size", type=int, default=120, help="training images with --demo")
    p.add_argument("--epochs", type=int, nargs=2, default=[5, 5], metavar=("STAGE1", "STAGE2"))
    p.add_argument("--lr", type=float, nargs=2, default=[1e-3, 1e-4], metavar=("STAGE1", "STAGE2"))
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument(
        "--unfreeze-from", default=None, help="layer name or block prefix where stage 2 unfreezes"
    )
    p.add_argument("--class-weight", choices=["balanced"], default=None)
    p.add_argument("--patience", type=int, default=3)
    p.add_argument(
        "--no-augment",
        action="store_true",
        help="train on the images as given (default: whole-pixel shifts and a small intensity "
        "jitter, both stages)",
    )
    p.add_argument(
        "--rot90",
        action="store_true",
        help="also augment by 90-degree rotations and flips (only for images without a fixed "
        "orientation or laterality)",
    )
    p.add_argument(
        "--no-cache", action="store_true", help="push images through the frozen backbone in stage 1"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--out",
        default="finetune_out",
        help="folder for best.keras, run.json, curves.png and logs/",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier run at --out (never a folder with files the zoo did not write)",
    )
    p.add_argument(
        "--strategy", default="auto", choices=["auto", "cpu", "mirrored", "multiworker", "tpu"]
    )
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument(
        "--task",
        default="classification",
        choices=["classification", "multilabel", "regression", "segmentation"],
    )
    p.add_argument(
        "--loss",
        default=None,
        help="segmentation loss: dice, ce, dice_ce (the default), focal, dice_focal, tversky, "
        "focal_tversky (zoo.train.seg_losses)",
    )
    p.add_argument(
        "--groups",
        action="store_true",
        help="hold out validation by patient (labels.csv's patient column): no patient in both "
        "sets",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the killed run in --out from its newest checkpoint",
    )
    p.add_argument("--checkpoint-every", type=int, default=None, metavar="STEPS",
                   help="also checkpoint every STEPS training steps (default: at each epoch's end)")
    p.add_argument(
        "--window",
        nargs="+",
        metavar="NAME",
        help="DICOM data: CT window preset(s) (zoo.data.windows.PRESETS) or CENTER,WIDTH, one "
        "or one per model channel (default: soft tissue; soft tissue, lung, bone for 3)",
    )
    p.add_argument(
        "--cache-dir", default=None, help="DICOM data: decode cache (default ZOO_HOME/dicom_cache)"
    )
    p.add_argument(
        "--skip-unreadable",
        action="store_true",
        help="DICOM data: leave unreadable files out and list them in the summary and run.json "
        "(default: stop, naming the file)",
    )
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_run)


def _evaluate(args) -> int:
    """``zoo evaluate``: clinical metrics of a saved classifier on a labelled folder."""
    from pathlib import Path

    from zoo.data.labels import read_labels
    from zoo.errors import DataError
    from zoo.figures import reliability_diagram
    from zoo.metrics import classification_report, format_report
    from zoo.outputs import claim_dir, finish_dir
    from zoo.saving import load_model
    from zoo.train.folder_data import load_labelled_folder

    model_path = Path(args.model)
    if model_path.is_dir() and (model_path / "best.keras").is_file():
        model_path = model_path / "best.keras"
    model = load_model(model_path)
    x, y, names = load_labelled_folder(args.data)
    patients = read_labels(Path(args.data) / "labels.csv").patients
    groups = None if args.per_image or patients is None else list(patients)
    probs = np.concatenate([np.asarray(model(x[i:i + args.batch_size], training=False), np.float64)
                            for i in range(0, len(x), args.batch_size)])
    if probs.ndim != 2 or probs.shape[1] < 2 and not (probs.shape[1] == 1 and y.max() <= 1):
        raise DataError(
            f"{model_path}: outputs of shape {probs.shape[1:]}; zoo evaluate takes a classifier's "
            "probabilities (N, classes)."
        )
    report = classification_report(y, probs[:, 0] if probs.shape[1] == 1 else probs, groups,
                                   threshold=args.threshold, n_boot=args.bootstrap, seed=args.seed)
    report["classes"] = names
    text = format_report(report)
    print(text)
    if args.out:
        out = claim_dir(args.out, writer="zoo evaluate", overwrite=args.overwrite,
                        names=("metrics.json", "summary.txt", "reliability.png"))
        (out / "metrics.json").write_text(json.dumps(report, indent=2))
        (out / "summary.txt").write_text(text + "\n")
        if "calibration" in report:
            reliability_diagram(report["calibration"], out / "reliability.png")
        finish_dir(out, writer="zoo evaluate")
    return 0


def add_evaluate_parser(sub):
    """Register ``zoo evaluate MODEL DATA`` (classifiers) on the CLI's subparsers.

    ``zoo.infer.evaluate`` adds the segmentation options and dispatch on top of it.

    Args:
        sub: the ``zoo`` parser's sub-parsers action.

    Returns:
        The ``evaluate`` parser.
    """
    p = sub.add_parser(
        "evaluate",
        help="clinical metrics (AUC, sensitivity/specificity, balanced accuracy, calibration) "
        "with bootstrap CIs, per patient when labels.csv has a patient column; for a segmenter "
        "Dice, IoU, HD95 and ASD per case and class",
    )
    p.add_argument("model", help="a saved model (.keras) or a zoo finetune run folder")
    p.add_argument(
        "data",
        help="folder: .npy/.png images, labels.csv (path,label[,patient]); for a segmenter "
        "images/ and masks/ with the same file names",
    )
    p.add_argument(
        "--threshold", type=float, default=0.5, help="operating point: positive when score >= it"
    )
    p.add_argument(
        "--bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% CIs"
    )
    p.add_argument(
        "--per-image", action="store_true", help="ignore the patient column: one row per image"
    )
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--out",
        default=None,
        help="folder for metrics.json, summary.txt and reliability.png (a segmenter: "
        "metrics.csv and summary.json)",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace an earlier zoo evaluate output at --out"
    )
    p.set_defaults(func=_evaluate)
    return p
