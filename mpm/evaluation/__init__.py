"""Evaluation: the mmseg single-scale sliding-window protocol and segmentation metrics.

- :mod:`mpm.evaluation.sliding`  keep-ratio resize, normalisation, sliding-window
  inference and :func:`predict` (prediction at the original image size)
- :mod:`mpm.evaluation.metrics`  confusion matrix, mIoU / aAcc / mAcc in percent,
  per-class CSV
"""

from mpm.evaluation.metrics import (
    ConfusionMatrix,
    SegMetrics,
    confusion_matrix,
    metrics_from_confusion,
    write_per_class_csv,
)
from mpm.evaluation.sliding import (
    normalize,
    predict,
    rescale_size,
    resize_keep_ratio,
    resize_logits,
    slide_inference,
    slide_windows,
)

__all__ = [
    "ConfusionMatrix",
    "SegMetrics",
    "confusion_matrix",
    "metrics_from_confusion",
    "write_per_class_csv",
    "normalize",
    "predict",
    "rescale_size",
    "resize_keep_ratio",
    "resize_logits",
    "slide_inference",
    "slide_windows",
]
