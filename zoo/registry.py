"""One helper for every named collection of the zoo: one lookup, one error, one suggestion rule.

Models, weight cards, MIL poolings, heads, SSL pretext tasks, samplers, CT window presets,
export formats, precisions and distribution strategies are each a ``Registry``. An unknown name
of any kind raises ``UnknownNameError(kind, name, choices)`` with a did-you-mean suggestion; it
subclasses the types these lookups raised before (``UnknownModelError``, ``InvalidArgumentError``,
so ``KeyError`` and ``ValueError`` too), so existing ``except`` clauses keep working.

This module sits below every package of the zoo: it imports only ``zoo.errors``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from zoo.errors import InvalidArgumentError, UnknownNameError

__all__ = ["Registry", "UnknownNameError"]

_MISSING = object()


def keyword_parameters(cls) -> list[str]:
    """The names ``cls(...)`` takes by keyword, through the ``__init__`` of every base class."""
    names: dict[str, None] = {}
    for klass in cls.__mro__[:-1]:  # not object
        if "__init__" not in vars(klass):
            continue
        for n, param in inspect.signature(klass.__init__).parameters.items():
            if n != "self" and param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY):
                names[n] = None
    return list(names)


class Registry(Mapping):
    """Names -> values of one ``kind`` ("model", "MIL pooling", ...), read-only as a Mapping.

    ``items``: a mapping, or an iterable of names (each name is then its own value).
    ``argument``: the parameter the name is passed as, for the message (``sampler='3d': ...``).
    ``hint``: a sentence appended to the error (where to list the names, another way to pass it).
    ``show_choices``: list every name in the error (off for long lists such as the models).
    ``populate``: called once before the first lookup (a lazily imported package registers itself).
    """

    def __init__(
        self,
        kind: str,
        items: Mapping | Iterable[str] = (),
        *,
        argument: str | None = None,
        hint: str = "",
        show_choices: bool = True,
        populate: Callable[[], Any] | None = None,
    ):
        self.kind, self.argument, self.hint, self.show_choices = kind, argument, hint, show_choices
        self._populate = populate
        self._items: dict[str, Any] = (
            dict(items) if isinstance(items, Mapping) else {n: n for n in items}
        )

    def _ready(self) -> dict[str, Any]:
        if self._populate is not None:
            populate, self._populate = self._populate, None
            populate()
        return self._items

    def register(self, name: str, value: Any = _MISSING, *, replace: bool = False):
        """Register ``value`` as ``name``; without ``value``, a decorator registering its target."""

        def put(v):
            if name in self._items and self._items[name] is not v and not replace:
                raise ValueError(f"{self.kind} {name!r} is registered twice; give it another name.")
            self._items[name] = v
            return v

        return put if value is _MISSING else put(value)

    def get(self, name, default: Any = _MISSING) -> Any:
        """The value registered as ``name``; else ``default`` if given, else UnknownNameError."""
        items = self._ready()
        try:
            return items[name]
        except (KeyError, TypeError):  # TypeError: an unhashable "name" such as a list
            if default is not _MISSING:
                return default
            raise self.unknown(name) from None

    def build(self, name, options: Mapping | None = None) -> Any:
        """The class registered as ``name`` built with ``options``; an option its constructor
        (or a base class's) does not take is an InvalidArgumentError listing the ones it does,
        instead of a TypeError from deep inside."""
        cls = self.get(name)
        options = dict(options or {})
        accepted = keyword_parameters(cls)
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise InvalidArgumentError(
                f"{self.argument or self.kind}={name!r} takes no option "
                f"{', '.join(map(repr, unknown))}; its options are {', '.join(accepted)}."
            )
        return cls(**options)

    def check(self, name) -> str:
        """``name`` itself when registered; ``UnknownNameError`` otherwise."""
        self.get(name)
        return name

    def unknown(self, name) -> UnknownNameError:
        """The error for ``name``, with suggestions from this registry."""
        return UnknownNameError(
            self.kind,
            name,
            self.names(),
            hint=self.hint,
            argument=self.argument,
            show_choices=self.show_choices,
        )

    def names(self) -> list[str]:
        """Every registered name, in registration order."""
        return list(self._ready())

    def __getitem__(self, name) -> Any:
        return self.get(name)

    def __setitem__(self, name: str, value: Any) -> None:  # PRESETS["mine"] = (c, w) keeps working
        self.register(name, value, replace=True)

    def __contains__(self, name) -> bool:
        try:
            return name in self._ready()
        except TypeError:
            return False

    def __iter__(self) -> Iterator[str]:
        return iter(self._ready())

    def __len__(self) -> int:
        return len(self._ready())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()!r})"
