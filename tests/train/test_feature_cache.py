"""Feature caching: where the model is cut, and that cached and uncached stage 1 reach the same head."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from numerics_util import assert_deep_close, depth_of

import zoo
from zoo.data.synthetic import make_phantoms
from zoo.errors import InvalidArgumentError
from zoo.train.feature_cache import compute_features, split_head
from zoo.train.finetune import finetune
from zoo.train.transfer import freeze

SMALL = dict(in_chans=1, num_classes=2, input_shape=(32, 32), widths=(8, 8, 8, 8, 12))


def _model(dropout=0.0, seed=0):
    keras.utils.set_random_seed(seed)
    return zoo.load("simple_cnn", dropout=dropout, **SMALL)


@pytest.mark.numerics
def test_cut_after_pooling_keeps_dropout_in_the_head():
    model = freeze(_model(dropout=0.3))
    backbone, head = split_head(model)
    assert tuple(backbone.output.shape) == (None, 12)  # pooled features of the last stage
    assert [layer.name for layer in head.layers[1:]] == ["head_dropout", "head_fc"]
    assert head.get_layer("head_fc") is model.get_layer("head_fc")  # training the head trains the model
    x = np.random.default_rng(0).uniform(0, 255, (5, 32, 32, 1)).astype("float32")
    features = compute_features(backbone, x, batch_size=2)
    assert features.shape == (5, 12) and features.dtype == np.float32
    assert_deep_close(head(features, training=False).numpy(), model(x, training=False).numpy(),
                      depth_of("simple_cnn"), what="cached features through the head ")


def test_unfrozen_or_headless_models_are_refused():
    with pytest.raises(InvalidArgumentError, match="'stage1_conv1' .* is trainable but lies before the head"):
        split_head(_model())
    frozen_all = _model()
    for layer in frozen_all.layers:
        layer.trainable = False
    with pytest.raises(InvalidArgumentError, match="no trainable head after a frozen backbone"):
        split_head(frozen_all)


@pytest.fixture(scope="module")
def data():
    return make_phantoms(40, size=32, seed=5), make_phantoms(16, size=32, seed=6)


def test_cached_and_uncached_stage1_reach_the_same_head(data, tmp_path):
    train, val = data
    results = {}
    for cached in (True, False):
        model = _model(dropout=0.25, seed=3)  # same initial weights and the same dropout seed both ways
        backbone_before = [w.copy() for w in model.get_layer("stage3_conv1").get_weights()]
        result = finetune(model, train, val, epochs=(3, 0), batch_size=8, augment=True, cache_features=cached,
                          seed=3, out_dir=tmp_path / str(cached), strategy="cpu", verbose=0, patience=5)
        assert result.cached_stage1 is cached
        for a, b in zip(backbone_before, result.model.get_layer("stage3_conv1").get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)  # the backbone stayed frozen
        results[cached] = result
    head_cached, head_images = (results[c].model.get_layer("head_fc").get_weights() for c in (True, False))
    start = _model(dropout=0.25, seed=3).get_layer("head_fc").get_weights()
    assert not np.allclose(head_cached[0], start[0])  # the head trained
    for a, b in zip(head_cached, head_images, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    for a, b in zip(results[True].history, results[False].history, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4) and a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-4)
