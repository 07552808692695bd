"""Evaluation: the mmseg single-scale sliding-window protocol and segmentation metrics.

- :mod:`mpm.evaluation.sliding`  keep-ratio resize, normalisation, sliding-window
  inference and :func:`predict` (prediction at the original image size)
- :mod:`mpm.evaluation.metrics`  confusion matrix, mIoU / aAcc / mAcc in percent,
  per-class CSV
- :mod:`mpm.evaluation.evaluate`  :func:`evaluate` a model on a prepared split with a merge
  method: metrics, tokens left per merge step, GFLOPs, the ``mpm.eval/1`` record
- :mod:`mpm.evaluation.train_demo`  :func:`train_demo`, the offline demo Seg-T/16 trained on
  the synthetic set
"""

from mpm.evaluation.metrics import (
    ConfusionMatrix,
    SegMetrics,
    confusion_matrix,
    metrics_from_confusion,
    write_per_class_csv,
)
from mpm.evaluation.evaluate import (
    EvalProtocol,
    EvalResult,
    checkpoint_info,
    eval_protocol,
    evaluate,
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
from mpm.evaluation.train_demo import TrainDemoConfig, train_demo

__all__ = [
    "EvalProtocol",
    "EvalResult",
    "TrainDemoConfig",
    "checkpoint_info",
    "eval_protocol",
    "evaluate",
    "train_demo",
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
