"""Segmentation metrics from a confusion matrix accumulated over a whole dataset.

Per-class values are NaN for a class absent from both predictions and targets; means skip them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


def _as_numpy(array: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        return array.detach().cpu().numpy()
    return np.asarray(array)


class ConfusionMatrix:
    """Counts of (target class, predicted class) pixels; target pixels equal to ``ignore_index`` are skipped."""

    def __init__(self, num_classes: int = 3, ignore_index: int = 255) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)  # rows: target, columns: prediction

    def update(self, pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor) -> None:
        """Add a prediction and its target (class indices of the same shape, any batch shape)."""
        pred, target = _as_numpy(pred).astype(np.int64).ravel(), _as_numpy(target).astype(np.int64).ravel()
        if pred.shape != target.shape:
            raise ValueError(f"prediction has {pred.size} pixels but target {target.size}")
        keep = target != self.ignore_index
        pred, target = pred[keep], target[keep]
        for name, values in (("prediction", pred), ("target", target)):
            if values.size and (values.min() < 0 or values.max() >= self.num_classes):
                raise ValueError(f"{name} holds values outside 0..{self.num_classes - 1}")
        counts = np.bincount(target * self.num_classes + pred, minlength=self.num_classes**2)
        self.matrix += counts.reshape(self.num_classes, self.num_classes)

    def _ratio(self, numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(denominator > 0, numerator / np.maximum(denominator, 1), np.nan)

    def iou(self) -> np.ndarray:
        """Per-class intersection over union, TP / (TP + FP + FN)."""
        tp = np.diag(self.matrix)
        return self._ratio(tp, self.matrix.sum(0) + self.matrix.sum(1) - tp)

    def dice(self) -> np.ndarray:
        """Per-class Dice (F1), 2 TP / (2 TP + FP + FN)."""
        tp = np.diag(self.matrix)
        return self._ratio(2 * tp, self.matrix.sum(0) + self.matrix.sum(1))

    def class_accuracy(self) -> np.ndarray:
        """Per-class pixel accuracy (recall): the share of each class's pixels predicted as that class."""
        return self._ratio(np.diag(self.matrix), self.matrix.sum(1))

    def pixel_accuracy(self) -> float:
        """The share of all non-ignored pixels predicted correctly (NaN before any pixel)."""
        total = self.matrix.sum()
        return float(np.trace(self.matrix) / total) if total else float("nan")

    def mean_iou(self) -> float:
        """Mean IoU over the classes present in targets or predictions (NaN if none)."""
        return _nanmean(self.iou())

    def labelled_mean_iou(self) -> float:
        """Mean IoU over the classes the targets hold (NaN if none): on photos of one species, the
        other species' false pixels lower the IoU of the classes present instead of adding a 0."""
        return _nanmean(np.where(self.matrix.sum(1) > 0, self.iou(), np.nan))

    def summary(self, class_names: Sequence[str]) -> dict[str, Any]:
        """JSON-ready metrics: ``pixel_accuracy``, ``mean_iou``, ``mean_dice`` and ``per_class``
        ``{name: {"iou", "dice", "accuracy"}}``; undefined values are None."""
        if len(class_names) != self.num_classes:
            raise ValueError(f"{len(class_names)} class names for {self.num_classes} classes")
        iou, dice, accuracy = self.iou(), self.dice(), self.class_accuracy()
        return {
            "pixel_accuracy": _json_float(self.pixel_accuracy()),
            "mean_iou": _json_float(self.mean_iou()),
            "mean_dice": _json_float(_nanmean(dice)),
            "per_class": {
                name: {"iou": _json_float(iou[i]), "dice": _json_float(dice[i]), "accuracy": _json_float(accuracy[i])}
                for i, name in enumerate(class_names)
            },
        }


def _nanmean(values: np.ndarray) -> float:
    """Mean of the defined values, NaN (without a warning) when none is."""
    return float(np.nanmean(values)) if not np.isnan(values).all() else float("nan")


def _json_float(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def binary_iou(
    pred_bool: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor, ignore_index: int = 255
) -> float:
    """IoU of a boolean prediction with a 0/1 target, skipping void pixels; 1.0 when both are empty."""
    pred, target = _as_numpy(pred_bool).astype(bool), _as_numpy(target)
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from target shape {target.shape}")
    valid = target != ignore_index
    truth = (target == 1) & valid
    pred = pred & valid
    union = np.count_nonzero(pred | truth)
    return float(np.count_nonzero(pred & truth) / union) if union else 1.0
