"""``zoo pretrain TASK --encoder ... --tag ...``: the CLI face of zoo.ssl.pretrain."""

from __future__ import annotations

import ast


def _option(text: str):
    """``key=value`` with a Python literal value (numbers, tuples, True) or a bare string."""
    from zoo.errors import InvalidArgumentError

    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise InvalidArgumentError(
            f"--option {text!r}: write key=value, e.g. --option temperature=0.2."
        )
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def _load_data(path: str | None):
    """None: the synthetic phantoms; a .npy file of images/volumes; a .npz with 'images' or
    'volumes' (+ 'subjects')."""
    import numpy as np

    from zoo.errors import DataError
    from zoo.ssl.tasks import Data

    if path is None:
        return "synthetic"
    try:
        loaded = np.load(path)
    except (OSError, ValueError) as e:
        raise DataError(f"--data {path}: cannot read it as .npy/.npz ({e}).") from None
    if isinstance(loaded, np.ndarray):
        return loaded
    for key in ("volumes", "images"):
        if key in loaded:
            return Data(loaded[key], loaded["subjects"] if "subjects" in loaded else None)
    raise DataError(
        f"--data {path}: the .npz holds {sorted(loaded)}; name the array 'images' or 'volumes'."
    )


def _run(args) -> int:
    from zoo.ssl import pretrain

    options = dict(_option(o) for o in args.option)
    result = pretrain(args.task, args.encoder, _load_data(args.data), epochs=args.epochs,
                      batch_size=args.batch_size, learning_rate=args.lr, tag=args.tag, out=args.out,
                      seed=args.seed, init=args.init, modality=args.modality,
                      data_description=args.description, overwrite=args.overwrite,
                      verbose=1 if args.progress else 2, **options)
    print(
        f"final loss {result.history[-1]:.4f} after {len(result.history)} epochs in "
        f"{result.seconds:.0f} s"
    )
    if result.card is not None:
        print(f"{result.card.name}: {result.card.card_path}")
    return 0


def add_pretrain_parser(subparsers) -> None:
    """Register ``zoo pretrain`` on the CLI's sub-parsers.

    Args:
        subparsers: the ``zoo`` parser's sub-parsers action.
    """
    from zoo.ssl.tasks import list_tasks

    p = subparsers.add_parser(
        "pretrain", help="self-supervised pretraining; writes weights and a weight card"
    )
    p.add_argument("task", help=f"pretext task: {', '.join(list_tasks())}")
    p.add_argument("--encoder", default="simple_cnn", help="registered architecture (zoo list)")
    p.add_argument(
        "--data",
        help=".npy images (N,H,W,C) / volumes (N,D,H,W,C) in [0,255], or .npz; default synthetic "
        "phantoms",
    )
    p.add_argument("--tag", help="card tag to write: afterwards zoo.load(ENCODER, pretrained=TAG)")
    p.add_argument(
        "--out", help="folder for the weights file (default beside the card in ZOO_HOME/cards)"
    )
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init", help="start from these weights (a tag such as imagenet, or a file)")
    p.add_argument("--modality", default="")
    p.add_argument("--description", default="", help="what the data are, for the card")
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a task option, repeatable",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace a card this command wrote before"
    )
    p.add_argument(
        "--progress", action="store_true", help="a progress bar per epoch instead of one line"
    )
    p.set_defaults(func=_run)
