"""zoo.metrics against scikit-learn and a plain reference bootstrap; the grouped validation split."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from zoo import metrics
from zoo.errors import DataError

sk = pytest.importorskip("sklearn.metrics")
from sklearn.calibration import calibration_curve  # noqa: E402


def _binary(n=80, seed=0, ties=False):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s = np.clip(0.3 * y + rng.normal(0.35, 0.25, n), 0, 1)
    return y, (np.round(s, 1) if ties else s)


@pytest.mark.parametrize("ties", [False, True])
def test_auc_sensitivity_balanced_accuracy_match_sklearn(ties):
    y, s = _binary(ties=ties)
    assert metrics.roc_auc(y, s) == pytest.approx(sk.roc_auc_score(y, s), abs=1e-12)
    sens, spec = metrics.sensitivity_specificity(y, s, 0.5)
    assert sens == pytest.approx(sk.recall_score(y, s >= 0.5))
    assert spec == pytest.approx(sk.recall_score(1 - y, s < 0.5))
    assert metrics.balanced_accuracy(y, s >= 0.5) == pytest.approx(sk.balanced_accuracy_score(y, s >= 0.5))


def test_multilabel_and_multiclass_auc_match_sklearn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, (60, 3))
    s = rng.random((60, 3)) + 0.4 * y
    np.testing.assert_allclose(metrics.roc_auc(y, s, average=None), sk.roc_auc_score(y, s, average=None))
    probs = rng.dirichlet(np.ones(4), 90)
    labels = rng.integers(0, 4, 90)
    assert metrics.roc_auc(labels, probs) == pytest.approx(sk.roc_auc_score(labels, probs, multi_class="ovr"))
    assert metrics.balanced_accuracy(labels, probs.argmax(1)) == pytest.approx(
        sk.balanced_accuracy_score(labels, probs.argmax(1)))


def test_calibration_matches_sklearn_curve_and_draws_a_diagram(tmp_path):
    y, p = _binary(200, seed=3)
    p[:3] = [0.5, 0.1, 1.0]  # values on bin edges fall where scikit-learn puts them
    table = metrics.calibration(y, p, bins=10)
    observed, predicted = calibration_curve(y, p, n_bins=10, strategy="uniform")
    shown = np.array(table["count"]) > 0
    np.testing.assert_allclose(np.array(table["observed"])[shown], observed)
    np.testing.assert_allclose(np.array(table["confidence"])[shown], predicted)
    weights = np.array(table["count"])[shown] / len(y)
    assert table["ece"] == pytest.approx(np.sum(weights * np.abs(observed - predicted)))
    from zoo.figures import reliability_diagram

    png = reliability_diagram(table, tmp_path / "reliability.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_dice_equals_f1_per_image_and_per_class():
    rng = np.random.default_rng(4)
    t, p = rng.random((3, 8, 8)) > 0.6, rng.random((3, 8, 8)) > 0.5
    per_image = metrics.dice(t, p, axis=(1, 2))
    np.testing.assert_allclose(per_image, [sk.f1_score(t[i].ravel(), p[i].ravel()) for i in range(3)])
    labels_t, labels_p = rng.integers(0, 3, (16, 16)), rng.integers(0, 3, (16, 16))
    np.testing.assert_allclose(metrics.dice(labels_t, labels_p, num_classes=3),
                               sk.f1_score(labels_t.ravel(), labels_p.ravel(), average=None))
    assert metrics.dice(np.zeros((4, 4)), np.zeros((4, 4))) == 1.0
    with pytest.raises(DataError, match="shapes"):
        metrics.dice(np.zeros((4, 4)), np.zeros((4, 5)))


def _reference_bootstrap(y, s, groups, n_boot, seed):
    """A straightforward cluster bootstrap with scikit-learn's AUC: the definition, written out."""
    rng = np.random.default_rng(seed)
    ids = np.unique(groups)
    rows = {g: np.flatnonzero(groups == g) for g in ids}
    stats = []
    for _ in range(n_boot):
        idx = np.concatenate([rows[ids[k]] for k in rng.integers(0, len(ids), len(ids))])
        if len(np.unique(y[idx])) == 2:
            stats.append(sk.roc_auc_score(y[idx], s[idx]))
    return np.percentile(stats, [2.5, 97.5])


def test_bootstrap_ci_matches_a_reference_bootstrap_per_row_and_per_patient():
    y, s = _binary(60, seed=5)
    ci = metrics.bootstrap_ci(metrics.roc_auc, y, s, n_boot=200, seed=7)
    np.testing.assert_allclose([ci["low"], ci["high"]],
                               _reference_bootstrap(y, s, np.arange(60), 200, 7), rtol=1e-12)
    assert ci["low"] <= ci["value"] <= ci["high"]
    groups = np.repeat(np.arange(15), 4)
    grouped = metrics.bootstrap_ci(metrics.roc_auc, y, s, groups=groups, n_boot=200, seed=7)
    np.testing.assert_allclose([grouped["low"], grouped["high"]],
                               _reference_bootstrap(y, s, groups, 200, 7), rtol=1e-12)


def test_per_patient_report_aggregates_mean_score_and_any_positive_label():
    rng = np.random.default_rng(6)
    groups = rng.integers(0, 12, 70).astype(str)
    y = rng.integers(0, 2, 70)
    s = rng.random(70)
    ids = np.unique(groups)
    ref_y = np.array([y[groups == g].max() for g in ids])
    ref_s = np.array([s[groups == g].mean() for g in ids])
    report = metrics.classification_report(y, s, groups, n_boot=50)
    assert report["n"] == len(ids) and report["unit"] == "patient"
    assert report["auc"]["value"] == pytest.approx(sk.roc_auc_score(ref_y, ref_s))
    assert report["balanced_accuracy"]["value"] == pytest.approx(sk.balanced_accuracy_score(ref_y, ref_s >= 0.5))
    with pytest.raises(DataError, match="one patient id per example"):
        metrics.roc_auc(y, s, groups[:-1])


@given(st.lists(st.integers(0, 9), min_size=2, max_size=60), st.floats(0.05, 0.9), st.integers(0, 2**16))
def test_grouped_validation_split_never_shares_a_patient(layout, fraction, seed):
    groups = np.array(layout)
    if len(np.unique(groups)) < 2:
        with pytest.raises(DataError, match="one patient"):
            metrics.validation_split(len(groups), fraction, groups=groups, seed=seed)
        return
    train, val = metrics.validation_split(len(groups), fraction, groups=groups, seed=seed)
    assert len(train) and len(val)
    assert not set(groups[train]) & set(groups[val])
    assert sorted(np.r_[train, val].tolist()) == list(range(len(groups)))
