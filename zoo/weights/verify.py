"""``zoo verify``: re-hash every cached weights file, downloaded and converted, and repair.

It sits in the weights layer because converted torch caches are zoo.weights' files; downloaded
files are checked by the hub's own rules (``is_verified``, ``expected_hash``).
"""

from __future__ import annotations

import os
from pathlib import Path

from zoo.errors import CacheWriteError
from zoo.hub import fetch as hub_fetch  # its _unlink is the one file remover (tests fault it there)
from zoo.hub.cards import all_cards
from zoo.hub.fetch import cache_path, expected_hash, fetch, is_verified, recorded_hash_path
from zoo.weights.convert_torch import converted_caches


class Checked(tuple):
    """One ``verify_cache`` result: a ``(path, ok)`` pair with a ``note`` for people."""

    def __new__(cls, path: Path, ok: bool, note: str = ""):
        self = super().__new__(cls, (path, ok))
        self.note = note
        return self

    @property
    def path(self) -> Path:
        return self[0]

    @property
    def ok(self) -> bool:
        return self[1]


def _remove_for_verify(path: Path) -> None:
    try:
        hub_fetch._unlink(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        raise CacheWriteError(
            f"zoo verify found {path} corrupt but cannot delete it: {path.parent} is read-only or "
            f"not ours ({os.strerror(e.errno) if e.errno else e}). Make the cache writable (or run "
            f"as its owner) and verify again, or delete {path} by hand."
        ) from None


def verify_cache(refetch: bool = False) -> list[Checked]:
    """Re-hash every cached file that has a card, converted torch caches included.

    Bad files are deleted (``refetch=True`` downloads them again and verifies them). Returns one
    ``Checked`` (path, ok) pair per file; its ``note`` says what was done and how the file was
    checked.
    """
    results = []
    for card in all_cards().values():
        path = cache_path(card)
        # older zoos' size+mtime stamps: unused now
        legacy_stamp = path.with_name(path.name + ".verified")
        if legacy_stamp.is_file():
            _remove_for_verify(legacy_stamp)
        if path.is_file():
            ok = is_verified(path, card, rehash=True)
            _, _, full = expected_hash(card)
            note = (
                ""
                if card.sha256 or card.md5
                else (
                    f"the card has only the sha256 prefix {card.sha256_prefix}; checked against "
                    "the full sha256 recorded at its first verified download "
                    f"({recorded_hash_path(card)})"
                    if full
                    else f"the card has only the sha256 prefix {card.sha256_prefix}: checked by "
                    "that prefix only"
                )
            )
            if not ok:
                _remove_for_verify(path)
                note = "corrupt: deleted" + ("" if refetch else "; the next load fetches it again")
                if refetch:
                    fetch(card)
                    note += "; fetched again and verified"
            results.append(Checked(path, ok, note))
        for converted, problem in converted_caches(card):
            if problem:
                _remove_for_verify(converted)
                _remove_for_verify(converted.with_name(converted.name + ".json"))
            results.append(
                Checked(
                    converted,
                    problem is None,
                    f"converted cache {problem}; deleted, the next load converts again"
                    if problem
                    else "converted cache, its recorded sha256 matches",
                )
            )
    return results
