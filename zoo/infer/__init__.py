"""Inference: engines (TensorFlow, ONNX Runtime, OpenVINO), a checked predictor, sliding windows.

``zoo.compile_for_inference(model)`` returns a :class:`~zoo.infer.predictor.Predictor` on the
fastest engine that agrees with the Keras fp32 model; ``zoo.infer.sliding_window`` runs a dense
model over images and volumes larger than its window; ``zoo.infer.segment`` adds test-time flips,
label maps and largest-component post-processing on top of it.
"""

from __future__ import annotations

from zoo.infer.engines import ENGINES, PRECISIONS
from zoo.infer.predictor import Agreement, Predictor, agreement, compile_for_inference
from zoo.infer.segment import Segmentation, keep_largest_component, segment
from zoo.infer.sliding import sliding_window

__all__ = [
    "ENGINES",
    "PRECISIONS",
    "Agreement",
    "Predictor",
    "Segmentation",
    "agreement",
    "compile_for_inference",
    "keep_largest_component",
    "segment",
    "sliding_window",
]
