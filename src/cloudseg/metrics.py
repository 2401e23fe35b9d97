"""Segmentation metrics with the cityscapesScripts conventions.

One :class:`ConfusionMatrix` is accumulated over a whole split (not averaged per image):
19 train classes, ground-truth pixels labelled ``ignore_index`` (255) are skipped. A prediction
outside ``0..num_classes-1`` on a valid ground-truth pixel (e.g. ESPNetv2's background class,
mapped to 255) is a miss for the ground-truth class, as cityscapesScripts counts predictions
of ignored labels: it adds to that class's false negatives and to no class's false positives.

IoU of class c = TP / (TP + FP + FN); NaN when the class appears neither in the ground truth
nor in the predictions (cityscapesScripts' ``nan`` for a zero denominator); mIoU is the mean
over the non-NaN classes (``miou(gt_classes_only=True)``: over the classes present in the
ground truth only).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["ConfusionMatrix", "MetricsError"]


class MetricsError(ValueError):
    """Predictions and targets that cannot be compared (shape, dtype, class range)."""


def _as_int_array(x: object, what: str) -> np.ndarray | torch.Tensor:
    """Accept numpy arrays and torch tensors of integer class ids (returned unchanged)."""
    if isinstance(x, np.ndarray):
        if not np.issubdtype(x.dtype, np.integer):
            raise MetricsError(f"{what} must hold integer class ids, got dtype {x.dtype}")
        return x
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency of the project
        torch = None  # type: ignore[assignment]
    if torch is not None and isinstance(x, torch.Tensor):
        if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
            raise MetricsError(f"{what} must hold integer class ids, got dtype {x.dtype}")
        return x
    raise MetricsError(f"{what} must be a numpy array or torch tensor, got {type(x).__name__}")


class ConfusionMatrix:
    """Pixel confusion matrix over ``num_classes`` train ids, accumulated with ``bincount``.

    ``counts[g, p]`` is the number of pixels with ground truth ``g`` predicted as ``p``; the
    extra last column ``counts[g, num_classes]`` counts valid pixels predicted as anything
    outside ``0..num_classes-1`` (e.g. 255). :attr:`matrix` is the square part.
    """

    def __init__(self, num_classes: int = 19, ignore_index: int = 255) -> None:
        if int(num_classes) < 1:
            raise MetricsError(f"num_classes must be positive, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.counts = np.zeros((self.num_classes, self.num_classes + 1), np.int64)

    @property
    def matrix(self) -> np.ndarray:
        """The ``num_classes x num_classes`` confusion matrix (rows: ground truth)."""
        return self.counts[:, : self.num_classes]

    @property
    def total(self) -> int:
        """Number of evaluated (non-ignored) ground-truth pixels."""
        return int(self.counts.sum())

    def reset(self) -> None:
        self.counts[:] = 0

    def update(self, pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor) -> None:
        """Add one prediction/target pair (any matching shapes; numpy or torch, any device).

        Target values must be class ids or ``ignore_index``; prediction values outside
        ``0..num_classes-1`` count as misses.
        """
        pred = _as_int_array(pred, "pred")
        target = _as_int_array(target, "target")
        if tuple(pred.shape) != tuple(target.shape):
            raise MetricsError(
                f"pred and target differ in shape: {tuple(pred.shape)} vs {tuple(target.shape)}"
            )
        n = self.num_classes
        if isinstance(target, np.ndarray) and isinstance(pred, np.ndarray):
            t = target.reshape(-1).astype(np.int64)
            p = pred.reshape(-1).astype(np.int64)
            valid = t != self.ignore_index
            t, p = t[valid], p[valid]
            if t.size and (t.min() < 0 or t.max() >= n):
                raise MetricsError(f"target holds ids outside 0..{n - 1} and {self.ignore_index}")
            p = np.where((p >= 0) & (p < n), p, n)
            counts = np.bincount(t * (n + 1) + p, minlength=n * (n + 1))
        else:
            import torch

            def as_tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
                if isinstance(x, np.ndarray):
                    return torch.from_numpy(np.ascontiguousarray(x))
                return x

            pt = as_tensor(pred)
            tt = as_tensor(target).to(pt.device)
            t = tt.reshape(-1).long()
            p = pt.reshape(-1).long()
            valid = t != self.ignore_index
            t, p = t[valid], p[valid]
            if t.numel() and (int(t.min()) < 0 or int(t.max()) >= n):
                raise MetricsError(f"target holds ids outside 0..{n - 1} and {self.ignore_index}")
            p = torch.where((p >= 0) & (p < n), p, torch.full_like(p, n))
            counts = torch.bincount(t * (n + 1) + p, minlength=n * (n + 1)).cpu().numpy()
        self.counts += counts.reshape(n, n + 1)

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add another matrix's counts into this one (e.g. from parallel workers); returns self."""
        if not isinstance(other, ConfusionMatrix):
            raise MetricsError(f"can only merge a ConfusionMatrix, got {type(other).__name__}")
        if (other.num_classes, other.ignore_index) != (self.num_classes, self.ignore_index):
            raise MetricsError("cannot merge confusion matrices of different class settings")
        self.counts += other.counts
        return self

    def __iadd__(self, other: ConfusionMatrix) -> ConfusionMatrix:
        return self.merge(other)

    def iou(self) -> np.ndarray:
        """Per-class IoU (float64, ``num_classes``); NaN where a class is absent in both."""
        tp = np.diag(self.matrix).astype(np.float64)
        gt = self.counts.sum(axis=1).astype(np.float64)  # TP + FN (misses included)
        predicted = self.matrix.sum(axis=0).astype(np.float64)  # TP + FP
        denom = gt + predicted - tp
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(denom > 0, tp / np.where(denom > 0, denom, 1.0), np.nan)

    def gt_pixels(self) -> np.ndarray:
        """Ground-truth pixel count per class (misses included)."""
        return self.counts.sum(axis=1)

    def miou(self, gt_classes_only: bool = False) -> float:
        """Mean IoU over the classes that are not NaN; NaN when there are none.

        ``gt_classes_only``: average only over classes present in the ground truth (a class
        that is only predicted, IoU 0, is then left out). On the full Cityscapes val set every
        class is present and both agree; on a few frames the latter is what many papers and
        scripts report.
        """
        iou = self.iou()
        keep = ~np.isnan(iou)
        if gt_classes_only:
            keep &= self.gt_pixels() > 0
        present = iou[keep]
        return float(present.mean()) if present.size else math.nan

    def pixel_accuracy(self) -> float:
        """Correct pixels / evaluated pixels; NaN before any valid pixel was seen."""
        total = self.total
        return float(np.trace(self.matrix)) / total if total else math.nan
