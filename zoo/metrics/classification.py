"""Clinical evaluation metrics of classifiers, in numpy: ROC AUC, sensitivity/specificity, balanced
accuracy, calibration, bootstrap confidence intervals, and a validation split that keeps patients
apart.

Per patient: when ``groups`` (a patient id per image) is given, images are first aggregated to
one row per patient, then every metric and every bootstrap resample works on patients, so a
patient with 40 slices counts once, like one with 2. The rule (``aggregate_by_group``): the
patient's score is the *mean* of its images' scores (``aggregate="max"`` takes the largest,
for "any slice shows the finding"); its label is the *largest* label of its images for binary
and multi-label targets (a patient is positive when any image is) and must be the same on all
its images for single-label multi-class targets.

No TensorFlow here: these functions take arrays (a model's probabilities) and are the
reference the engine's streaming metrics are checked against.
"""

from __future__ import annotations

import numpy as np

from zoo.errors import DataError, InvalidArgumentError


def _vector(values, name: str, dtype=np.float64) -> np.ndarray:
    try:
        a = np.asarray(values, dtype=dtype)
    except (TypeError, ValueError) as err:
        raise DataError(
            f"{name}: cannot be read as numbers ({err}); give a numeric array."
        ) from None
    if a.size == 0:
        raise DataError(f"{name} is empty; give at least one example.")
    if not np.all(np.isfinite(a)):
        raise DataError(f"{name} holds NaN or infinity; drop or fix those examples first.")
    return a


def _binary_labels(y_true, name: str = "y_true") -> np.ndarray:
    y = _vector(y_true, name)
    if not np.isin(y, (0, 1)).all():
        raise DataError(
            f"{name}: binary labels must be 0 or 1 (found {np.unique(y)[:5].tolist()}); for "
            "several classes give one-vs-rest labels or use roc_auc with (N, K) scores."
        )
    return y.astype(np.int64)


def _check_groups(groups, n: int) -> np.ndarray:
    g = np.asarray(groups)
    if g.ndim != 1 or len(g) != n:
        raise DataError(
            f"groups has {g.shape[0] if g.ndim else 0} entries for {n} examples (shape {g.shape}); "
            "give one patient id per example, in the same order."
        )
    return g


def aggregate_by_group(y_true, y_score, groups, aggregate: str = "mean"):
    """(labels, scores, group ids) with one row per group: the module docstring's rule.

    ``y_true`` (N,) or (N, K) multi-label 0/1; ``y_score`` (N,) or (N, K). Returns arrays in the
    order of the sorted unique group ids.
    """
    if aggregate not in ("mean", "max"):
        raise InvalidArgumentError(
            f"aggregate={aggregate!r}: use 'mean' (mean score per patient) or 'max'."
        )
    y, s = np.asarray(y_true), np.asarray(y_score, np.float64)
    g = _check_groups(groups, len(y))
    if len(s) != len(y):
        raise DataError(f"{len(y)} labels but {len(s)} scores; give one score (row) per label.")
    ids, inverse = np.unique(g, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    starts = np.r_[0, np.flatnonzero(np.diff(inverse[order])) + 1]
    reduce = np.maximum if aggregate == "max" else np.add
    scores = reduce.reduceat(s[order], starts, axis=0)
    if aggregate == "mean":
        counts = np.bincount(inverse).astype(np.float64)
        scores = scores / (counts if scores.ndim == 1 else counts[:, None])
    labels = np.maximum.reduceat(y[order], starts, axis=0)
    multiclass = s.ndim == 2 and y.ndim == 1
    if multiclass and not np.array_equal(np.minimum.reduceat(y[order], starts), labels):
        raise DataError(
            "groups: a patient has images of different classes; per-patient multi-class metrics "
            "need one class per patient (evaluate per image by leaving groups=None)."
        )
    return labels, scores, ids


def _rank_auc(y: np.ndarray, s: np.ndarray) -> float:
    """Area under the ROC curve as the Mann-Whitney U statistic (ties count one half)."""
    pos = y == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), np.float64)
    sorted_s = s[order]
    # average ranks over ties
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_s)) + 1]
    ends = np.r_[starts[1:], len(s)]
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_auc(
    y_true, y_score, groups=None, *, aggregate: str = "mean", average: str | None = "macro"
):
    """ROC AUC: binary (N,) scores; multi-label (N, K) 0/1 labels and scores (one AUC per finding);
    multi-class (N,) class indices with (N, K) probabilities (one-vs-rest per class).

    ``average="macro"`` returns the mean over findings/classes (classes with only one kind of
    label are left out, as they have no AUC); ``None`` returns the per-column array (NaN where
    undefined). Binary input returns a float (NaN when only one class is present).
    """
    y, s = np.asarray(y_true), _vector(y_score, "y_score")
    if groups is not None:
        y, s, _ = aggregate_by_group(y, s, groups, aggregate)
    if s.ndim == 1:
        return _rank_auc(_binary_labels(y), s)
    if y.ndim == 1:  # multi-class: one-vs-rest
        y = _vector(y, "y_true").astype(np.int64)
        if y.min() < 0 or y.max() >= s.shape[1]:
            raise DataError(
                f"y_true: class indices up to {y.max()} for scores with {s.shape[1]} columns."
            )
        y = np.eye(s.shape[1], dtype=np.int64)[y]
    if y.shape != s.shape:
        raise DataError(
            f"y_true of shape {y.shape} for scores of shape {s.shape}; give one 0/1 label per "
            "score."
        )
    per = np.array([_rank_auc(_binary_labels(y[:, k]), s[:, k]) for k in range(s.shape[1])])
    if average is None:
        return per
    if np.isnan(per).all():
        return float("nan")
    return float(np.nanmean(per))


def sensitivity_specificity(y_true, y_score, threshold: float = 0.5, groups=None, *,
                            aggregate: str = "mean") -> tuple[float, float]:
    """(sensitivity, specificity) of the rule ``score >= threshold`` (NaN where undefined)."""
    y, s = np.asarray(y_true), _vector(y_score, "y_score")
    if groups is not None:
        y, s, _ = aggregate_by_group(y, s, groups, aggregate)
    y = _binary_labels(y)
    pred = s >= threshold
    pos, neg = y == 1, y == 0
    sens = float(pred[pos].mean()) if pos.any() else float("nan")
    spec = float((~pred[neg]).mean()) if neg.any() else float("nan")
    return sens, spec


def choose_threshold(y_true, y_score, *, sensitivity: float | None = None, groups=None,
                     aggregate: str = "mean") -> float:
    """An operating point chosen on (validation) data: the largest threshold reaching the given
    ``sensitivity``, or, without one, the threshold maximising Youden's J (sens + spec - 1)."""
    y, s = np.asarray(y_true), _vector(y_score, "y_score")
    if groups is not None:
        y, s, _ = aggregate_by_group(y, s, groups, aggregate)
    y = _binary_labels(y)
    if y.min() == y.max():
        raise DataError(
            "choose_threshold: the labels hold one class only; an operating point needs both."
        )
    candidates = np.unique(s)[::-1]
    tp = np.array([(s[y == 1] >= t).mean() for t in candidates])
    if sensitivity is not None:
        if not 0 < sensitivity <= 1:
            raise InvalidArgumentError(f"sensitivity={sensitivity}: give a target in (0, 1].")
        return float(candidates[np.flatnonzero(tp >= sensitivity)[0]])
    tn = np.array([(s[y == 0] < t).mean() for t in candidates])
    return float(candidates[int(np.argmax(tp + tn))])


def balanced_accuracy(y_true, y_pred) -> float:
    """Mean recall over the classes present in ``y_true`` (scikit-learn's rule)."""
    y, p = _vector(y_true, "y_true").astype(np.int64), _vector(y_pred, "y_pred").astype(np.int64)
    if y.shape != p.shape:
        raise DataError(
            f"y_true {y.shape} and y_pred {p.shape}: give one predicted class per label."
        )
    classes = np.unique(y)
    return float(np.mean([(p[y == c] == c).mean() for c in classes]))


def calibration(y_true, y_prob, bins: int = 10, groups=None, *, aggregate: str = "mean") -> dict:
    """Expected calibration error over ``bins`` equal-width bins, and the per-bin table.

    Binary (N,) probabilities of the positive class: each bin compares the mean probability
    with the fraction of positives (scikit-learn's ``calibration_curve``, strategy "uniform").
    Multi-class (N, K): the top-label confidence against accuracy. ECE = sum over bins of
    (bin count / N) * |confidence - observed|.
    """
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise InvalidArgumentError(f"bins={bins!r}: give a positive integer (10 is usual).")
    y, p = np.asarray(y_true), _vector(y_prob, "y_prob")
    if groups is not None:
        y, p, _ = aggregate_by_group(y, p, groups, aggregate)
    if p.ndim == 2:
        y = _vector(y, "y_true").astype(np.int64)
        conf, observed = p.max(axis=1), (p.argmax(axis=1) == y).astype(np.float64)
    else:
        conf, observed = p, _binary_labels(y).astype(np.float64)
    if conf.min() < 0 or conf.max() > 1:
        raise DataError("y_prob: probabilities must lie in [0, 1]; apply a softmax/sigmoid first.")
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.searchsorted(edges[1:-1], conf)  # bins closed on the right, as scikit-learn's
    counts = np.bincount(which, minlength=bins)
    mean_conf = np.bincount(which, conf, bins) / np.maximum(counts, 1)
    frac = np.bincount(which, observed, bins) / np.maximum(counts, 1)
    ece = float(np.sum(counts / len(conf) * np.abs(mean_conf - frac)))
    return {"ece": ece, "edges": edges.tolist(), "count": counts.tolist(),
            "confidence": np.where(counts > 0, mean_conf, np.nan).tolist(),
            "observed": np.where(counts > 0, frac, np.nan).tolist()}


def bootstrap_ci(
    metric, *arrays, groups=None, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> dict:
    """Percentile bootstrap confidence interval of ``metric(*arrays)``.

    Rows are resampled with replacement (all arrays with the same indices); with ``groups``,
    whole groups are resampled (a cluster bootstrap: a patient's images stay together).
    Resamples where the metric is undefined (NaN, e.g. an AUC drawn with one class) are
    dropped and counted. Returns {"value", "low", "high", "level", "n_boot", "dropped"}.
    """
    if not 0 < level < 1:
        raise InvalidArgumentError(f"level={level}: give a coverage in (0, 1), e.g. 0.95.")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 1:
        raise InvalidArgumentError(
            f"n_boot={n_boot!r}: give a positive number of resamples (1000 is usual)."
        )
    arrays = [np.asarray(a) for a in arrays]
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise DataError(
            f"bootstrap_ci: arrays of lengths {[len(a) for a in arrays]}; give one row per example "
            "in each."
        )
    value = float(metric(*arrays))
    rng = np.random.default_rng(seed)
    if groups is None:
        draws = (rng.integers(0, n, n) for _ in range(n_boot))
    else:
        _, inverse = np.unique(_check_groups(groups, n), return_inverse=True)
        members = [np.flatnonzero(inverse == k) for k in range(inverse.max() + 1)]
        draws = (np.concatenate([members[k] for k in rng.integers(0, len(members), len(members))])
                 for _ in range(n_boot))
    stats = np.array([float(metric(*(a[idx] for a in arrays))) for idx in draws])
    kept = stats[np.isfinite(stats)]
    alpha = (1 - level) / 2
    low, high = np.quantile(kept, [alpha, 1 - alpha]).tolist() if len(kept) else (float("nan"),) * 2
    return {"value": value, "low": low, "high": high, "level": level, "n_boot": n_boot,
            "dropped": int(n_boot - len(kept))}


def classification_report(
    y_true,
    y_prob,
    groups=None,
    *,
    threshold: float = 0.5,
    aggregate: str = "mean",
    bins: int = 10,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict:
    """The clinical metrics of a classifier's probabilities, each with a bootstrap CI.

    Binary (N,) or (N, 2) probabilities: AUC, sensitivity and specificity at ``threshold``,
    balanced accuracy, ECE. Multi-class (N, K): one-vs-rest macro AUC, balanced accuracy of the
    arg-max, top-label ECE. Multi-label (N, K) with (N, K) 0/1 labels: per-finding AUC and its mean.
    With ``groups``, everything is per patient (module docstring) and the bootstrap resamples
    patients.
    """
    y, p = np.asarray(y_true), _vector(y_prob, "y_prob")
    if groups is not None:
        y, p, _ = aggregate_by_group(y, p, groups, aggregate)
    if p.ndim == 2 and p.shape[1] == 2 and y.ndim == 1:
        p = p[:, 1]
    out: dict = {"n": int(len(y)), "unit": "patient" if groups is not None else "image",
                 "aggregate": aggregate if groups is not None else None, "threshold": None}

    def ci(fn, *arrays):
        return bootstrap_ci(fn, *arrays, n_boot=n_boot, level=level, seed=seed)

    if p.ndim == 1:
        y = _binary_labels(y)
        out["threshold"] = threshold
        out["auc"] = ci(roc_auc, y, p)
        out["sensitivity"] = ci(lambda a, b: sensitivity_specificity(a, b, threshold)[0], y, p)
        out["specificity"] = ci(lambda a, b: sensitivity_specificity(a, b, threshold)[1], y, p)
        out["balanced_accuracy"] = ci(lambda a, b: balanced_accuracy(a, b >= threshold), y, p)
        out["ece"] = ci(lambda a, b: calibration(a, b, bins)["ece"], y, p)
        out["calibration"] = calibration(y, p, bins)
    elif y.ndim == 2:
        out["auc"] = ci(roc_auc, y, p)
        out["auc_per_finding"] = roc_auc(y, p, average=None).tolist()
    else:
        out["auc"] = ci(roc_auc, y, p)
        out["balanced_accuracy"] = ci(lambda a, b: balanced_accuracy(a, b.argmax(1)), y, p)
        out["ece"] = ci(lambda a, b: calibration(a, b, bins)["ece"], y, p)
        out["calibration"] = calibration(y, p, bins)
    return out


def validation_split(
    n: int, fraction: float = 0.2, *, groups=None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, validation indices) of ``n`` examples, seeded.

    With ``groups`` (one patient id per example), whole groups go to one side: groups are
    shuffled and taken into validation until it holds at least ``fraction`` of the examples
    (at least one group, and at least one group is left for training), so no patient is in
    both sets. Without groups, a seeded ``fraction`` of the examples (at least one).
    """
    if not 0 < fraction < 1:
        raise InvalidArgumentError(f"validation_split={fraction}: must be in (0, 1).")
    rng = np.random.default_rng(seed)
    if groups is None:
        order = rng.permutation(n)
        n_val = max(1, int(round(fraction * n)))
        if n_val >= n:
            raise DataError(
                f"{n} examples: too few to hold out a validation set; give validation data."
            )
        return order[n_val:], order[:n_val]
    g = _check_groups(groups, n)
    ids, inverse = np.unique(g, return_inverse=True)
    if len(ids) < 2:
        raise DataError(
            f"groups: all {n} examples belong to one patient; a patient-wise validation split "
            "needs at least two patients (give validation data, or check the patient column)."
        )
    counts = np.bincount(inverse)
    order = rng.permutation(len(ids))
    taken = np.cumsum(counts[order])
    k = int(np.searchsorted(taken, fraction * n)) + 1  # groups until validation holds >= fraction
    k = min(max(k, 1), len(ids) - 1)
    val = np.isin(inverse, order[:k])
    return np.flatnonzero(~val), np.flatnonzero(val)


def format_report(report: dict) -> str:
    """classification_report's result as a few readable lines (value and CI per metric)."""
    unit = report.get("unit", "image")
    lines = [
        f"{report['n']} {unit}s"
        + (
            f" (score per patient: {report['aggregate']} over its images; a patient is positive "
            "when any image is)"
            if unit == "patient"
            else ""
        )
    ]
    for key in ("auc", "sensitivity", "specificity", "balanced_accuracy", "ece"):
        if key in report:
            m = report[key]
            lines.append(
                f"{key:18s} {m['value']:.3f}  ({100 * m['level']:.0f}% CI {m['low']:.3f} - "
                f"{m['high']:.3f})"
            )
    if report.get("threshold") is not None:
        lines.append(f"{'operating point':18s} score >= {report['threshold']:g}")
    if "auc_per_finding" in report:
        lines.append(
            "AUC per finding    " + ", ".join(f"{v:.3f}" for v in report["auc_per_finding"])
        )
    return "\n".join(lines)
