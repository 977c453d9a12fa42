"""``zoo finetune``: the fine-tuning recipe from the command line."""

from __future__ import annotations

import json


def _data(args):
    from zoo.errors import InvalidArgumentError

    if bool(args.demo) == bool(args.data):
        raise InvalidArgumentError("zoo finetune: give --data FOLDER (images + labels.csv) or --demo, not both or neither.")
    if args.demo:
        from zoo.data.synthetic import TARGET_TASK, make_phantoms

        train = make_phantoms(args.demo_size, seed=args.seed + 1, **TARGET_TASK)
        val = make_phantoms(max(8, args.demo_size // 3), seed=args.seed + 2, **TARGET_TASK)
        return (train.images, train.labels), (val.images, val.labels)
    from zoo.train.folder_data import load_labelled_folder

    x, y, _ = load_labelled_folder(args.data)
    val = None
    if args.val_data:
        vx, vy, _ = load_labelled_folder(args.val_data)
        val = (vx, vy)
    return (x, y), val


def _run(args) -> int:
    from zoo.train.finetune import deterministic, finetune

    train, val = _data(args)
    deterministic(args.seed)
    result = finetune(args.model, train, val, pretrained=args.pretrained, epochs=tuple(args.epochs),
                      learning_rate=tuple(args.lr), weight_decay=args.weight_decay, batch_size=args.batch_size,
                      unfreeze_from=args.unfreeze_from, class_weight=args.class_weight,
                      augment=False if args.no_augment else ("rot90" if args.rot90 else True), cache_features=not args.no_cache, patience=args.patience,
                      seed=args.seed, out_dir=args.out, overwrite=args.overwrite, strategy=args.strategy, precision=args.precision,
                      verbose=0 if args.quiet else 1)
    summary = result.to_dict()
    summary.pop("history")
    print(json.dumps(summary, indent=2))
    return 0


def add_finetune_parser(sub) -> None:
    """Register ``zoo finetune`` on the CLI's subparsers."""
    p = sub.add_parser("finetune", help="two-stage fine-tuning (frozen backbone, then unfrozen) with a run record")
    p.add_argument("model", nargs="?", default="simple_cnn.phantom", help="arch or arch.tag (default simple_cnn.phantom)")
    p.add_argument("--pretrained", default=None, help="weights tag or file when MODEL has no tag")
    p.add_argument("--data", help="folder: .npy/.png images, labels.csv (path,label[,patient])")
    p.add_argument("--val-data", help="validation folder (default: hold out 20%% of --data)")
    p.add_argument("--demo", action="store_true", help="use the embedded synthetic phantom task")
    p.add_argument("--demo-size", type=int, default=120, help="training images with --demo")
    p.add_argument("--epochs", type=int, nargs=2, default=[5, 5], metavar=("STAGE1", "STAGE2"))
    p.add_argument("--lr", type=float, nargs=2, default=[1e-3, 1e-4], metavar=("STAGE1", "STAGE2"))
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--unfreeze-from", default=None, help="layer name or block prefix where stage 2 unfreezes")
    p.add_argument("--class-weight", choices=["balanced"], default=None)
    p.add_argument("--patience", type=int, default=3)
    p.add_argument("--no-augment", action="store_true", help="train on the images as given (default: whole-pixel "
                   "shifts and a small intensity jitter, both stages)")
    p.add_argument("--rot90", action="store_true", help="also augment by 90-degree rotations and flips "
                   "(only for images without a fixed orientation or laterality)")
    p.add_argument("--no-cache", action="store_true", help="push images through the frozen backbone in stage 1")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="finetune_out", help="folder for best.keras, run.json, curves.png and logs/")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier run at --out (never a folder with files the zoo did not write)")
    p.add_argument("--strategy", default="auto", choices=["auto", "cpu", "mirrored", "multiworker", "tpu"])
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_run)
