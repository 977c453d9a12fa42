"""``zoo semi METHOD ...`` (zoo.semi.fit) and ``zoo semi sdnet ...`` (zoo.semi.fit_sdnet)."""

from __future__ import annotations

import ast


def _option(text: str):
    """``key=value`` with a Python literal value (numbers, True) or a bare string."""
    from zoo.errors import InvalidArgumentError

    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise InvalidArgumentError(f"--option {text!r}: write key=value, e.g. --option tau=0.9.")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def _npz(path: str, what: str, need_labels: bool, label_key: str = "labels"):
    import numpy as np

    from zoo.errors import DataError

    try:
        loaded = np.load(path)
    except (OSError, ValueError) as e:
        raise DataError(f"{what} {path}: cannot read it as .npy/.npz ({e}).") from None
    if isinstance(loaded, np.ndarray):
        if need_labels:
            raise DataError(f"{what} {path}: a .npy holds no {label_key}; give a .npz with "
                            f"'images' and '{label_key}'"
                            + (", or a folder with labels.csv." if label_key == "labels" else "."))
        return loaded, None
    keys = ("images", label_key) if need_labels else ("images",)
    if not all(k in loaded for k in keys):
        raise DataError(f"{what} {path}: the .npz holds {sorted(loaded)}; name the arrays "
                        f"{' and '.join(map(repr, keys))}.")
    return loaded["images"], loaded[label_key] if need_labels else None


def _read(path: str, what: str, need_labels: bool = True):
    """(images, labels): a .npz ('images', 'labels'), a .npy (images only) or a folder whose
    labels.csv lists the images (zoo finetune's layout; its labels ignored when unlabelled)."""
    from pathlib import Path

    if Path(path).is_dir():
        from zoo.train.folder_data import load_labelled_folder

        x, y, _ = load_labelled_folder(path)
        return x, y
    return _npz(path, what, need_labels)


def _quick_data():
    """Grey-scale phantoms: 10% of 400 labelled, the rest unlabelled, 200 held out."""
    import numpy as np

    from zoo.data.synthetic import TARGET_TASK, make_phantoms

    data = make_phantoms(600, size=32, seed=7, **TARGET_TASK)
    idx = np.random.default_rng(0).permutation(400)[:40]
    return ((data.images[idx], data.labels[idx]), data.images[:400],
            (data.images[400:], data.labels[400:]))


def _m1(text: str):
    """--m1: a .keras file (loaded in safe mode) or a zoo VAE card ``vae.TAG``."""
    from pathlib import Path

    from zoo.errors import DataError

    if Path(text).is_file():
        from zoo.saving import load_model

        try:
            return load_model(text, safe_mode=True)
        except (OSError, ValueError) as e:
            raise DataError(f"--m1 {text}: cannot load it as a .keras model ({e}).") from None
    if text.endswith(".keras") or "/" in text or "." not in text:
        raise DataError(f"--m1 {text}: no such file; give a trained VAE saved as .keras, or its "
                        "weight card as vae.TAG (zoo generative ... --tag).")
    from zoo.models.factory import load

    return load(text)


def _show(name: str, history: list, seconds: float, card) -> None:
    import numpy as np

    last = history[-1]
    shown = {k: round(v, 4) for k, v in last.items() if isinstance(v, float) and np.isfinite(v)}
    print(f"{name}: {len(history)} epochs in {seconds} s; {shown}")
    if card is not None:
        print(f"{card.name}: {card.card_path}")


def _sdnet_data(args):
    """(images, masks, unlabelled): --quick phantoms with their lesion masks, or the files."""
    from zoo.errors import InvalidArgumentError

    if args.val:
        raise InvalidArgumentError("zoo semi sdnet takes no --val; score the published "
                                   "segmenter afterwards (zoo.load('sdnet', pretrained=TAG)).")
    if args.quick:
        from zoo.data.synthetic import make_phantoms

        p = make_phantoms(120, size=32, seed=7, positive_fraction=1.0)
        return p.images[:8], p.masks[:8], p.images[8:]
    if args.labelled is None or args.unlabelled is None:
        raise InvalidArgumentError("zoo semi sdnet: give --labelled (a .npz with 'images' and "
                                   "'masks') and --unlabelled (or --quick).")
    x, y = _npz(args.labelled, "--labelled", True, label_key="masks")
    return x, y, _read(args.unlabelled, "--unlabelled", need_labels=False)[0]


def _sdnet_options(args) -> dict:
    """--option KEY=VALUE for fit_sdnet: its own keywords only (did-you-mean otherwise)."""
    import inspect

    from zoo.errors import InvalidArgumentError, did_you_mean
    from zoo.semi.sdnet import fit_sdnet

    taken = {"images", "masks_labelled", "unlabelled_images", "epochs", "batch_size",
             "unlabelled_batch_size", "learning_rate", "seed", "unlabelled_weight", "encoder",
             "tag", "out", "overwrite", "checkpoint_dir", "checkpoint_every", "resume",
             "verbose"}
    known = sorted(set(inspect.signature(fit_sdnet).parameters) - taken)
    options = dict(_option(o) for o in args.option)
    for key in options:
        if key not in known:
            raise InvalidArgumentError(f"--option {key}=...: sdnet has no option {key!r}."
                                       + did_you_mean(key, known) + f" Options: {known}.")
    return options


def _run_sdnet(args) -> int:
    """``zoo semi sdnet``: zoo.semi.fit_sdnet on images + masks and unlabelled images."""
    import time

    from zoo.semi.sdnet import fit_sdnet

    options = _sdnet_options(args)
    x, y, u = _sdnet_data(args)
    t0 = time.time()
    result = fit_sdnet(
        x, y, u, epochs=2 if args.quick and args.epochs is None else args.epochs or 10,
        batch_size=args.batch_size, unlabelled_batch_size=args.unlabelled_batch_size,
        learning_rate=args.lr, seed=args.seed, unlabelled_weight=args.weight,
        encoder=None if args.model in (None, "unet") else args.model, tag=args.tag,
        out=args.out, overwrite=args.overwrite, checkpoint_dir=args.checkpoint_dir,
        checkpoint_every=args.checkpoint_every, resume=args.resume,
        verbose=1 if args.progress else 0, **options)
    _show("sdnet", result.history, round(time.time() - t0, 1), result.card)
    return 0


def _run(args) -> int:
    from zoo.errors import UnknownNameError
    from zoo.semi.methods import METHODS

    if args.method == "sdnet":
        return _run_sdnet(args)
    if args.method not in METHODS:  # did-you-mean over every method the CLI runs
        raise UnknownNameError(METHODS.kind, args.method, [*METHODS.names(), "sdnet"],
                               hint=METHODS.hint, argument="method", show_choices=False)
    return _run_classifier(args)


def _run_classifier(args) -> int:
    from zoo.errors import InvalidArgumentError
    from zoo.semi import fit

    options = dict(_option(o) for o in args.option)
    if args.m1 is not None:
        options["m1"] = _m1(args.m1)
    elif args.method == "m1m2":
        raise InvalidArgumentError("zoo semi m1m2: give --m1, the trained M1 VAE (a .keras file "
                                   "or a vae.TAG card); M2 runs on its latent means.")
    if args.quick:
        labelled, unlabelled, val = _quick_data()
    elif args.labelled is None or args.unlabelled is None:
        raise InvalidArgumentError("zoo semi: give --labelled and --unlabelled (or --quick).")
    else:
        labelled = _read(args.labelled, "--labelled")
        unlabelled = _read(args.unlabelled, "--unlabelled", need_labels=False)[0]
        val = _read(args.val, "--val") if args.val else None
    result = fit(args.method, args.model or "simple_cnn", labelled, unlabelled, val=val,
                 epochs=2 if args.quick and args.epochs is None else args.epochs or 10,
                 batch_size=args.batch_size, unlabelled_batch_size=args.unlabelled_batch_size,
                 unlabelled_weight=args.weight, learning_rate=args.lr, seed=args.seed,
                 tag=args.tag, out=args.out, overwrite=args.overwrite,
                 verbose=1 if args.progress else 0, checkpoint_dir=args.checkpoint_dir,
                 checkpoint_every=args.checkpoint_every, resume=args.resume,
                 **options)
    _show(args.method, result.history, result.info["seconds"], result.card)
    return 0


def add_semi_parser(subparsers) -> None:
    """Register ``zoo semi`` on the CLI's sub-parsers.

    Args:
        subparsers: the ``zoo`` parser's sub-parsers action.
    """
    from zoo.semi import list_methods

    p = subparsers.add_parser(
        "semi", help="semi-supervised training: few labelled + many unlabelled images")
    p.add_argument("method", help=f"method: {', '.join(list_methods())}, or sdnet "
                   "(segmentation)")
    p.add_argument("--model", default=None,
                   help="architecture (zoo list; default simple_cnn), or arch.tag to start from "
                   "a card's backbone; sdnet: the anatomy U-Net's encoder (default: the plain "
                   "U-Net; simple_cnn, resnet50, densenet121...)")
    p.add_argument("--labelled", help=".npz with 'images' and 'labels', or a folder with "
                   "labels.csv (path,label[,patient]) as for zoo finetune; sdnet: .npz with "
                   "'images' and 'masks' (N, H, W) of class indices")
    p.add_argument("--unlabelled", help=".npy images, .npz with 'images', or a folder with "
                   "labels.csv (its labels are not used)")
    p.add_argument("--val", help="validation images and labels, as --labelled")
    p.add_argument("--quick", action="store_true",
                   help="synthetic phantoms (40 labelled, 400 unlabelled), 2 epochs")
    p.add_argument("--epochs", type=int, default=None, help="passes over the unlabelled images "
                   "(default 10; 2 with --quick)")
    p.add_argument("--batch-size", type=int, default=32, help="labelled images per step")
    p.add_argument("--unlabelled-batch-size", type=int, default=None,
                   help="unlabelled images per step (default --batch-size)")
    p.add_argument("--weight", type=float, default=1.0,
                   help="weight of the unlabelled loss (0: the supervised run)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tag", help="card tag to write: afterwards zoo.load(MODEL, pretrained=TAG)")
    p.add_argument("--out", help="folder for the weights file (default beside the card)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a card this command wrote before")
    p.add_argument("--m1", help="m1m2: the trained M1 VAE, a .keras file or a vae.TAG card")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="a method option (e.g. tau=0.9), repeatable")
    p.add_argument("--progress", action="store_true", help="a progress bar per epoch")
    p.add_argument("--checkpoint-dir", help="write the engine's checkpoints here (each epoch)")
    p.add_argument("--checkpoint-every", type=int, default=None,
                   help="also checkpoint every N steps inside an epoch")
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest checkpoint in --checkpoint-dir, the method's "
                        "state (ramp-up, ensembles, teacher, pseudo-labels) included")
    p.set_defaults(func=_run)
