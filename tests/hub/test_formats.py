"""Checkpoint formats have one owner (zoo.weights) and cards one writer (WeightCard.to_toml)."""

from __future__ import annotations

import dataclasses

import pytest
from conftest import write_card

from zoo.errors import CardError, UnknownNameError
from zoo.hub.cards import all_cards, get_card, read_card_file
from zoo.weights import FORMATS, get_format


def _without_path(card):
    return dataclasses.replace(card, card_path="")


def test_every_shipped_card_round_trips_through_to_toml(tmp_path):
    """read_card_file(to_toml(card)) == card, extras (sub-tables of SSL cards) included."""
    cards = list(all_cards().values())
    assert {c.format for c in cards} == {
        "keras-legacy-h5",
        "keras-weights-h5",
        "torch-state-dict",
        "inflated-2d",
    }
    assert any(
        isinstance(v, dict) for c in cards for v in c.extra.values()
    )  # the SSL cards' sub-tables
    for card in cards:
        path = tmp_path / f"{card.name}.toml"
        path.write_text(card.to_toml())
        (back,) = read_card_file(path)
        assert _without_path(back) == _without_path(card) and back.extra == card.extra, card.name


def test_to_toml_escapes_strings_and_keeps_numbers(tmp_path):
    card = dataclasses.replace(
        get_card("simple_cnn.phantom"),
        description='quote " backslash \\ newline \n tab \t del \x7f é',
        mean=(0.5, 1e-7, 3.0),
        extra={"score": float("inf"), "nested": {"deeper": {"n": 3}}, "flag": False},
    )
    path = tmp_path / "c.toml"
    path.write_text(card.to_toml())
    (back,) = read_card_file(path)
    assert _without_path(back) == _without_path(card) and back.extra == card.extra


def test_card_format_is_checked_against_the_format_registry(zoo_env):
    assert FORMATS.kind == "weights format" and set(FORMATS) == {
        "keras-legacy-h5",
        "keras-weights-h5",
        "torch-state-dict",
        "inflated-2d",
    }
    write_card(zoo_env / "cards", "resnet50", "odd", "x.h5", b"x")
    path = zoo_env / "cards" / "resnet50.odd.toml"
    path.write_text(path.read_text().replace('"keras-legacy-h5"', '"keras-legacy-h6"'))
    with pytest.raises(CardError, match="keras-legacy-h6.*keras-weights-h5"):
        read_card_file(path)
    with pytest.raises(UnknownNameError, match="Did you mean 'keras-legacy-h5'"):
        get_format("keras-legacy-h6")


def test_inflate_from_is_a_typed_field_and_required(zoo_env):
    card = get_card("resnet50_3d.imagenet_inflated")
    assert card.inflate_from == "resnet50" and "inflate_from" not in card.extra
    assert (
        get_card("vgg16.imagenet").fixed_input_size
        and not get_card("vgg16.imagenet_notop").fixed_input_size
    )
    with pytest.raises(CardError, match="without inflate_from"):
        write_card(zoo_env / "cards", "resnet50_3d", "bad", "x.h5", b"x", format="inflated-2d")
