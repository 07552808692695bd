"""Confusion matrix and mIoU/aAcc/mAcc, by hand and against mmseg's IoUMetric."""

from __future__ import annotations

import csv
import math
import os

import numpy as np
import pytest
import torch

from mpm.errors import DatasetError
from mpm.evaluation.metrics import (
    ConfusionMatrix,
    confusion_matrix,
    metrics_from_confusion,
    write_per_class_csv,
)

# K = 3; the 255 pixel (prediction 2) must not count anywhere.
LABEL = np.array([[0, 0, 1, 1], [2, 2, 255, 0]], dtype=np.uint8)
PRED = np.array([[0, 1, 1, 1], [2, 0, 2, 0]], dtype=np.int64)
# (gt, pred) pairs: (0,0) (0,1) (1,1) (1,1) (2,2) (2,0) (0,0)
HAND_MAT = np.array(
    [
        [2, 1, 0],  # gt 0
        [0, 2, 0],  # gt 1
        [1, 0, 1],  # gt 2
    ]
)
# intersect [2,2,1]; gt [3,2,2]; pred [3,3,1]; union [4,3,2]


def test_hand_computed_confusion_and_metrics():
    mat = confusion_matrix(PRED, LABEL, 3)
    np.testing.assert_array_equal(mat, HAND_MAT)
    m = metrics_from_confusion(mat)
    np.testing.assert_allclose(m.iou, [50.0, 200 / 3, 50.0])
    np.testing.assert_allclose(m.acc, [200 / 3, 100.0, 50.0])
    assert m.mIoU == pytest.approx((50 + 200 / 3 + 50) / 3)  # 55.555...
    assert m.mAcc == pytest.approx((200 / 3 + 100 + 50) / 3)  # 72.222...
    assert m.aAcc == pytest.approx(500 / 7)  # 5 of 7 counted pixels
    np.testing.assert_array_equal(m.gt_pixels, [3, 2, 2])
    np.testing.assert_array_equal(m.pred_pixels, [3, 3, 1])
    np.testing.assert_array_equal(m.union, [4, 3, 2])


def test_torch_and_numpy_inputs_agree():
    a = confusion_matrix(torch.from_numpy(PRED), torch.from_numpy(LABEL), 3)
    b = confusion_matrix(PRED.astype(np.int32), LABEL, 3)
    np.testing.assert_array_equal(a, HAND_MAT)
    np.testing.assert_array_equal(b, HAND_MAT)


def test_ignore_label_never_counted():
    label = np.full((5, 7), 255, dtype=np.uint8)
    pred = np.random.default_rng(0).integers(0, 4, (5, 7))
    cm = ConfusionMatrix(4).update(pred, label)
    assert cm.mat.sum() == 0
    m = cm.compute()
    assert math.isnan(m.mIoU) and math.isnan(m.aAcc) and math.isnan(m.mAcc)
    # a custom ignore index
    label2 = np.array([0, 1, 7, 7])
    mat = confusion_matrix(np.array([0, 0, 1, 1]), label2, 2, ignore_index=7)
    np.testing.assert_array_equal(mat, [[1, 0], [1, 0]])


def test_absent_classes_nan_like_mmseg():
    # K = 4: class 2 is predicted but absent from GT, class 3 absent from both.
    label = np.array([0, 0, 1, 1, 255])
    pred = np.array([0, 2, 1, 1, 3])  # the 3 sits on an ignored pixel
    m = metrics_from_confusion(confusion_matrix(pred, label, 4))
    # IoU: nan only where union == 0; Acc: nan where no GT
    np.testing.assert_allclose(m.iou[:3], [50.0, 100.0, 0.0])
    assert math.isnan(m.iou[3])
    np.testing.assert_allclose(m.acc[:2], [50.0, 100.0])
    assert math.isnan(m.acc[2]) and math.isnan(m.acc[3])
    assert m.mIoU == pytest.approx(50.0)  # nanmean(50, 100, 0)
    assert m.mAcc == pytest.approx(75.0)  # nanmean(50, 100)
    assert m.aAcc == pytest.approx(75.0)
    d = m.to_dict(["a", "b", "c", "d"])
    assert d["IoU"][3] is None and d["Acc"][2] is None and d["class_names"][0] == "a"


def test_out_of_range_labels_and_preds():
    with pytest.raises(DatasetError, match="outside"):
        confusion_matrix(np.array([0, 1]), np.array([0, 150]), 150, name="img.png")
    with pytest.raises(DatasetError, match="img.png"):
        confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 150]), 150, name="img.png")
    mat = confusion_matrix(np.array([0, 1]), np.array([0, 150]), 150, strict=False)
    assert mat.sum() == 1
    with pytest.raises(ValueError):
        confusion_matrix(np.array([0, 3]), np.array([0, 1]), 3)
    with pytest.raises(ValueError):
        confusion_matrix(np.array([0, 1, 2]), np.array([0, 1]), 3)
    with pytest.raises(TypeError):
        confusion_matrix(np.array([0.0, 1.0]), np.array([0, 1]), 3)


def test_merge_equals_single_accumulator():
    rng = np.random.default_rng(1)
    data = [(rng.integers(0, 5, (9, 11)), rng.integers(0, 6, (9, 11))) for _ in range(6)]
    data = [(p, np.where(t == 5, 255, t)) for p, t in data]
    whole, a, b = ConfusionMatrix(5), ConfusionMatrix(5), ConfusionMatrix(5)
    for i, (p, t) in enumerate(data):
        whole.update(p, t)
        (a if i % 2 else b).update(torch.from_numpy(p), torch.from_numpy(t))
    a.merge(b)
    np.testing.assert_array_equal(a.mat, whole.mat)
    assert a.num_images == 6
    with pytest.raises(ValueError):
        a.merge(ConfusionMatrix(4))


def test_per_class_csv(tmp_path):
    m = metrics_from_confusion(confusion_matrix(PRED, LABEL, 3))
    out = write_per_class_csv(tmp_path / "sub" / "per_class.csv", m, ["wall", "floor", "sky"])
    rows = list(csv.DictReader(out.open()))
    assert [r["class_name"] for r in rows] == ["wall", "floor", "sky"]
    assert float(rows[1]["IoU"]) == m.iou[1]  # full precision round-trips
    assert int(rows[0]["gt_pixels"]) == 3 and int(rows[0]["pred_pixels"]) == 3
    assert os.listdir(out.parent) == ["per_class.csv"]  # no temp file left
    m4 = metrics_from_confusion(confusion_matrix(np.array([0]), np.array([0]), 2))
    rows = list(csv.DictReader(write_per_class_csv(out, m4).open()))  # overwrite
    assert rows[1]["IoU"] == "nan" and rows[1]["class_name"] == "1"
    with pytest.raises(ValueError):
        write_per_class_csv(out, m4, ["only one"])


def _random_results(num_classes, n=5, seed=0):
    """Random (pred, label) pairs with ignored pixels and classes absent from GT/pred."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        h, w = rng.integers(20, 40, size=2)
        label = rng.integers(0, num_classes - 2, (h, w))  # last two classes never in GT
        label[rng.random((h, w)) < 0.1] = 255
        pred = np.where(rng.random((h, w)) < 0.6, np.minimum(label, num_classes - 3),
                        rng.integers(0, num_classes - 1, (h, w)))  # last class never predicted
        out.append((pred.astype(np.int64), label.astype(np.int64)))
    return out


def test_against_mmseg_iou_metric(mmseg):
    from mmseg.evaluation.metrics import IoUMetric

    k = 12
    results = _random_results(k)
    cm = ConfusionMatrix(k)
    for p, t in results:
        cm.update(p, t)
    ours = cm.compute()

    # static path: intersect_and_union per image + total_area_to_metrics
    areas = [IoUMetric.intersect_and_union(torch.from_numpy(p), torch.from_numpy(t), k, 255)
             for p, t in results]
    totals = [sum(a[i] for a in areas) for i in range(4)]
    ref = IoUMetric.total_area_to_metrics(*totals, metrics=["mIoU"])
    np.testing.assert_allclose(ours.iou / 100, ref["IoU"], atol=1e-6, equal_nan=True)
    np.testing.assert_allclose(ours.acc / 100, ref["Acc"], atol=1e-6, equal_nan=True)
    assert ours.aAcc / 100 == pytest.approx(float(ref["aAcc"]), abs=1e-6)
    assert ours.mIoU / 100 == pytest.approx(float(np.nanmean(ref["IoU"])), abs=1e-6)
    assert ours.mAcc / 100 == pytest.approx(float(np.nanmean(ref["Acc"])), abs=1e-6)
    assert np.isnan(ours.iou[-1]) and np.isnan(ours.acc[-2]) and not np.isnan(ours.iou[-2])

    # the evaluator path: process + compute_metrics (rounded to 2 decimals by mmseg)
    metric = IoUMetric(iou_metrics=["mIoU"])
    metric.dataset_meta = {"classes": [f"c{i}" for i in range(k)]}
    for p, t in results:
        metric.process({}, [{"pred_sem_seg": {"data": torch.from_numpy(p)[None]},
                             "gt_sem_seg": {"data": torch.from_numpy(t)[None]}}])
    summary = metric.compute_metrics(metric.results)
    for key in ("mIoU", "aAcc", "mAcc"):
        assert getattr(ours, key) == pytest.approx(float(summary[key]), abs=0.005 + 1e-6)
