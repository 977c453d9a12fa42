"""``zoo domain adapt ...`` and ``zoo domain harmonise ...``: the CLI face of zoo.domain.

``adapt`` trains a zoo model on labelled source images and unlabelled target images with a
domain discriminator behind a gradient reversal (DANN) and writes the task model as ``.keras``;
``--synthetic N`` uses the scanner-shift phantoms instead of files. ``harmonise`` writes
histogram-matched or z-scored images. Every input is checked before any training.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_MODEL = {"classification": "simple_cnn", "segmentation": "unet"}


def _npz(path: str, what: str, need: tuple[str, ...]) -> dict:
    """The arrays of an .npz file, with the keys ``need`` present."""
    import numpy as np

    from zoo.errors import DataError

    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as e:
        raise DataError(f"--{what} {path}: cannot read it as an .npz file ({e}).") from None
    missing = [k for k in need if k not in arrays]
    if missing:
        raise DataError(f"--{what} {path}: the .npz holds {sorted(arrays)} but needs "
                        f"{list(need)}; save it with np.savez(path, {', '.join(need)}=...).")
    return arrays


def _data(args) -> tuple:
    """(source images, source labels, target images, target test (images, labels) or None)."""
    from zoo.errors import InvalidArgumentError

    key = "labels" if args.task == "classification" else "masks"
    if args.synthetic:
        from zoo.data.scanner_shift import make_scanner_shift

        train = make_scanner_shift(args.synthetic, args.size, seed=args.seed)
        test = make_scanner_shift(max(args.synthetic // 2, 1), args.size, seed=args.seed + 1)
        label = (lambda p: p.labels) if key == "labels" else (lambda p: p.masks.astype("int32"))
        return (train.source.images, label(train.source), train.target.images,
                (test.target.images, label(test.target)))
    if not (args.source and args.target):
        raise InvalidArgumentError(
            "give --source S.npz (images + labels/masks) and --target T.npz (images), or "
            "--synthetic N for the scanner-shift phantoms.")
    source = _npz(args.source, "source", ("images", key))
    target = _npz(args.target, "target", ("images",))
    test = (target["images"], target[key]) if key in target else None
    return source["images"], source[key], target["images"], test


def _default_layers(model, arch: str) -> list[str]:
    """The feature maps at the model's two coarsest registered strides."""
    from zoo.models.registry import get_entry

    by_stride = get_entry(arch).feature_layers(model)
    return [by_stride[s] for s in sorted(by_stride)[-2:]]


def _score(task: str, model, images, labels) -> str:
    import numpy as np

    from zoo.metrics.segmentation import dice

    pred = np.concatenate([np.asarray(model(images[i:i + 64], training=False)).argmax(-1)
                           for i in range(0, len(images), 64)])
    if task == "classification":
        return f"target accuracy {np.mean(pred == labels):.3f}"
    return f"target Dice {float(dice(labels > 0, pred > 0)):.3f}"


def _adapt(args) -> int:
    import numpy as np

    from zoo import outputs
    from zoo.domain.adversarial import check_domains, fit_adversarial
    from zoo.domain.discriminator import task_model
    from zoo.models.factory import load

    xs, ys, xt, test = _data(args)
    check_domains(xs, xt)
    outputs.check_target(args.out, overwrite=args.overwrite)
    arch = args.model or DEFAULT_MODEL[args.task]
    classes = args.num_classes or int(np.max(ys)) + 1
    model = load(arch, input_shape=tuple(np.shape(xs)[1:]), num_classes=max(classes, 2))
    layers = args.layers.split(",") if args.layers else _default_layers(model, arch)
    adapted, history = fit_adversarial(
        model, layers, xs, ys, xt, task=args.task, epochs=args.epochs, batch_size=args.batch_size,
        learning_rate=args.lr, domain_weight=args.domain_weight, seed=args.seed)
    last = history[-1]
    print(f"{arch} adapted at {layers}: loss {last['loss']:.4f}, domain accuracy "
          f"{last['domain_accuracy']:.3f} after {len(history)} epochs")
    final = task_model(adapted)
    if test is not None:
        print(_score(args.task, final, *test))
    with outputs.staged([args.out], writer="zoo domain adapt", overwrite=args.overwrite) as paths:
        final.save(paths[0])
    print(f"wrote {args.out}")
    return 0


def _harmonise(args) -> int:
    import numpy as np

    from zoo import outputs
    from zoo.domain.harmonise import harmonise

    images = _npz(args.images, "images", ("images",))
    reference = _npz(args.reference, "reference", ("images",))["images"] if args.reference else None
    out = harmonise(images["images"], args.method, reference=reference,
                    scale=(args.mean, args.std))
    with outputs.staged([args.out], writer="zoo domain harmonise",
                        overwrite=args.overwrite) as paths:
        with open(paths[0], "wb") as f:
            np.savez(f, **{**images, "images": out})
    print(f"wrote {args.out} ({args.method}, {len(out)} images)")
    return 0


def _add_adapt(sub) -> None:
    p = sub.add_parser("adapt", help="adversarial domain adaptation (DANN); writes a .keras model")
    p.add_argument("--task", choices=sorted(DEFAULT_MODEL), default="classification")
    p.add_argument("--source", help=".npz with images (N,H,W,C) and labels (N,) or masks (N,H,W)")
    p.add_argument("--target", help=".npz with the new scanner's images (labels/masks: scored)")
    p.add_argument("--synthetic", type=int, metavar="N",
                   help="N scanner-shift phantoms per domain instead of files")
    p.add_argument("--size", type=int, default=32, help="phantom size with --synthetic")
    p.add_argument("--model", help="architecture (default simple_cnn / unet)")
    p.add_argument("--num-classes", type=int, help="default: the largest label + 1")
    p.add_argument("--layers", help="comma-separated layer names the discriminator sees "
                   "(default: the two coarsest feature maps)")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--domain-weight", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("adapted.keras"))
    p.add_argument("--overwrite", action="store_true", help="replace a file this command wrote")
    p.set_defaults(func=_adapt)


def _add_harmonise(sub) -> None:
    p = sub.add_parser("harmonise", help="histogram matching or z-scores of an .npz of images")
    p.add_argument("method", choices=["histogram", "zscore"])
    p.add_argument("--images", required=True, help=".npz with images (N,H,W,C)")
    p.add_argument("--reference", help=".npz with the reference scanner's images (histogram)")
    p.add_argument("--mean", type=float, default=0.0, help="z-scores mapped to mean + std * z")
    p.add_argument("--std", type=float, default=1.0)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_harmonise)


def add_domain_parser(subparsers) -> None:
    """Register ``zoo domain adapt`` and ``zoo domain harmonise`` on the CLI's sub-parsers.

    Args:
        subparsers: the ``zoo`` parser's sub-parsers action.
    """
    p = subparsers.add_parser("domain", help="domain adaptation: DANN, intensity harmonisation")
    sub = p.add_subparsers(dest="domain_command", required=True)
    _add_adapt(sub)
    _add_harmonise(sub)
