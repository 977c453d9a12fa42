"""MIL losses against hand formulas; bad settings; config round trip."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from zoo.errors import InvalidArgumentError
from zoo.heads.losses import (
    AreaConstraint,
    BagCrossEntropy,
    InstancePriors,
    SparsityPrior,
    mil_losses,
    mil_targets,
)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def value(loss, y, p):
    return float(keras.ops.convert_to_numpy(loss(np.asarray(y), np.asarray(p, np.float32))))


def test_bag_cross_entropy_binary_and_categorical():
    logits = np.array([[2.0], [-1.0], [0.5]])
    y = np.array([1, 0, 1])
    p = sigmoid(logits[:, 0])
    expected = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    np.testing.assert_allclose(value(BagCrossEntropy(), y, logits), expected, rtol=1e-5)
    np.testing.assert_allclose(value(BagCrossEntropy(weight=0.5), y, logits), 0.5 * expected, rtol=1e-5)
    # multi-label: multi-hot targets, mean over classes
    logits2 = np.array([[1.0, -2.0], [0.0, 3.0]])
    y2 = np.array([[1, 0], [0, 1]])
    p2 = sigmoid(logits2)
    expected2 = -np.mean(y2 * np.log(p2) + (1 - y2) * np.log(1 - p2))
    np.testing.assert_allclose(value(BagCrossEntropy(), y2, logits2), expected2, rtol=1e-5)
    # categorical: softmax of the bag logits, integer labels
    soft = np.exp(logits2) / np.exp(logits2).sum(1, keepdims=True)
    expected3 = -np.mean(np.log(soft[[0, 1], [1, 0]]))
    np.testing.assert_allclose(value(BagCrossEntropy("categorical"), np.array([1, 0]), logits2), expected3, rtol=1e-5)


def test_sparsity_prior_is_the_weighted_mean_instance_probability():
    maps = np.random.default_rng(0).normal(size=(3, 4, 5, 2))
    expected = 0.2 * sigmoid(maps).mean()
    np.testing.assert_allclose(value(SparsityPrior(0.2), np.zeros(3), maps), expected, rtol=1e-5)
    probs = sigmoid(maps)
    np.testing.assert_allclose(value(SparsityPrior(0.2, from_logits=False), np.zeros(3), probs), expected, rtol=1e-5)
    bag = maps.reshape(3, 20, 2)  # a tiled bag (B, N, C) works the same
    np.testing.assert_allclose(value(SparsityPrior(0.2), np.zeros(3), bag), expected, rtol=1e-5)


def test_area_constraint_hand_cases():
    # probabilities given directly: image 0 positive with area 0.25 (inside [0.1, 0.5]) -> 0;
    # image 1 positive with area 0.75 -> (0.75 - 0.5)^2; image 2 negative with area 0.5 -> 0.5^2
    maps = np.zeros((3, 2, 2, 1), np.float32)
    maps[0, 0, 0] = 1.0
    maps[1].flat[:3] = 1.0
    maps[2, 0] = 1.0
    loss = AreaConstraint(0.1, 0.5, weight=2.0, from_logits=False)
    np.testing.assert_allclose(value(loss, np.array([1, 1, 0]), maps), 2.0 * (0.0 + 0.0625 + 0.25) / 3, rtol=1e-6)
    # too small an area on a positive image: (0.1 - 0)^2
    np.testing.assert_allclose(value(loss, np.array([1]), np.zeros((1, 2, 2, 1))), 2.0 * 0.01, rtol=1e-5)
    # several classes with integer labels: only the labelled class is present
    two = np.zeros((1, 2, 2, 2), np.float32)
    two[0, 0, 0, 1] = 1.0  # class 1 area 0.25 (fine), class 0 area 0 (absent, fine)
    assert value(loss, np.array([1]), two) == pytest.approx(0.0, abs=1e-7)
    assert value(loss, np.array([0]), two) == pytest.approx(2.0 * (0.01 + 0.0625), rel=1e-5)


def test_instance_priors_sum_both_and_the_helpers():
    maps = np.random.default_rng(1).normal(size=(2, 3, 3, 1))
    y = np.array([1, 0])
    both = value(InstancePriors(0.3, (0.05, 0.2), 1.5), y, maps)
    parts = value(SparsityPrior(0.3), y, maps) + value(AreaConstraint(0.05, 0.2, 1.5), y, maps)
    np.testing.assert_allclose(both, parts, rtol=1e-5)
    assert set(mil_losses()) == {"bag"}
    losses = mil_losses(sparsity=0.1)
    assert set(losses) == {"bag", "instance_maps"} and set(mil_targets(y, losses)) == set(losses)


@pytest.mark.parametrize("loss", [BagCrossEntropy("categorical", weight=0.3), SparsityPrior(0.4),
                                  AreaConstraint(0.02, 0.4, 3.0), InstancePriors(0.1, (0.0, 0.3), 2.0)])
def test_losses_serialize(loss):
    clone = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(clone) is type(loss) and clone.get_config() == loss.get_config()
    maps = np.random.default_rng(2).normal(size=(2, 2, 2, 3))
    y = np.array([2, 0])
    p = maps if not isinstance(loss, BagCrossEntropy) else maps[:, 0, 0]
    assert value(clone, y, p) == pytest.approx(value(loss, y, p), rel=1e-6)


def test_bad_loss_settings():
    with pytest.raises(InvalidArgumentError, match="mode="):
        BagCrossEntropy("multiclass")
    with pytest.raises(InvalidArgumentError, match="need 0 <= lower <= upper <= 1"):
        AreaConstraint(0.5, 0.1)
    with pytest.raises(InvalidArgumentError, match="weight=-1"):
        SparsityPrior(-1)
