"""Semantic-segmentation metrics from a confusion matrix, as mmsegmentation computes them.

The confusion matrix ``mat`` of shape (K, K) counts pixels by ground truth (rows)
and prediction (columns); pixels whose label is ``ignore_index`` are never counted.
From it, per class ``k`` (matching ``mmseg.evaluation.metrics.IoUMetric`` 1.2.2)::

    intersect[k] = mat[k, k]
    gt[k]        = mat[k, :].sum()          # area_label
    pred[k]      = mat[:, k].sum()          # area_pred_label
    union[k]     = gt[k] + pred[k] - intersect[k]
    IoU[k]       = intersect[k] / union[k]  # nan only if k is absent from GT *and* prediction
    Acc[k]       = intersect[k] / gt[k]     # nan if k is absent from GT
    aAcc         = intersect.sum() / gt.sum()
    mIoU, mAcc   = nanmean(IoU), nanmean(Acc)

So a class that is predicted but absent from the ground truth has IoU 0 and counts
in mIoU, exactly like mmseg. Counts are exact int64 (mmseg sums float32 histograms,
which can differ in the 7th significant digit on a whole data set).

Units: every metric is reported as a **percentage** (0-100) kept at full float64
precision; mmseg prints the same percentages rounded to 2 decimals.
"""

from __future__ import annotations

import csv
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from mpm.io import atomic_path
from mpm.errors import DatasetError

ArrayLike = np.ndarray | torch.Tensor

__all__ = [
    "ConfusionMatrix",
    "SegMetrics",
    "confusion_matrix",
    "metrics_from_confusion",
    "write_per_class_csv",
]


def _check_int(x: ArrayLike, what: str) -> None:
    dtype = x.dtype
    is_int = (
        dtype in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
        if isinstance(x, torch.Tensor)
        else np.issubdtype(dtype, np.integer)
    )
    if not is_int:
        raise TypeError(f"{what} must hold integers, got dtype {dtype}")


def confusion_matrix(
    pred: ArrayLike,
    label: ArrayLike,
    num_classes: int,
    ignore_index: int = 255,
    strict: bool = True,
    name: str | None = None,
) -> np.ndarray:
    """Count pixels by (ground truth, prediction) with one bincount.

    Args:
        pred: (...) integer predictions in ``[0, num_classes)``; torch (any device) or numpy.
        label: (...) integer labels, same shape; ``ignore_index`` pixels are skipped.
        num_classes: K.
        ignore_index: label value never counted.
        strict: if True a label outside ``[0, K)`` that is not ``ignore_index`` raises
            :class:`~mpm.errors.DatasetError` (a missing ``reduce_zero_label`` shows up
            this way); if False such pixels are skipped like ignored ones.
        name: what the pair is (an image file name), used in error messages.
    Returns:
        (K, K) int64 numpy array, rows = ground truth, columns = prediction.
    """
    where = f" in {name}" if name else ""
    if tuple(pred.shape) != tuple(label.shape):
        raise ValueError(f"pred shape {tuple(pred.shape)} != label shape {tuple(label.shape)}{where}")
    _check_int(pred, "pred")
    _check_int(label, "label")
    k = int(num_classes)
    if isinstance(pred, torch.Tensor) or isinstance(label, torch.Tensor):
        device = pred.device if isinstance(pred, torch.Tensor) else label.device
        p = torch.as_tensor(pred, device=device).reshape(-1).long()
        t = torch.as_tensor(label, device=device).reshape(-1).long()
        valid = (t >= 0) & (t < k)
        if strict:
            bad = ~valid & (t != ignore_index)
            if bool(bad.any()):
                raise DatasetError(
                    f"label values {torch.unique(t[bad])[:10].tolist()} outside [0, {k}) "
                    f"and not ignore_index={ignore_index}{where}"
                )
        p, t = p[valid], t[valid]
        if p.numel() and (int(p.min()) < 0 or int(p.max()) >= k):
            raise ValueError(f"prediction values outside [0, {k}){where}")
        counts = torch.bincount(t * k + p, minlength=k * k)
        return counts.cpu().numpy().astype(np.int64).reshape(k, k)
    p = np.asarray(pred).reshape(-1).astype(np.int64)
    t = np.asarray(label).reshape(-1).astype(np.int64)
    valid = (t >= 0) & (t < k)
    if strict:
        bad = ~valid & (t != ignore_index)
        if bad.any():
            raise DatasetError(
                f"label values {np.unique(t[bad])[:10].tolist()} outside [0, {k}) "
                f"and not ignore_index={ignore_index}{where}"
            )
    p, t = p[valid], t[valid]
    if p.size and (p.min() < 0 or p.max() >= k):
        raise ValueError(f"prediction values outside [0, {k}){where}")
    return np.bincount(t * k + p, minlength=k * k).astype(np.int64).reshape(k, k)


@dataclass(frozen=True)
class SegMetrics:
    """Metrics of one evaluation; all rates are percentages (0-100), full precision.

    Attributes:
        aAcc: overall pixel accuracy.
        mIoU: nanmean of ``iou``.
        mAcc: nanmean of ``acc``.
        iou: (K,) per-class IoU, nan where the class is absent from GT and prediction.
        acc: (K,) per-class accuracy (recall), nan where the class is absent from GT.
        intersect, union, gt_pixels, pred_pixels: (K,) int64 pixel counts.
    """

    aAcc: float
    mIoU: float
    mAcc: float
    iou: np.ndarray
    acc: np.ndarray
    intersect: np.ndarray
    union: np.ndarray
    gt_pixels: np.ndarray
    pred_pixels: np.ndarray

    @property
    def num_classes(self) -> int:
        return int(self.iou.shape[0])

    def summary(self) -> dict[str, float]:
        """``{"mIoU", "aAcc", "mAcc"}`` as percentages (nan stays nan)."""
        return {"mIoU": self.mIoU, "aAcc": self.aAcc, "mAcc": self.mAcc}

    def to_dict(self, class_names: Sequence[str] | None = None) -> dict[str, Any]:
        """A JSON-safe dict: summary plus per-class lists; nan becomes ``None``."""

        def clean(v: float) -> float | None:
            return None if math.isnan(v) else float(v)

        out: dict[str, Any] = {k: clean(v) for k, v in self.summary().items()}
        out["num_classes"] = self.num_classes
        if class_names is not None:
            out["class_names"] = list(class_names)
        out["IoU"] = [clean(v) for v in self.iou.tolist()]
        out["Acc"] = [clean(v) for v in self.acc.tolist()]
        out["gt_pixels"] = [int(v) for v in self.gt_pixels.tolist()]
        out["pred_pixels"] = [int(v) for v in self.pred_pixels.tolist()]
        return out


def _nanmean(x: np.ndarray) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-nan -> nan, like mmseg
        return float(np.nanmean(x))


def metrics_from_confusion(mat: np.ndarray) -> SegMetrics:
    """mIoU/aAcc/mAcc and per-class IoU/Acc from a (K, K) confusion matrix (GT rows)."""
    mat = np.asarray(mat, dtype=np.int64)
    if mat.ndim != 2 or mat.shape[0] != mat.shape[1]:
        raise ValueError(f"confusion matrix must be (K, K), got {mat.shape}")
    intersect = np.diag(mat).copy()
    gt = mat.sum(axis=1)
    pred = mat.sum(axis=0)
    union = gt + pred - intersect
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = intersect / union.astype(np.float64) * 100.0
        acc = intersect / gt.astype(np.float64) * 100.0
        total = gt.sum()
        a_acc = float(intersect.sum() / total * 100.0) if total else float("nan")
    return SegMetrics(
        aAcc=a_acc,
        mIoU=_nanmean(iou),
        mAcc=_nanmean(acc),
        iou=iou,
        acc=acc,
        intersect=intersect,
        union=union,
        gt_pixels=gt,
        pred_pixels=pred,
    )


class ConfusionMatrix:
    """Accumulates a (K, K) int64 confusion matrix over images.

    Example::

        cm = ConfusionMatrix(150)
        for pred, label in results:
            cm.update(pred, label)
        m = cm.compute()   # m.mIoU in percent
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, strict: bool = True) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.strict = strict
        self.mat = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)
        self.num_images = 0

    def update(
        self, pred: ArrayLike, label: ArrayLike, name: str | None = None
    ) -> "ConfusionMatrix":
        """Add one prediction/label pair (any equal shapes, torch or numpy)."""
        self.mat += confusion_matrix(
            pred, label, self.num_classes, self.ignore_index, strict=self.strict, name=name
        )
        self.num_images += 1
        return self

    def merge(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        """Add the counts of another accumulator (e.g. from another worker) in place."""
        if other.num_classes != self.num_classes or other.ignore_index != self.ignore_index:
            raise ValueError(
                f"cannot merge ConfusionMatrix(K={other.num_classes}, ignore={other.ignore_index}) "
                f"into ConfusionMatrix(K={self.num_classes}, ignore={self.ignore_index})"
            )
        self.mat += other.mat
        self.num_images += other.num_images
        return self

    def reset(self) -> None:
        self.mat[:] = 0
        self.num_images = 0

    def compute(self) -> SegMetrics:
        return metrics_from_confusion(self.mat)

    def __repr__(self) -> str:
        return (
            f"ConfusionMatrix(num_classes={self.num_classes}, ignore_index={self.ignore_index}, "
            f"images={self.num_images}, pixels={int(self.mat.sum())})"
        )


def _fmt(v: float) -> str:
    return "nan" if math.isnan(v) else repr(float(v))


def write_per_class_csv(
    path: str | os.PathLike[str],
    metrics: SegMetrics,
    class_names: Sequence[str] | None = None,
) -> Path:
    """Write one row per class atomically (temp file in the same folder + ``os.replace``).

    Columns: ``class_index, class_name, IoU, Acc, gt_pixels, pred_pixels``; IoU and Acc
    are percentages at full precision (``nan`` where undefined).
    """
    path = Path(path)
    k = metrics.num_classes
    if class_names is None:
        class_names = [str(i) for i in range(k)]
    if len(class_names) != k:
        raise ValueError(f"{len(class_names)} class names for {k} classes")
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["class_index", "class_name", "IoU", "Acc", "gt_pixels", "pred_pixels"])
        for i in range(k):
            w.writerow([i, class_names[i], _fmt(metrics.iou[i]), _fmt(metrics.acc[i]),
                        int(metrics.gt_pixels[i]), int(metrics.pred_pixels[i])])
    return path
