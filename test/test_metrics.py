"""ConfusionMatrix against a hand-worked case and against cityscapesScripts on a real label."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from cloudseg.metrics import ConfusionMatrix, MetricsError

# Hand-worked case, 3 classes. Valid pixels (target != 255), as (gt, pred):
# (0,0) (0,1) (0,0) (1,1) (1,miss) (2,2) (2,0); the pixel with target 255 is skipped.
TARGET = np.array([[0, 0, 0, 1], [1, 2, 255, 2]], np.uint8)
PRED = np.array([[0, 1, 0, 1], [255, 2, 0, 0]], np.uint8)
MATRIX = np.array([[2, 1, 0], [0, 1, 0], [1, 0, 1]])
MISSES = np.array([0, 1, 0])
# IoU = TP / (GT pixels incl. misses + predicted pixels - TP)
# class 0: 2 / (3 + 3 - 2) = 0.5; class 1: 1 / (2 + 2 - 1) = 1/3; class 2: 1 / (2 + 1 - 1) = 0.5
IOU = np.array([0.5, 1 / 3, 0.5])


def test_hand_worked_matrix() -> None:
    cm = ConfusionMatrix(num_classes=3)
    cm.update(PRED, TARGET)
    np.testing.assert_array_equal(cm.matrix, MATRIX)
    np.testing.assert_array_equal(cm.counts[:, 3], MISSES)
    assert cm.total == 7
    np.testing.assert_allclose(cm.iou(), IOU)
    assert cm.miou() == pytest.approx((0.5 + 1 / 3 + 0.5) / 3)
    assert cm.pixel_accuracy() == pytest.approx(4 / 7)


def test_absent_class_is_nan_and_left_out_of_miou() -> None:
    cm = ConfusionMatrix(num_classes=5)
    cm.update(PRED, TARGET)
    iou = cm.iou()
    assert np.isnan(iou[3]) and np.isnan(iou[4])
    np.testing.assert_allclose(iou[:3], IOU)
    assert cm.miou() == pytest.approx(IOU.mean())


def test_predicted_only_class_has_zero_iou() -> None:
    cm = ConfusionMatrix(num_classes=4)
    cm.update(np.array([3, 0]), np.array([0, 0]))
    assert cm.iou()[3] == 0.0  # predicted, never in the ground truth: a false positive
    assert cm.iou()[0] == 0.5
    assert cm.miou() == 0.25  # cityscapesScripts: the false-positive-only class counts as 0
    assert cm.miou(gt_classes_only=True) == 0.5


def test_torch_and_numpy_agree_and_accumulate() -> None:
    a, b = ConfusionMatrix(3), ConfusionMatrix(3)
    a.update(PRED, TARGET)
    a.update(PRED[:, ::-1], TARGET[:, ::-1])
    b.update(torch.from_numpy(PRED), torch.from_numpy(TARGET))
    half = ConfusionMatrix(3)
    half.update(torch.from_numpy(PRED[:, ::-1].copy()), TARGET[:, ::-1])
    b.merge(half)
    np.testing.assert_array_equal(a.counts, b.counts)
    np.testing.assert_array_equal(a.matrix, 2 * MATRIX)
    a += b
    assert a.total == 28
    assert a.miou() == pytest.approx(IOU.mean())  # ratios unchanged by scaling the counts


def test_empty_matrix() -> None:
    cm = ConfusionMatrix()
    assert math.isnan(cm.miou()) and math.isnan(cm.pixel_accuracy())
    cm.update(np.full((4, 4), 3, np.uint8), np.full((4, 4), 255, np.uint8))
    assert cm.total == 0


@pytest.mark.parametrize(
    ("pred", "target", "reason"),
    [
        (np.zeros((2, 2), np.uint8), np.zeros((2, 3), np.uint8), "shape"),
        (np.zeros((2, 2), np.float32), np.zeros((2, 2), np.uint8), "integer"),
        (np.zeros((2, 2), np.uint8), np.full((2, 2), 19, np.uint8), "outside"),
        ([0, 1], np.zeros(2, np.uint8), "numpy array or torch tensor"),
    ],
)
def test_bad_input_raises(pred: object, target: np.ndarray, reason: str) -> None:
    with pytest.raises(MetricsError, match=reason):
        ConfusionMatrix().update(pred, target)


def test_merge_rejects_other_settings() -> None:
    with pytest.raises(MetricsError):
        ConfusionMatrix(19).merge(ConfusionMatrix(20))


def test_matches_cityscapes_scripts_on_a_real_label(shared_data: Path) -> None:
    """Same per-class IoU as cityscapesScripts' getIouScoreForLabel (label-id space)."""
    ev = pytest.importorskip("cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling")
    from cityscapesscripts.helpers.labels import trainId2label

    from cloudseg.data.cityscapes import LABEL_ID_TO_TRAIN_ID

    label = (
        shared_data / "cityscapes/gtFine/val/frankfurt/frankfurt_000000_000576_gtFine_labelIds.png"
    )
    gt_ids = cv2.imread(str(label), cv2.IMREAD_UNCHANGED)[::4, ::4]
    gt_train = LABEL_ID_TO_TRAIN_ID[gt_ids]
    # A plausible wrong prediction: the truth shifted by 7 pixels, plus random noise and
    # some "background" (255) predictions.
    rng = np.random.default_rng(0)
    pred_train = np.roll(gt_train, 7, axis=1).copy()
    noise = rng.random(pred_train.shape)
    pred_train[noise < 0.05] = rng.integers(0, 19, int((noise < 0.05).sum()))
    pred_train[noise > 0.98] = 255
    train_to_id = np.zeros(256, np.int64)  # 255 -> label id 0 (unlabeled, ignored in eval)
    for train_id in range(19):
        train_to_id[train_id] = trainId2label[train_id].id
    pred_ids = train_to_id[pred_train]

    args = ev.CArgs()
    conf = ev.generateMatrix(args)
    encoded = gt_ids.astype(np.int64) * conf.shape[1] + pred_ids
    conf += np.bincount(encoded.ravel(), minlength=conf.size).reshape(conf.shape).astype(conf.dtype)
    expected = [ev.getIouScoreForLabel(trainId2label[t].id, conf, args) for t in range(19)]

    cm = ConfusionMatrix()
    cm.update(pred_train, gt_train)
    np.testing.assert_allclose(cm.iou(), expected, equal_nan=True)
    assert cm.miou() == pytest.approx(np.nanmean(expected))
