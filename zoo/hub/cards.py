"""Weight cards: one frozen dataclass per checkpoint, read from TOML.

Cards come from the zoo's own ``weights/`` folder (shipped as ``zoo._weights``), from
``$ZOO_HOME/cards`` (where self-supervised pretraining writes its cards) and from every
folder in ``ZOO_CARDS`` (os.pathsep separated). Environment is read at call time.
"""

from __future__ import annotations

import json
import math
import os
import re
import tomllib
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from urllib.parse import urlparse

from zoo.errors import CardError
from zoo.registry import Registry

PREPROCESS_MODES = ("tf", "caffe", "torch", "meanstd", "none")
# what a card may give as ``format``; zoo/weights/ has one loader per name (register_format checks
# it)
FORMATS = ("keras-legacy-h5", "keras-weights-h5", "torch-state-dict", "inflated-2d")
_HEX_LENGTHS = {"sha256": (64, 64), "md5": (32, 32), "sha256_prefix": (8, 63)}


@dataclass(frozen=True)
class WeightCard:
    """Where one checkpoint is, how to check its bytes and how to feed the model."""

    arch: str
    tag: str
    urls: tuple[str, ...]
    format: str
    input_size: tuple[int, ...]
    preprocess: str
    license: str
    source: str
    sha256: str | None = None
    md5: str | None = None
    sha256_prefix: str | None = (
        None  # torchvision publishes only the first hex digits, in the file name
    )
    size: int | None = None
    include_top: bool = False
    min_size: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    input_range: tuple[float, float] = (0.0, 255.0)
    num_classes: int = 0
    labels: str = ""
    paper: str = ""
    modality: str = ""
    units: str = ""
    description: str = ""
    filename: str = ""
    inflate_from: str = ""  # inflated-2d: the 2D architecture whose file is inflated
    fixed_input_size: bool = False  # the classifier top takes only input_size (VGG's flatten)
    card_path: str = ""
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def name(self) -> str:
        return f"{self.arch}.{self.tag}"

    @property
    def in_chans(self) -> int:
        return int(self.input_size[-1])

    @property
    def hash(self) -> tuple[str, str]:
        """(algorithm, hex digest or its start): sha256 (or its prefix) where given, else md5."""
        if self.sha256 or self.sha256_prefix:
            return "sha256", self.sha256 or self.sha256_prefix
        return "md5", self.md5

    @property
    def file_name(self) -> str:
        return self.filename or os.path.basename(urlparse(self.urls[0]).path)

    def resolved_urls(self) -> list[str]:
        """URLs with relative paths resolved against the card's folder."""
        out = []
        for url in self.urls:
            if "://" not in url and not os.path.isabs(url) and self.card_path:
                url = str(Path(self.card_path).parent / url)
            out.append(url)
        return out

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        if not self.fixed_input_size:  # listed only where it holds, as before it was a typed field
            del d["fixed_input_size"]
        d.update(self.extra, name=self.name, in_chans=self.in_chans)
        if not (self.sha256 or self.md5):
            d["integrity"] = (
                f"only the first {len(self.sha256_prefix)} hex digits of the sha256 are published; "
                "the full sha256 is recorded at the first verified download and checked from then "
                "on"
            )
        return {
            k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items() if v not in (None, "")
        }

    def to_toml(self) -> str:
        """The card as one ``[arch.tag]`` TOML table (plus sub-tables for dict-valued extras).

        The one card writer of the zoo: ``read_card_file`` of the text gives this card back.
        Fields at their default are left out; ``card_path`` is where a card was read from, not
        part of it.
        """
        values = {"arch": self.arch}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("arch", "tag", "card_path", "extra") or value is None:
                continue
            if f.default is not MISSING and value == f.default:
                continue
            values[f.name] = value
        return toml_table(self.name, {**values, **self.extra})


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return (
            repr(v)
            if math.isfinite(v)
            else ("nan" if math.isnan(v) else ("inf" if v > 0 else "-inf"))
        )
    if isinstance(v, str):
        # TOML's escapes are JSON's
        return json.dumps(v, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if hasattr(v, "item"):  # numpy scalars
        return _toml_value(v.item())
    raise CardError(f"cannot write {v!r} ({type(v).__name__}) into a weight card; use numbers, "
                    "strings, booleans, lists or tables of them.")


def toml_table(name: str, values: dict) -> str:
    """``[name]`` with the plain values first, then one ``[name.key]`` sub-table per dict value."""
    plain = {k: v for k, v in values.items() if not isinstance(v, dict) and v is not None}
    lines = [f"[{name}]"] + [f"{k} = {_toml_value(v)}" for k, v in plain.items()]
    text = "\n".join(lines) + "\n"
    for key, table in values.items():
        if isinstance(table, dict):
            text += "\n" + toml_table(f"{name}.{key}", table)
    return text


_PLAIN = re.compile(r"[A-Za-z0-9_.-]+")


def plain_name_problem(value) -> str | None:
    """Why ``value`` cannot name a folder or file inside ZOO_HOME, or None when it can.

    Card names and file names become cache paths, so they must be one plain path component:
    letters, digits, ``_``, ``.`` and ``-`` only, no ``..``, not only dots.
    """
    if not isinstance(value, str) or not value:
        return "is empty or not a string"
    if not _PLAIN.fullmatch(value):
        return "holds characters other than letters, digits, '_', '.' and '-' (a path separator?)"
    if ".." in value or set(value) == {"."}:
        return "holds '..' or only dots (a path outside the cache)"
    return None


_REQUIRED = ("urls", "format", "input_size", "preprocess", "license", "source")
_TUPLES = ("urls", "input_size", "mean", "std", "input_range")


def _check_names(arch: str, tag: str, table: dict, path: Path, where: str) -> None:
    for key, value in (("arch", arch), ("tag", tag), ("arch", table.get("arch", arch))):
        problem = plain_name_problem(value)
        if problem:
            raise CardError(
                f"weight card file {path}: the {key} {value!r} {problem}; name cards with plain "
                "names such as [resnet50.my_site] (letters, digits, _ . -)."
            )
    missing = [k for k in _REQUIRED if k not in table]
    if missing:
        raise CardError(
            f"{where} lacks {', '.join(missing)}: add the field(s); see docs/ARCHITECTURE.md."
        )
    if table.get("arch", arch) != arch:
        raise CardError(
            f"{where} says arch = {table['arch']!r}: the table name and arch must agree."
        )


def _check_hashes(table: dict, where: str) -> None:
    if not (table.get("sha256") or table.get("md5") or table.get("sha256_prefix")):
        raise CardError(f"{where} has neither sha256 nor md5: every checkpoint must be verifiable.")
    for key, (shortest, longest) in _HEX_LENGTHS.items():
        value = table.get(key)
        if value is not None and not (isinstance(value, str) and shortest <= len(value) <= longest
                                      and all(c in "0123456789abcdefABCDEF" for c in value)):
            span = f"{shortest}" + (f" to {longest}" if longest > shortest else "")
            raise CardError(
                f"{where}: {key} = {value!r} is not {span} hex digits; copy it from the publisher."
            )


def _check_choices(table: dict, where: str) -> None:
    """format (one of FORMATS, loaded by zoo.weights) and preprocess, with the fields they need."""
    if table["format"] not in FORMATS:
        raise CardError(f"{where} has format {table['format']!r}; use one of {FORMATS}.")
    if table["format"] == "inflated-2d" and not table.get("inflate_from"):
        raise CardError(f"{where} has format 'inflated-2d' without inflate_from: name the 2D "
                        "architecture whose file it inflates (inflate_from = \"resnet50\", say).")
    if table["preprocess"] not in PREPROCESS_MODES:
        raise CardError(
            f"{where} has preprocess {table['preprocess']!r}; use one of {PREPROCESS_MODES}."
        )
    if table["preprocess"] == "meanstd" and not ("mean" in table and "std" in table):
        raise CardError(f"{where} uses preprocess = 'meanstd' without mean and std lists.")


def _split_fields(table: dict, where: str) -> tuple[dict, dict]:
    """(the WeightCard fields, tuples where the card keeps tuples; everything else: ``extra``)."""
    known = {f.name for f in fields(WeightCard)}
    kwargs = {k: v for k, v in table.items() if k in known and k not in ("arch", "tag")}
    for k in _TUPLES:
        if k in kwargs:
            kwargs[k] = tuple(kwargs[k]) if isinstance(kwargs[k], list) else (kwargs[k],)
    if not kwargs["urls"] or not all(isinstance(u, str) and u for u in kwargs["urls"]):
        raise CardError(f"{where}: urls must be a non-empty list of URLs or paths.")
    return kwargs, {k: v for k, v in table.items() if k not in known}


def card_from_table(arch: str, tag: str, table: dict, path: Path) -> WeightCard:
    """The card ``[arch.tag]`` from its TOML table, validated (CardError: the field and fix)."""
    where = f"weight card [{arch}.{tag}] in {path}"
    _check_names(arch, tag, table, path, where)
    _check_hashes(table, where)
    _check_choices(table, where)
    kwargs, extra = _split_fields(table, where)
    try:
        card = WeightCard(arch=arch, tag=tag, card_path=str(path), extra=extra, **kwargs)
    except TypeError as e:
        raise CardError(f"{where} does not parse: {e}") from None
    field_name = "filename" if table.get("filename") else "urls"
    problem = plain_name_problem(card.file_name)
    if problem:
        raise CardError(
            f"{where}: the file name {card.file_name!r} (from its {field_name}) {problem}. Set "
            "filename = \"NAME.weights.h5\" to a plain name: the cache keeps it under "
            "ZOO_HOME/weights/ARCH/TAG/ and never writes elsewhere."
        )
    return card


def read_card_file(path: str | os.PathLike) -> list[WeightCard]:
    """Every card in one TOML file (``[arch.tag]`` tables)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise CardError(
            f"weight card file {path} cannot be read ({e}); fix or remove it."
        ) from None
    cards = []
    for arch, tags in doc.items():
        if not isinstance(tags, dict) or not all(isinstance(t, dict) for t in tags.values()):
            raise CardError(f"{path}: top-level key {arch!r} must hold [{arch}.TAG] tables.")
        for tag, table in tags.items():
            cards.append(card_from_table(arch, tag, table, path))
    return cards


def builtin_card_dir() -> Path:
    """The source checkout's weights/ folder when zoo runs from one, else the installed
    zoo._weights.

    The checkout wins so that an editable install, or a second git worktree, reads its own cards.
    """
    import importlib.util

    source = Path(__file__).resolve().parents[2] / "weights"
    if source.is_dir() and any(source.glob("*.toml")):
        return source

    spec = importlib.util.find_spec("zoo._weights")
    if spec is not None and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    return source


def zoo_home() -> Path:
    """The cache root: ZOO_HOME, else $XDG_CACHE_HOME/medzoo, else ~/.cache/medzoo."""
    if os.environ.get("ZOO_HOME"):
        return Path(os.environ["ZOO_HOME"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "medzoo"


def card_dirs() -> list[Path]:
    dirs = [builtin_card_dir(), zoo_home() / "cards"]
    dirs += [Path(p) for p in os.environ.get("ZOO_CARDS", "").split(os.pathsep) if p]
    seen, out = set(), []
    for d in dirs:
        key = d.resolve() if d.exists() else d
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


def all_cards() -> dict[str, WeightCard]:
    """Every card from every card folder, keyed by ``arch.tag``."""
    cards: dict[str, WeightCard] = {}
    for d in card_dirs():
        if not d.is_dir():
            continue
        for path in sorted(d.glob("*.toml")):
            for card in read_card_file(path):
                if card.name in cards:
                    raise CardError(
                        f"weight card {card.name} is defined in both {cards[card.name].card_path} "
                        f"and {card.card_path}; rename the tag of one."
                    )
                cards[card.name] = card
    return cards


def cards_for(arch: str) -> list[WeightCard]:
    return [c for c in all_cards().values() if c.arch == arch]


def get_card(name: str) -> WeightCard:
    """The weight card ``arch.tag``, from the zoo's cards, ``ZOO_HOME/cards`` and ``ZOO_CARDS``.

    Args:
        name: the card's name, e.g. ``"resnet50.imagenet"``.

    Returns:
        The frozen ``WeightCard`` (where the file is, its hash, licence and preprocessing).

    Raises:
        UnknownNameError: no such card (with suggestions). CardError: a card file is invalid.
    """
    return Registry(
        "weight card",
        all_cards(),
        show_choices=False,
        hint="See zoo.list_weights() or `zoo list --pretrained` for every card.",
    ).get(name)


def list_weights(pattern: str = "*") -> list[str]:
    """Every weight card's name ``arch.tag`` matching an fnmatch ``pattern``.

    Args:
        pattern: an fnmatch pattern over ``arch.tag`` (``"resnet50.*"``).

    Returns:
        A sorted list of card names.

    Raises:
        CardError: a card file that does not parse, or a name defined twice.
    """
    import fnmatch

    return sorted(n for n in all_cards() if fnmatch.fnmatch(n, pattern))
