"""Turn a trained model into a registry entry: its weights file plus a weight card.

Shared by every method that publishes (self-supervised, semi-supervised, generative).

The card goes into the user card folder ``zoo_home()/"cards"``; the weights go beside it
(the card then names the file by a relative path, so copying the folder, or serving both
files from a ZOO_MIRROR, serves a whole site) or into ``out`` (named by a file:// URL).
``zoo.load(arch, pretrained=tag)`` then verifies the sha256 and loads it like any card.
"""

from __future__ import annotations

import datetime
import os
import platform
import re
from pathlib import Path

from zoo.errors import CardError, InvalidArgumentError
from zoo.hub.cards import WeightCard, all_cards, card_from_table, read_card_file, zoo_home
from zoo.hub.fetch import file_hash

TAG = re.compile(r"^[a-z0-9][a-z0-9_]*$")


def user_card_dir() -> Path:
    return zoo_home() / "cards"


def check_tag(arch: str, tag: str, overwrite: bool = False) -> None:
    """A tag: lower case letters, digits, underscores; new unless ``overwrite`` (own cards only)."""
    if not isinstance(tag, str) or not TAG.match(tag):
        raise InvalidArgumentError(
            f"tag={tag!r}: use lower case letters, digits and underscores, e.g. 'simclr_ct2026'."
        )
    existing = all_cards().get(f"{arch}.{tag}")
    if existing is None:
        return
    mine = Path(existing.card_path).resolve() == (user_card_dir() / f"{arch}.{tag}.toml").resolve()
    if not (overwrite and mine):
        raise CardError(
            f"weight card {arch}.{tag} already exists ({existing.card_path}); "
            + (
                "pass overwrite=True (--overwrite) to replace it, or pick another tag."
                if mine
                else "pick another tag (that card is not one pretrain wrote here)."
            )
        )


def versions() -> dict:
    import keras
    import numpy as np
    import tensorflow as tf

    from zoo._version import zoo_version

    return {"zoo": zoo_version(), "keras": keras.__version__, "tensorflow": tf.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


def publish(
    encoder, arch: str, tag: str, fields: dict, out=None, overwrite: bool = False
) -> WeightCard:
    """Save ``encoder``'s weights, write card ``arch.tag`` (``fields``: recipe, data...)."""
    check_tag(arch, tag, overwrite)
    cards = user_card_dir()
    cards.mkdir(parents=True, exist_ok=True)
    folder = Path(out).expanduser() if out is not None else cards
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{arch}_{tag}.weights.h5"
    encoder.save_weights(str(path))
    url = path.name if folder.resolve() == cards.resolve() else path.resolve().as_uri()
    shape = [int(s) for s in encoder.input.shape[1:]]
    card = {
        "arch": arch,
        "urls": [url],
        "sha256": file_hash(path, "sha256"),
        "size": path.stat().st_size,
        "format": "keras-weights-h5",
        "include_top": False,
        "input_size": shape,
        "created": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        **fields,
        "versions": versions(),
    }
    card_path = cards / f"{arch}.{tag}.toml"
    # CardError before anything is written
    text = card_from_table(arch, tag, card, card_path).to_toml()
    tmp = card_path.with_name(card_path.name + ".tmp")
    tmp.write_text(
        "# Written by the zoo (pretrain, semi, generative); the weights file is verified by "
        "sha256 on load.\n\n" + text
    )
    try:
        read_card_file(tmp)  # never leave a card the zoo cannot read
    except CardError:
        tmp.unlink()
        raise
    os.replace(tmp, card_path)
    return read_card_file(card_path)[0]
