"""Pretext losses against numpy references and their closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest

from zoo.ssl.losses import MaskedL2, NTXent, byol_distance, byol_regression, nt_xent


def _nt_xent_reference(z1, z2, t):
    """SimCLR's definition written out: 2N views, each against the other 2N - 1."""
    z = np.concatenate([z1, z2]).astype(np.float64)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    n2, n = len(z), len(z1)
    sim = z @ z.T / t
    losses = []
    for i in range(n2):
        j = (i + n) % n2
        others = [sim[i, k] for k in range(n2) if k != i]
        losses.append(-sim[i, j] + math.log(sum(math.exp(s) for s in others)))
    return float(np.mean(losses))


@pytest.mark.parametrize("n", [2, 4, 16])
def test_nt_xent_of_identical_projections_is_log_2n_minus_1(n):
    z = np.ones((n, 8), np.float32)
    assert float(nt_xent(z, z, 0.5)) == pytest.approx(math.log(2 * n - 1), rel=1e-5)
    # the one-directional InfoNCE convention (z1 against the N candidates of z2) gives log N
    assert float(nt_xent(z, z, 0.5, symmetric_views=False)) == pytest.approx(math.log(n), rel=1e-5)


def test_nt_xent_matches_the_written_out_definition():
    rng = np.random.default_rng(0)
    z1, z2 = rng.standard_normal((6, 5)), rng.standard_normal((6, 5))
    for t in (0.1, 0.5, 1.0):
        assert float(nt_xent(z1.astype(np.float32), z2.astype(np.float32), t)) == pytest.approx(
            _nt_xent_reference(z1, z2, t), rel=1e-4)
    # perfectly aligned, mutually orthogonal pairs give a lower loss than random ones
    eye = np.eye(6, 5).astype(np.float32)
    eye[5] = -eye[0]
    assert float(nt_xent(eye, eye, 0.1)) < float(nt_xent(z1.astype(np.float32), z2.astype(np.float32), 0.1))


def test_ntxent_loss_splits_concatenated_views_and_round_trips_config():
    rng = np.random.default_rng(1)
    z1, z2 = rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal((4, 3)).astype(np.float32)
    loss = NTXent(temperature=0.2)
    value = float(loss(np.zeros((4, 1)), np.concatenate([z1, z2], axis=1)))
    assert value == pytest.approx(_nt_xent_reference(z1, z2, 0.2), rel=1e-4)
    assert NTXent.from_config(loss.get_config()).temperature == 0.2


def test_byol_regression_is_two_minus_two_cosine():
    p = np.array([[1.0, 0.0], [1.0, 1.0]], np.float32)
    z = np.array([[2.0, 0.0], [-1.0, 1.0]], np.float32)
    assert float(byol_regression(p, z)) == pytest.approx(np.mean([0.0, 2.0]), abs=1e-6)
    np.testing.assert_allclose(np.asarray(byol_distance(p, z)), [0.0, 2.0], atol=1e-6)  # per pair


def test_masked_l2_only_counts_the_hidden_region():
    rng = np.random.default_rng(2)
    target = rng.random((2, 4, 4, 1)).astype(np.float32)
    pred = rng.random((2, 4, 4, 1)).astype(np.float32)
    mask = np.zeros((2, 4, 4, 1), np.float32)
    mask[:, 1:3, 1:3] = 1
    y_true = np.concatenate([target, mask], -1)
    expected = 0.999 * np.mean([((pred[i] - target[i]) ** 2)[mask[i] > 0].mean() for i in range(2)])
    assert float(MaskedL2()(y_true, pred)) == pytest.approx(expected, rel=1e-5)
    outside = pred.copy()
    outside[mask == 0] += 5.0  # errors outside the mask do not count
    assert float(MaskedL2()(y_true, outside)) == pytest.approx(expected, rel=1e-5)
