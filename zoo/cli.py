"""``zoo`` / ``python -m zoo``: list, info, download, verify, demo, and the subcommands of each
package.

``list`` and ``info`` answer from the registry and the cards without importing TensorFlow.
"""

from __future__ import annotations

import argparse
import json
import sys

from zoo.errors import ZooError


def _list(args) -> int:
    import zoo

    for name in zoo.list_models(args.pattern, pretrained=True if args.pretrained else None):
        print(name)
    return 0


def _info(args) -> int:
    import zoo

    print(json.dumps(zoo.model_info(args.name), indent=2))
    return 0


def _download(args) -> int:
    import zoo
    from zoo.hub.cards import cards_for

    names = [args.name] if "." in args.name else [c.name for c in cards_for(args.name)]
    if not names:
        raise ZooError(f"{args.name} has no weight cards; see `zoo list --pretrained`.")
    for name in names:
        print(f"{name}: {zoo.fetch(name, progress=True)}")
    return 0


def _verify(args) -> int:
    from zoo.weights.verify import verify_cache

    results = verify_cache(refetch=args.refetch)
    for result in results:
        note = f"  ({result.note})" if result.note else ""
        print(f"{'ok     ' if result.ok else 'DELETED'} {result.path}{note}")
    print(f"{sum(ok for _, ok in results)} of {len(results)} cached files verified")
    return 0 if all(ok for _, ok in results) else 1


def _demo(args) -> int:
    from zoo.demo import run

    run(args.out, n_labelled=args.labels, epochs=args.epochs, seed=args.seed)
    return 0


def _demo_segmentation(args) -> int:
    from zoo.demo.segmentation import run_segmentation

    run_segmentation(args.out, seed=args.seed, overwrite=args.overwrite, size=args.size)
    return 0


def _add_demo_parser(sub) -> None:
    """``zoo demo`` (the four-step tour) and ``zoo demo segmentation`` (its own options)."""
    p = sub.add_parser(
        "demo", help="offline demo: fine-tune the phantom checkpoint, write a SavedModel ('zoo "
        "demo segmentation': the segmentation demo)"
    )
    p.add_argument("--out", default="demo_out")
    p.add_argument("--labels", type=int, default=80, help="labelled training images")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--seed", type=int, default=0, help="the same seed prints the same numbers")
    p.set_defaults(func=_demo)
    demos = p.add_subparsers(dest="demo", metavar="{segmentation}")
    s = demos.add_parser(
        "segmentation",
        help="synthetic CT with lesions as DICOM + DICOM-SEG and NIfTI, a 3D U-Net trained from "
        "scratch and with the encoder inflated from simple_cnn.phantom, Dice and HD95 out",
    )
    s.add_argument("--out", default="demo_segmentation", help="the demo's folder (default: "
                   "demo_segmentation)")
    s.add_argument("--seed", type=int, default=0, help="the same seed gives the same numbers")
    s.add_argument("--overwrite", action="store_true",
                   help="replace the folder of an earlier segmentation demo")
    s.add_argument("--size", default="default", choices=("default", "tiny"),
                   help=argparse.SUPPRESS)  # tiny: every step once, for tests
    s.set_defaults(func=_demo_segmentation)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows every option's default, but not ``None`` / ``False`` nor twice when help says it."""

    def _get_help_string(self, action):
        if action.default in (None, False) or action.default is argparse.SUPPRESS or (
                action.help and "default" in action.help.lower()):  # already says it
            return action.help
        return super()._get_help_string(action)


def _show_defaults(parser: argparse.ArgumentParser) -> None:
    """HelpFormatter on ``parser`` and every subparser below it (defined in other modules)."""
    parser.formatter_class = HelpFormatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in set(action.choices.values()):
                _show_defaults(child)
        elif action.help is None and action.default not in (None, False, argparse.SUPPRESS) and (
                action.option_strings or action.nargs in ("?", "*")):
            # argparse prints nothing for an argument without help
            action.help = "(default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    """The ``zoo`` command line: its own sub-commands plus each package's (finetune, export, ...).

    Returns:
        The ``argparse.ArgumentParser``; every sub-command's ``--help`` shows its defaults.
    """
    import zoo

    parser = argparse.ArgumentParser(
        prog="zoo", description="medzoo: a Keras 3 model zoo for medical imaging"
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {zoo.__version__} (medzoo)"
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="show TensorFlow's and Keras' own log lines and warnings (hidden by default)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="registered models (or, with --pretrained, arch.tag weights)")
    p.add_argument("pattern", nargs="?", default="*")
    p.add_argument("--pretrained", action="store_true")
    p.set_defaults(func=_list)
    p = sub.add_parser("info", help="an architecture and its weight cards, as JSON")
    p.add_argument("name")
    p.set_defaults(func=_info)
    p = sub.add_parser(
        "download", help="fetch and verify the weights of arch.tag (or every tag of arch)"
    )
    p.add_argument("name")
    p.set_defaults(func=_download)
    p = sub.add_parser("verify", help="re-hash every cached weights file; delete the bad ones")
    p.add_argument(
        "--refetch", action="store_true", help="download the bad files again and verify them"
    )
    p.set_defaults(func=_verify)
    _add_demo_parser(sub)
    from zoo.data.dicom_cli import add_dicom_parser
    from zoo.domain.cli import add_domain_parser
    from zoo.explain.cli import add_explain_parser
    from zoo.export import add_export_parser
    from zoo.generative.cli import add_generative_parser
    from zoo.infer.cli import add_predict_parser
    from zoo.infer.evaluate import add_evaluate_parser
    from zoo.semi.cli import add_semi_parser
    from zoo.ssl.cli import add_pretrain_parser
    from zoo.train.cli import add_finetune_parser

    add_finetune_parser(sub)
    add_evaluate_parser(sub)
    add_export_parser(sub)
    add_pretrain_parser(sub)
    add_semi_parser(sub)
    add_dicom_parser(sub)
    add_explain_parser(sub)
    add_predict_parser(sub)
    add_generative_parser(sub)
    add_domain_parser(sub)
    _show_defaults(parser)
    return parser


def main(argv=None) -> int:
    """Run ``zoo`` with ``argv``: a ZooError becomes one line on stderr, never a traceback.

    Args:
        argv: the arguments after ``zoo`` (default ``sys.argv[1:]``).

    Returns:
        The exit code: 0 on success, 2 when the zoo refused the input (the message says why).
    """
    args = build_parser().parse_args(argv)
    from zoo._quiet import QuietTensorFlow

    quiet = None if args.verbose else QuietTensorFlow()
    try:
        return args.func(args)
    except ZooError as e:
        print(f"zoo {args.command}: {e}", file=sys.stderr)
        return 2
    finally:
        if quiet is not None:
            quiet.close()


if __name__ == "__main__":
    sys.exit(main())
