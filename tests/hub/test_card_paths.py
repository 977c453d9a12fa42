"""H2: card fields never lead outside ZOO_HOME; a card with a path in a name field is refused."""

from __future__ import annotations

import json
import os
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zoo.cli import main
from zoo.errors import CardError
from zoo.hub import fetch as hub
from zoo.hub.cards import all_cards, read_card_file

PHANTOM_SHA = "62298bd79b3a0def70e0c5d5068c1c8be027f8a928b0bcb47affcb038b936245"


def _card_text(arch: str, tag: str, filename: str | None, url="https://example.invalid/w.weights.h5") -> str:
    """A card table with quoted keys, as a hostile or mistyped shared card could write it."""
    lines = [f"[{json.dumps(arch)}.{json.dumps(tag)}]", f"urls = [{json.dumps(url)}]", f'sha256 = "{PHANTOM_SHA}"',
             'format = "keras-weights-h5"', "input_size = [64, 64, 1]", 'preprocess = "tf"', 'license = "x"',
             'source = "x"']
    if filename is not None:
        lines.append(f"filename = {json.dumps(filename)}")
    return "\n".join(lines) + "\n"


def test_H2_issue_reproduction_verify_leaves_the_victim(zoo_env, tmp_path, monkeypatch, capsys):
    """The issue's card: filename = <absolute victim>; `ZOO_OFFLINE=1 zoo verify` deleted the victim."""
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"irreplaceable\n")
    (zoo_env / "cards" / "evil.toml").write_text(_card_text("simple_cnn", "evil", str(victim)))
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    assert main(["verify"]) == 2
    err = capsys.readouterr().err
    assert "evil.toml" in err and "filename" in err and "plain name" in err
    assert victim.read_bytes() == b"irreplaceable\n"


@pytest.mark.parametrize("arch, tag, filename, field", [
    ("simple_cnn", "evil", "../../../victim.txt", "filename"),
    ("simple_cnn", "../../../../x", None, "tag"),
    ("../..", "evil", None, "arch"),
    ("simple_cnn", "evil", "/etc/passwd", "filename"),
    ("simple_cnn", "..", None, "tag"),
    ("simple_cnn", "evil", "sub/w.h5", "filename"),
])
def test_H2_path_in_a_name_field_is_refused_naming_file_and_field(tmp_path, arch, tag, filename, field):
    path = tmp_path / "c.toml"
    path.write_text(_card_text(arch, tag, filename))
    with pytest.raises(CardError) as e:
        read_card_file(path)
    assert str(path) in str(e.value) and field in str(e.value)


def test_H2_url_basename_that_escapes_is_refused(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(_card_text("simple_cnn", "t", None, url="https://example.invalid/a/.."))
    with pytest.raises(CardError, match="urls"):
        read_card_file(path)


def test_H2_cache_paths_are_checked_before_any_write(zoo_env, tmp_path):
    """Defence in depth: a card object built around the parser still cannot reach outside."""
    (zoo_env / "cards" / "ok.toml").write_text(_card_text("simple_cnn", "ok", None))
    card = all_cards()["simple_cnn.ok"]
    import dataclasses

    for bad in (dataclasses.replace(card, filename=str(tmp_path / "victim")),
                dataclasses.replace(card, tag="../../.."), dataclasses.replace(card, arch="..")):
        with pytest.raises(CardError, match="outside ZOO_HOME"):
            hub.cache_path(bad)


def _plain(name: str) -> bool:
    """The rule of the issue: [A-Za-z0-9_.-]+, no '..', not only dots."""
    return bool(re.fullmatch(r"[A-Za-z0-9_.-]+", name)) and ".." not in name and set(name) != {"."}


_pieces = st.sampled_from(["..", ".", "/", "\\", "~", "a", "w.h5", "resnet50", " ", "%2e", "$HOME", "-", "_",
                           "/tmp", "C:", "é", "\t", "'", '"', "\x00"])
_names = st.one_of(st.lists(_pieces, min_size=1, max_size=5).map("".join),
                   st.text(st.characters(blacklist_categories=("Cs",)), min_size=0, max_size=8))


@given(arch=_names, tag=_names, filename=st.one_of(st.none(), _names))
def test_H2_property_no_card_reaches_outside_zoo_home(arch, tag, filename):
    home = os.path.normpath(os.environ["ZOO_HOME"])
    cards = os.path.join(home, "cards")
    os.makedirs(cards, exist_ok=True)
    path = os.path.join(cards, "random.toml")
    with open(path, "w", encoding="utf-8") as f:
        f.write(_card_text(arch, tag, filename))
    effective = filename or "w.weights.h5"
    try:
        found = [c for c in all_cards().values() if c.card_path == path]
    except CardError as e:
        assert "random.toml" in str(e)
        assert not (_plain(arch) and _plain(tag) and _plain(effective)), e
        return
    finally:
        os.remove(path)
    assert _plain(arch) and _plain(tag) and _plain(effective)
    for card in found:
        target = os.path.normpath(os.path.abspath(hub.cache_path(card)))
        assert os.path.commonpath([home, target]) == home and target != home
        assert os.path.realpath(target).startswith(os.path.realpath(home) + os.sep)
        for sidecar in (hub.recorded_hash_path(card),):
            assert os.path.realpath(sidecar).startswith(os.path.realpath(home) + os.sep)
