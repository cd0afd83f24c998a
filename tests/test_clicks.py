"""The simulated click protocol on hand-made masks."""

from __future__ import annotations

import numpy as np
import pytest

from training.clicks import largest_error_click, next_click


def square(shape, x0, y0, side):
    mask = np.zeros(shape, dtype=bool)
    mask[y0 : y0 + side, x0 : x0 + side] = True
    return mask


def test_no_error_gives_none():
    target = square((40, 50), 10, 10, 11)
    assert next_click(target.copy(), target) is None
    assert largest_error_click(target.copy(), target, rng=0) is None


def test_click_at_centre_of_missed_square():
    target = square((40, 50), 10, 5, 11)  # centre (15, 10)
    assert next_click(np.zeros_like(target), target) == (15, 10, True)


def test_negative_click_for_false_square():
    target = np.zeros((40, 50), dtype=bool)
    pred = square((40, 50), 30, 20, 9)  # centre (34, 24)
    assert next_click(pred, target) == (34, 24, False)


def test_picks_larger_error_region():
    target = square((60, 80), 5, 5, 7) | square((60, 80), 40, 20, 21)  # centres (8, 8), (50, 30)
    pred = square((60, 80), 0, 45, 9)  # a false region smaller than the big miss
    assert next_click(pred, target) == (50, 30, True)
    # a false region bigger than every miss wins, and the click is negative
    pred = square((60, 80), 0, 30, 29)  # clipped by the border: 29 x 29 inside -> depth 15
    x, y, positive = next_click(pred, target)
    assert not positive and pred[y, x] and not target[y, x]


def test_image_border_counts_as_boundary():
    target = square((30, 30), 0, 0, 11)  # touching the top-left corner: centre still (5, 5)
    assert next_click(np.zeros_like(target), target) == (5, 5, True)


def test_void_is_ignored():
    labels = np.zeros((40, 60), dtype=np.uint8)
    labels[5:16, 5:16] = 1  # an 11 px cat, centre (10, 10)
    labels[10:35, 30:55] = 255  # a big void band: never an error
    assert next_click(np.zeros(labels.shape, bool), labels) == (10, 10, True)
    # predicting the void area costs nothing either
    pred = np.zeros(labels.shape, bool)
    pred[10:35, 30:55] = True
    pred[5:16, 5:16] = True
    assert next_click(pred, labels) is None
    # an explicit void mask splits a missed region: the click avoids it
    target = square((40, 40), 5, 5, 21)
    void = np.zeros_like(target)
    void[:, 15] = True
    x, y, positive = next_click(np.zeros_like(target), target, void)
    assert positive and x != 15 and target[y, x]
    assert next_click(np.zeros_like(target), target, void=void) == (x, y, positive)


def test_label_masks_count_cats_and_dogs_as_object():
    labels = np.zeros((30, 30), dtype=np.uint8)
    labels[2:9, 2:9] = 2
    assert next_click(np.zeros(labels.shape, bool), labels) == (5, 5, True)


def test_largest_error_click_is_random_but_central():
    target = square((60, 60), 10, 10, 31)  # centre (25, 25), depth 16
    pred = np.zeros_like(target)
    assert largest_error_click(pred, target) == next_click(pred, target)
    clicks = {largest_error_click(pred, target, rng=np.random.default_rng(seed)) for seed in range(20)}
    assert len(clicks) > 1
    for x, y, positive in clicks:
        assert positive and abs(x - 25) <= 8 and abs(y - 25) <= 8
    assert largest_error_click(pred, target, rng=3) == largest_error_click(pred, target, rng=3)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError):
        next_click(np.zeros((5, 5), bool), np.zeros((6, 5), bool))
