"""The shipped self-supervised checkpoints: verifiable, small, loadable offline, their card scores real."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

import zoo
from zoo.hub.cards import builtin_card_dir

SHIPPED = ("simple_cnn.ssl_simclr", "simple_cnn.ssl_rotation")


@pytest.mark.parametrize("name", SHIPPED)
def test_card_matches_the_shipped_file(name):
    card = zoo.get_card(name)
    path = builtin_card_dir() / card.urls[0]
    assert path.is_file() and path.parent == builtin_card_dir()
    data = path.read_bytes()
    assert card.sha256 == hashlib.sha256(data).hexdigest() and card.size == len(data) < 1_000_000
    assert not card.include_top and card.input_size == (32, 32, 1) and card.extra["recipe"] in name
    assert card.extra["hyperparameters"]["epochs"] >= 4 and card.extra["versions"]["keras"]


def test_simclr_card_evaluation_is_reproduced_offline(zoo_env, monkeypatch):
    """The card's linear-probe and k-NN numbers come back from the shipped file, bit for bit in accuracy."""
    from zoo.data.synthetic import make_phantoms
    from zoo.demo.ssl import PHANTOMS
    from zoo.ssl.runner import probe

    monkeypatch.setenv("ZOO_OFFLINE", "1")
    card = zoo.get_card("simple_cnn.ssl_simclr")
    encoder = zoo.load("simple_cnn.ssl_simclr", in_chans=1, num_classes=0, pooling=None)
    scores = probe(encoder, make_phantoms(600, seed=21, **PHANTOMS))  # the tool's evaluation set
    assert scores["linear_probe_accuracy"] == pytest.approx(card.extra["evaluation"]["linear_probe_accuracy"], abs=0.01)
    assert scores["knn_accuracy"] == pytest.approx(card.extra["evaluation"]["knn_accuracy"], abs=0.01)
    # a bigger input works too: the encoder is fully convolutional
    big = zoo.load("simple_cnn.ssl_simclr", in_chans=1, input_shape=(64, 64), num_classes=0, pooling=None)
    assert big.output.shape[1:] == (2, 2, 64)


@pytest.mark.slow
def test_demo_step_ssl_beats_random_init(zoo_env, monkeypatch):
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    from zoo.demo.ssl import demo_step

    out = demo_step()
    assert out["checkpoint"] == "simple_cnn.ssl_simclr" and out["labelled_images"] == 20
    assert 0.5 < out["random_init_accuracy"] < out["ssl_accuracy"] <= 1.0
    assert np.isfinite(out["seconds"])
