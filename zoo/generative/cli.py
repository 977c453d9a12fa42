"""``zoo generative MODEL``: train pix2pix, CycleGAN, DCGAN or PGGAN on an .npz or the synthetic
phantoms, and write the generator (.keras), the history and a PNG of samples or translations.

Data (.npz): pix2pix ``source`` and ``target`` (paired), CycleGAN ``a`` and ``b`` (unpaired),
DCGAN / PGGAN ``images`` (+ ``labels`` for a conditional DCGAN); without ``--data``, the synthetic
MR-like -> CT-like phantoms (zoo.data.modalities) or 32 x 32 phantoms (zoo.data.synthetic).
"""

from __future__ import annotations

import json

MODELS = ("pix2pix", "cyclegan", "dcgan", "pggan")
KEYS = {"pix2pix": ("source", "target"), "cyclegan": ("a", "b"), "dcgan": ("images",),
        "pggan": ("images",)}


def _arrays(args) -> dict:
    """The model's arrays by name (and their value ranges) from --data, or synthetic ones."""
    import numpy as np

    from zoo.data.modalities import CT_RANGE, MR_RANGE, make_modalities
    from zoo.data.synthetic import make_phantoms
    from zoo.errors import DataError

    if args.data is None:
        if args.model in ("dcgan", "pggan"):
            return {"images": make_phantoms(args.n, size=32, seed=args.seed).images,
                    "ranges": ((0.0, 255.0),)}
        m = make_modalities(args.n, seed=args.seed, paired=args.model == "pix2pix")
        return {KEYS[args.model][0]: m.mr, KEYS[args.model][1]: m.ct,
                "ranges": (MR_RANGE, CT_RANGE)}
    try:
        loaded = dict(np.load(args.data))
    except (OSError, ValueError) as e:
        raise DataError(f"--data {args.data}: cannot read it as .npz ({e}).") from None
    missing = [k for k in KEYS[args.model] if k not in loaded]
    if missing:
        raise DataError(f"--data {args.data} holds {sorted(loaded)}; {args.model} needs arrays "
                        f"named {', '.join(KEYS[args.model])}.")
    ranges = [tuple(args.range_a), tuple(args.range_b)][:len(KEYS[args.model])]
    return {**loaded, "ranges": tuple(ranges)}


def _train(args, data, options):
    common = {"epochs": args.epochs, "batch_size": args.batch_size, "seed": args.seed,
              "learning_rate": args.lr, **options}
    r = data["ranges"]
    if args.model == "pix2pix":
        from zoo.generative.pix2pix import train_pix2pix

        return train_pix2pix(data["source"], data["target"], source_range=r[0],
                             target_range=r[1], **common), "generator"
    if args.model == "cyclegan":
        from zoo.generative.cyclegan import train_cyclegan

        return train_cyclegan(data["a"], data["b"], range_a=r[0], range_b=r[1],
                              **common), "g_ab"
    if args.model == "dcgan":
        from zoo.generative.dcgan import train_dcgan

        return train_dcgan(data["images"], labels=data.get("labels"), value_range=r[0],
                           **common), "generator"
    from zoo.generative.base import check_options
    from zoo.generative.pggan import train_pggan

    common["epochs_per_stage"] = common.pop("epochs")
    check_options(options, train_pggan, what="train_pggan")
    return train_pggan(data["images"], value_range=r[0], **common), "generator"


def _pictures(args, data, generator):
    """(images to show, their value range): samples, or the first 16 sources translated."""
    import numpy as np

    r = data["ranges"]
    if args.model in ("dcgan", "pggan"):
        from zoo.generative.dcgan import sample

        labels = np.arange(16) % (int(data["labels"].max()) + 1) if "labels" in data else None
        return sample(generator, 16, seed=args.seed, value_range=r[0], labels=labels), r[0]
    from zoo.generative.pix2pix import translate

    source = data[KEYS[args.model][0]][:16]
    return translate(generator, source, source_range=r[0], target_range=r[1]), r[1]


def _run(args) -> int:
    from zoo.figures import image_grid
    from zoo.outputs import claim_dir, finish_dir

    options = dict(parse_option(o) for o in args.option)
    data = _arrays(args)
    names = ["generator.keras", "samples.png", "history.json"]
    result, gen_name = _train(args, data, options)
    out = claim_dir(args.out, writer="zoo generative", overwrite=args.overwrite, names=names)
    generator = result.models[gen_name]
    generator.save(out / "generator.keras")
    shown, shown_range = _pictures(args, data, generator)
    image_grid(shown, out / "samples.png", value_range=shown_range)
    (out / "history.json").write_text(json.dumps(result.history, indent=1))
    finish_dir(out, writer="zoo generative")
    if args.tag:
        from zoo.generative.gan_features import publish_generator

        arch = {"pix2pix": "unet", "cyclegan": "cyclegan_resnet", "dcgan": "dcgan_generator",
                "pggan": "pggan_generator"}[args.model]
        card = publish_generator(generator, arch, args.tag, options=options,
                                 value_range=data["ranges"][-1], overwrite=args.overwrite)
        print(f"published {card.name}: zoo.load({arch!r}, pretrained={args.tag!r})")
    last = {k: round(v, 4) for k, v in result.history[-1].items() if isinstance(v, float)}
    print(f"{args.model}: {len(result.history)} epochs; last {last}; wrote {out}")
    return 0


def parse_option(text: str):
    """``key=value`` with a Python literal value (numbers, tuples, True) or a bare string.

    Args:
        text: one ``--option`` argument.

    Returns:
        (key, value).
    """
    import ast

    from zoo.errors import InvalidArgumentError

    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise InvalidArgumentError(
            f"--option {text!r}: write key=value, e.g. --option base_filters=16.")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def add_generative_parser(sub) -> None:
    """``zoo generative MODEL [--data NPZ] --out FOLDER [--tag TAG]`` (alias ``zoo gan``).

    Args:
        sub: the ``zoo`` parser's sub-parsers.
    """
    p = sub.add_parser("generative", aliases=["gan"], help="train a GAN (pix2pix, cyclegan, "
                       "dcgan, pggan) and write its generator and samples",
                       description=__doc__.splitlines()[0])
    p.add_argument("model", choices=MODELS)
    p.add_argument("--data", help=".npz with the arrays the model needs (default: synthetic)")
    p.add_argument("--range-a", type=float, nargs=2, default=(0.0, 255.0),
                   metavar=("LOW", "HIGH"), help="value range of images / source / domain A")
    p.add_argument("--range-b", type=float, nargs=2, default=(-1024.0, 1024.0),
                   metavar=("LOW", "HIGH"), help="value range of target / domain B")
    p.add_argument("--n", type=int, default=256, help="synthetic images (without --data)")
    p.add_argument("--epochs", type=int, default=5, help="epochs (per stage for pggan)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="a training or model option, e.g. base_filters=16, loss=hinge")
    p.add_argument("--out", default="generative_out", help="output folder")
    p.add_argument("--tag", help="also publish the generator as a weight card with this tag")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_run)
