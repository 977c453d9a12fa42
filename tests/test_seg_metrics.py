"""zoo.metrics' segmentation metrics against a brute-force numpy reference (every pairwise
distance between boundary voxels), scikit-learn, MONAI when installed, and analytic shifts."""

from __future__ import annotations

import inspect
import itertools

import numpy as np
import pytest

from zoo import metrics
from zoo.errors import DataError, InvalidArgumentError


def _boundary(mask: np.ndarray) -> np.ndarray:
    """Foreground voxels with a face neighbour outside the mask (outside the array counts)."""
    padded = np.pad(mask, 1)
    inner = np.ones_like(mask, bool)
    for axis, step in itertools.product(range(mask.ndim), (-1, 1)):
        idx = [slice(1, -1)] * mask.ndim
        idx[axis] = slice(1 + step, padded.shape[axis] - 1 + step)
        inner &= padded[tuple(idx)]
    return mask & ~inner


def _directed(a: np.ndarray, b: np.ndarray, spacing) -> np.ndarray:
    """Each boundary voxel of a to the nearest boundary voxel of b, in mm, by brute force."""
    pa = np.argwhere(_boundary(a)) * np.asarray(spacing, float)
    pb = np.argwhere(_boundary(b)) * np.asarray(spacing, float)
    return np.sqrt(((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1)).min(1)


def _reference(t, p, spacing, q=95):
    d_pt, d_tp = _directed(p, t, spacing), _directed(t, p, spacing)
    return max(np.percentile(d_pt, q), np.percentile(d_tp, q)), np.concatenate([d_pt, d_tp]).mean()


def _blobs(shape, seed, level=0.55):
    """A random lumpy mask: smoothed noise above a level (several components, holes)."""
    from scipy.ndimage import gaussian_filter

    noise = gaussian_filter(np.random.default_rng(seed).normal(size=shape), 1.2)
    return noise > np.quantile(noise, level)


@pytest.mark.parametrize(
    ("shape", "spacing", "seed"),
    [((9, 10, 11), (3.0, 0.7, 1.1), 0), ((8, 12, 9), (1.0, 1.0, 1.0), 1),
     ((7, 11, 13), (2.5, 0.5, 0.8), 2), ((20, 23), (0.6, 1.7), 3)],
)
def test_surface_metrics_match_brute_force(shape, spacing, seed):
    t, p = _blobs(shape, seed), _blobs(shape, seed + 100)
    hd, asd = _reference(t, p, spacing)
    assert metrics.hausdorff_distance(t, p, spacing=spacing) == pytest.approx(hd, rel=1e-12)
    assert metrics.average_surface_distance(t, p, spacing=spacing) == pytest.approx(asd, rel=1e-12)
    assert metrics.hausdorff_distance(t, p, spacing=spacing, percentile=100) == pytest.approx(
        max(_directed(p, t, spacing).max(), _directed(t, p, spacing).max()), rel=1e-12)
    np.testing.assert_array_equal(metrics.surface(t), _boundary(t))
    # the directed distances, voxel for voxel (both list surface voxels in C order)
    to_true, to_pred = metrics.surface_distances(t, p, spacing)
    np.testing.assert_allclose(to_true, _directed(p, t, spacing), rtol=1e-12)
    np.testing.assert_allclose(to_pred, _directed(t, p, spacing), rtol=1e-12)


def test_dice_and_iou_match_sklearn_per_class():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(4)
    t, p = rng.integers(0, 3, (6, 9, 10)), rng.integers(0, 3, (6, 9, 10))
    np.testing.assert_allclose(metrics.dice(t, p, num_classes=3),
                               sk.f1_score(t.ravel(), p.ravel(), average=None), rtol=1e-12)
    np.testing.assert_allclose(metrics.iou(t, p, num_classes=3),
                               sk.jaccard_score(t.ravel(), p.ravel(), average=None), rtol=1e-12)
    d, j = metrics.dice(t == 1, p == 1), metrics.jaccard(t == 1, p == 1)
    assert j == pytest.approx(d / (2 - d))
    np.testing.assert_allclose(metrics.iou(t == 1, p == 1, axis=(1, 2)),
                               [sk.jaccard_score(a.ravel(), b.ravel()) for a, b in zip(t == 1, p == 1)])


@pytest.mark.parametrize("k", [1, 2, 3])
def test_shift_along_z_costs_the_z_spacing_and_along_x_the_x_spacing(k):
    """Two 6x6x6 cubes k voxels apart: HD95 = k * spacing of the shifted axis, exactly."""
    a = np.zeros((16, 14, 14), bool)
    a[3:9, 4:10, 4:10] = True
    spacing = (3.0, 1.0, 1.0)
    along_z, along_x = np.roll(a, k, axis=0), np.roll(a, k, axis=2)
    assert metrics.hausdorff_distance(a, along_z, spacing=spacing) == pytest.approx(3.0 * k)
    assert metrics.hausdorff_distance(a, along_x, spacing=spacing) == pytest.approx(1.0 * k)
    assert metrics.hausdorff_distance(a, along_z, spacing=spacing, percentile=100) == 3.0 * k
    # the same voxels, the same Dice; the surface distances see the millimetres
    assert metrics.dice(a, along_z) == metrics.dice(a, along_x) == pytest.approx(1 - k / 6)
    assert (metrics.average_surface_distance(a, along_z, spacing=spacing)
            > metrics.average_surface_distance(a, along_x, spacing=spacing))
    # a square in 2D, spacing (0.5, 2): a shift of k rows is 0.5 k mm
    sq = a[5]
    assert metrics.hausdorff_distance(sq, np.roll(sq, k, 0), spacing=(0.5, 2.0)) == 0.5 * k


def test_surface_at_the_image_border_counts_as_boundary():
    full = np.ones((5, 6), bool)
    assert metrics.surface(full).sum() == 2 * 5 + 2 * 6 - 4
    assert metrics.hausdorff_distance(full, full) == 0.0


def test_matches_monai_when_installed():
    monai_metrics = pytest.importorskip(
        "monai.metrics", reason="MONAI is not installed (test-only reference, not a dependency)")
    torch = pytest.importorskip("torch")
    if "spacing" not in inspect.signature(monai_metrics.compute_hausdorff_distance).parameters:
        pytest.skip("this MONAI has no spacing= in compute_hausdorff_distance (MONAI < 1.3)")
    shape, spacing = (9, 10, 11), (3.0, 0.7, 1.1)
    t = np.stack([~(_blobs(shape, 5) | _blobs(shape, 6)), _blobs(shape, 5), _blobs(shape, 6) & ~_blobs(shape, 5)])
    p = np.stack([~(_blobs(shape, 7) | _blobs(shape, 8)), _blobs(shape, 7), _blobs(shape, 8) & ~_blobs(shape, 7)])
    y, y_pred = torch.as_tensor(t[None].astype(np.float32)), torch.as_tensor(p[None].astype(np.float32))
    hd = monai_metrics.compute_hausdorff_distance(y_pred, y, percentile=95, spacing=spacing).numpy()[0]
    asd = monai_metrics.compute_average_surface_distance(y_pred, y, symmetric=True, spacing=spacing).numpy()[0]
    for c in (1, 2):
        assert metrics.hausdorff_distance(t[c], p[c], spacing=spacing) == pytest.approx(hd[c - 1], rel=1e-5)
        assert metrics.average_surface_distance(t[c], p[c], spacing=spacing) == pytest.approx(asd[c - 1], rel=1e-5)


def test_empty_masks_give_nan_with_a_flag():
    some = np.zeros((6, 7, 8), int)
    some[2:4, 2:5, 3:6] = 1
    none = np.zeros_like(some)
    rows = {name: metrics.case_metrics(t, p, 2, spacing=(2, 1, 1))[0]
            for name, (t, p) in {"both": (none, none), "pred": (some, none), "ref": (none, some),
                                 "ok": (some, some)}.items()}
    assert rows["both"]["flag"] == "both empty" and rows["both"]["dice"] == rows["both"]["iou"] == 1.0
    assert rows["pred"]["flag"] == "empty prediction" and rows["pred"]["dice"] == 0.0
    assert rows["ref"]["flag"] == "empty reference" and rows["ref"]["iou"] == 0.0
    for name in ("both", "pred", "ref"):
        assert np.isnan(rows[name]["hd95_mm"]) and np.isnan(rows[name]["asd_mm"])
    assert rows["ok"] == {"class": 1, "dice": 1.0, "iou": 1.0, "hd95_mm": 0.0, "asd_mm": 0.0, "flag": ""}
    assert np.isnan(metrics.hausdorff_distance(some, none)) and metrics.empty_flag(none, some) == "empty reference"


def test_report_means_over_cases_with_cis_and_counts():
    rng = np.random.default_rng(6)
    cases, spacing = [], (2.0, 1.0, 0.5)
    for i in range(6):
        t = np.where(_blobs((8, 10, 10), 10 + i), 1, np.where(_blobs((8, 10, 10), 20 + i, 0.7), 2, 0))
        p = np.where(rng.uniform(size=t.shape) < 0.1, rng.integers(0, 3, t.shape), t)
        cases.append((t, p))
    cases.append((np.zeros((8, 10, 10), int), np.zeros((8, 10, 10), int)))  # nothing anywhere
    report = metrics.segmentation_report(cases, 3, spacing=spacing, n_boot=200)
    assert report["n_cases"] == 7 and len(report["cases"]) == 14
    assert [r["case"] for r in report["cases"][:2]] == ["case0", "case0"]
    for c in (1, 2):
        mine = [r for r in report["cases"] if r["class"] == c]
        for key in ("dice", "iou", "hd95_mm", "asd_mm"):
            values = np.array([r[key] for r in mine])
            m = report["classes"][c][key]
            assert m["value"] == pytest.approx(np.nanmean(values))
            assert m["low"] <= m["value"] <= m["high"] and m["level"] == 0.95
        assert report["classes"][c]["hd95_mm"]["n"] == 6 and report["classes"][c]["dice"]["n"] == 7
        assert report["classes"][c]["flags"] == {"both empty": 1}
        t, p = cases[0]
        assert mine[0]["hd95_mm"] == pytest.approx(_reference(t == c, p == c, spacing)[0])
    text = metrics.format_segmentation_report(report)
    assert "hd95_mm" in text and "1 both empty" in text
    # a case with its own spacing
    t, p = cases[0]
    own = metrics.segmentation_report([(t, p, (1.0, 1.0, 1.0))], 3, spacing=spacing, n_boot=10)
    assert own["cases"][0]["hd95_mm"] == pytest.approx(_reference(t == 1, p == 1, (1, 1, 1))[0])


def test_bad_input_names_the_cause():
    t = np.zeros((4, 5, 6), int)
    with pytest.raises(DataError, match=r"label values \[3\] are outside the declared classes 0..2"):
        metrics.case_metrics(t, t + 3, 3)
    with pytest.raises(DataError, match="shapes"):
        metrics.case_metrics(t, t[:3], 3)
    with pytest.raises(DataError, match="integer classes"):
        metrics.case_metrics(t, t + 0.5, 3)
    with pytest.raises(InvalidArgumentError, match=r"spacing=\(1, 2\)"):
        metrics.hausdorff_distance(t, t, spacing=(1, 2))
    with pytest.raises(InvalidArgumentError, match="spacing"):
        metrics.hausdorff_distance(t, t, spacing=(1, 0, 1))
    with pytest.raises(InvalidArgumentError, match="percentile"):
        metrics.hausdorff_distance(t, t, percentile=101)
    with pytest.raises(InvalidArgumentError, match="num_classes"):
        metrics.case_metrics(t, t, 1)
    with pytest.raises(DataError, match="0/1"):
        metrics.hausdorff_distance(t + 2, t)
    with pytest.raises(DataError, match="one name per case"):
        metrics.segmentation_report([(t, t)], 2, names=["a", "b"])
