"""Evaluation metrics in numpy (scipy for surface distances), importable without TensorFlow.

``zoo.metrics.classification``: ROC AUC, sensitivity/specificity, balanced accuracy,
calibration, bootstrap confidence intervals, per-patient aggregation and the patient-wise
validation split. ``zoo.metrics.segmentation``: Dice, IoU, HD95 and average surface distance in
millimetres, per class and per case, and the segmentation report. Every name is re-exported
here, so ``zoo.metrics.dice`` and ``from zoo.metrics import roc_auc`` work as before the split.
"""

from __future__ import annotations

from zoo.metrics.classification import (
    aggregate_by_group,
    balanced_accuracy,
    bootstrap_ci,
    calibration,
    choose_threshold,
    classification_report,
    format_report,
    roc_auc,
    sensitivity_specificity,
    validation_split,
)
from zoo.metrics.segmentation import (
    average_surface_distance,
    case_metrics,
    dice,
    empty_flag,
    format_segmentation_report,
    hausdorff_distance,
    iou,
    jaccard,
    segmentation_report,
    summarize_cases,
    surface,
    surface_distances,
)

__all__ = [
    "aggregate_by_group",
    "average_surface_distance",
    "balanced_accuracy",
    "bootstrap_ci",
    "calibration",
    "case_metrics",
    "choose_threshold",
    "classification_report",
    "dice",
    "empty_flag",
    "format_report",
    "format_segmentation_report",
    "hausdorff_distance",
    "iou",
    "jaccard",
    "roc_auc",
    "segmentation_report",
    "sensitivity_specificity",
    "summarize_cases",
    "surface",
    "surface_distances",
    "validation_split",
]
