"""Confusion-matrix metrics against hand-computed cases and a brute-force count."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from training.metrics import ConfusionMatrix, binary_iou

# Valid pixels (target, prediction): (0,0) (1,1) (2,1) (1,2) (1,1); the void pixel predicted 2 is skipped.
TARGET = np.array([[0, 1, 2], [255, 1, 1]])
PRED = np.array([[0, 1, 1], [2, 2, 1]])


def test_hand_computed_confusion_and_metrics() -> None:
    cm = ConfusionMatrix()
    cm.update(PRED, TARGET)
    assert cm.matrix.tolist() == [[1, 0, 0], [0, 2, 1], [0, 1, 0]]
    assert cm.iou().tolist() == pytest.approx([1.0, 0.5, 0.0])  # class 1: 2 / (3 + 3 - 2)
    assert cm.dice().tolist() == pytest.approx([1.0, 2 / 3, 0.0])
    assert cm.class_accuracy().tolist() == pytest.approx([1.0, 2 / 3, 0.0])
    assert cm.pixel_accuracy() == pytest.approx(3 / 5)
    assert cm.mean_iou() == pytest.approx(0.5)


def test_accumulates_over_updates_and_accepts_tensors() -> None:
    cm = ConfusionMatrix()
    cm.update(PRED, TARGET)
    cm.update(torch.from_numpy(PRED)[None], torch.from_numpy(TARGET)[None])  # a batch of one
    assert cm.matrix.tolist() == [[2, 0, 0], [0, 4, 2], [0, 2, 0]]
    assert cm.iou().tolist() == pytest.approx([1.0, 0.5, 0.0])


def test_matches_a_brute_force_count() -> None:
    rng = np.random.default_rng(0)
    target = rng.choice([0, 1, 2, 255], size=(4, 17, 23))
    pred = rng.integers(0, 3, size=target.shape)
    cm = ConfusionMatrix()
    for p, t in zip(pred, target):
        cm.update(p, t)
    expected = np.zeros((3, 3), int)
    for t, p in zip(target.ravel(), pred.ravel()):
        if t != 255:
            expected[t, p] += 1
    np.testing.assert_array_equal(cm.matrix, expected)


def test_absent_classes_are_undefined_and_skipped() -> None:
    cm = ConfusionMatrix()
    cm.update(np.array([0, 1, 1, 0]), np.array([0, 1, 0, 0]))
    assert math.isnan(cm.iou()[2])
    assert cm.mean_iou() == pytest.approx((2 / 3 + 1 / 2) / 2)
    summary = cm.summary(["background", "cat", "dog"])
    assert summary["per_class"]["dog"] == {"iou": None, "dice": None, "accuracy": None}
    assert summary["per_class"]["cat"]["iou"] == pytest.approx(0.5)
    assert summary["mean_iou"] == pytest.approx(cm.mean_iou())
    assert summary["pixel_accuracy"] == pytest.approx(0.75)
    json.dumps(summary, allow_nan=False)  # JSON-ready for checkpoint metadata
    empty = ConfusionMatrix()
    assert math.isnan(empty.mean_iou()) and math.isnan(empty.pixel_accuracy())


def test_bad_inputs_are_refused() -> None:
    cm = ConfusionMatrix()
    with pytest.raises(ValueError, match="pixels"):
        cm.update(np.zeros(4), np.zeros(5))
    with pytest.raises(ValueError, match="prediction"):
        cm.update(np.array([3]), np.array([0]))
    with pytest.raises(ValueError, match="target"):
        cm.update(np.array([0]), np.array([7]))
    with pytest.raises(ValueError):
        cm.summary(["background", "pet"])


def test_binary_iou_ignores_void() -> None:
    pred = np.array([[True, True, False], [True, True, False]])
    target = np.array([[1, 0, 1], [255, 255, 0]])
    assert binary_iou(pred, target) == pytest.approx(1 / 3)
    assert binary_iou(torch.from_numpy(pred), torch.from_numpy(target)) == pytest.approx(1 / 3)
    assert binary_iou(np.zeros((2, 2), bool), np.array([[0, 255], [0, 0]])) == 1.0  # nothing to find, nothing found
    assert binary_iou(np.ones((2, 2), bool), np.zeros((2, 2))) == 0.0
    with pytest.raises(ValueError):
        binary_iou(np.zeros((2, 2), bool), np.zeros((2, 3)))
