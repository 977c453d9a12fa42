"""The evaluation protocol's probes against brute-force references, and simple_cnn3d."""

from __future__ import annotations

import numpy as np
import pytest

from zoo.errors import InvalidArgumentError
from zoo.ssl.evaluate import knn_accuracy, label_subset, linear_probe, summarize


def test_knn_matches_a_brute_force_vote():
    rng = np.random.default_rng(0)
    train_f, test_f = rng.standard_normal((40, 6)), rng.standard_normal((15, 6))
    train_y, test_y = rng.integers(0, 3, 40), rng.integers(0, 3, 15)
    correct = 0
    for f, y in zip(test_f, test_y):
        cos = [f @ g / np.linalg.norm(f) / np.linalg.norm(g) for g in train_f]
        top = np.argsort(cos)[::-1][:5]
        votes = np.bincount(train_y[top], minlength=3)
        correct += int(np.argmax(votes) == y)
    assert knn_accuracy(train_f, train_y, test_f, test_y, k=5) == pytest.approx(correct / 15)


def test_linear_probe_separates_separable_features_and_not_noise():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    f = rng.standard_normal((200, 10))
    f[:, 3] += 3 * (2 * y - 1)
    assert linear_probe(f[:100], y[:100], f[100:], y[100:]) > 0.95
    noise = rng.standard_normal((200, 10))
    assert linear_probe(noise[:100], y[:100], noise[100:], y[100:]) < 0.7


def test_label_subset_is_stratified_seeded_and_checked():
    labels = np.array([0] * 90 + [1] * 10)
    idx = label_subset(labels, 0.1, seed=0)
    assert np.bincount(labels[idx]).tolist() == [9, 1]
    np.testing.assert_array_equal(idx, label_subset(labels, 0.1, seed=0))
    assert not np.array_equal(idx, label_subset(labels, 0.1, seed=1))
    assert np.bincount(labels[label_subset(labels, 0.01, 0)]).tolist() == [1, 1]  # at least one per class
    with pytest.raises(InvalidArgumentError, match="0 < fraction <= 1"):
        label_subset(labels, 0.0, 0)
    assert summarize({0.1: [0.5, 0.7]})[0.1] == pytest.approx((0.6, 0.1))


def test_simple_cnn3d_builds_and_classifies_volumes():
    import zoo

    info = zoo.model_info("simple_cnn3d")
    assert info["spatial_dims"] == 3 and info["default_size"] == [16, 32, 32]
    model = zoo.load("simple_cnn3d", in_chans=1, num_classes=3)
    x = np.random.default_rng(0).uniform(0, 255, (2, 16, 32, 32, 1)).astype(np.float32)
    p = model.predict(x, verbose=0)
    assert p.shape == (2, 3) and np.allclose(p.sum(-1), 1, atol=1e-5)
    features = zoo.load("simple_cnn3d", in_chans=1, features=True)
    assert [tuple(o.shape[1:4]) for o in features.outputs] == [(8, 16, 16), (4, 8, 8), (2, 4, 4), (1, 2, 2)]
