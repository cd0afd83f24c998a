"""Simulated user clicks for interactive segmentation (the standard RITM / f-BRS protocol).

The next click goes into the current error: among the false-negative pixels (object missed) and
the false-positive pixels (background taken), void pixels excluded, it lands on the error pixel
farthest from its error region's boundary (a distance transform of the zero-padded error masks,
so the image border counts as a boundary). The click is positive when that pixel was missed and
negative when it was wrongly taken. No torch here: masks are numpy arrays, clicks are
``(x, y, positive)`` in image pixels.

``target`` may be a boolean/0-1 object mask or a label mask (0 background, 1 cat, 2 dog,
255 void): anything non-zero except 255 is the object, and 255 is void unless ``void_mask`` says
otherwise.
"""

from __future__ import annotations

import cv2
import numpy as np

from models.classes import VOID


Click = tuple[int, int, bool]


def object_and_void(target: np.ndarray, void_mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Split ``target`` into (object bool mask, void bool mask)."""
    target = np.asarray(target)
    if target.dtype == bool:
        obj = target
        void = np.zeros(target.shape, dtype=bool)
    else:
        void = target == VOID
        obj = (target != 0) & ~void
    if void_mask is not None:
        void = void | np.asarray(void_mask, dtype=bool)
        obj = obj & ~void
    return obj, void


def _padded_distance(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance of each mask pixel to the nearest non-mask pixel or the image border."""
    padded = np.pad(mask.astype(np.uint8), 1, mode="constant")
    return cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]


def _error_distances(pred_bool, target, void_mask, void) -> tuple[np.ndarray, np.ndarray] | None:
    pred = np.asarray(pred_bool, dtype=bool)
    if void is not None:  # keyword alias
        void_mask = void if void_mask is None else (np.asarray(void_mask, bool) | np.asarray(void, bool))
    obj, ignore = object_and_void(target, void_mask)
    if pred.shape != obj.shape:
        raise ValueError(f"prediction {pred.shape} and target {obj.shape} differ in shape")
    false_negative = obj & ~pred & ~ignore
    false_positive = ~obj & pred & ~ignore
    if not false_negative.any() and not false_positive.any():
        return None
    return _padded_distance(false_negative), _padded_distance(false_positive)


def _pick(fn_dist: np.ndarray, fp_dist: np.ndarray, rng: np.random.Generator | None) -> Click:
    fn_max, fp_max = float(fn_dist.max()), float(fp_dist.max())
    positive = fn_max > fp_max
    dist, best = (fn_dist, fn_max) if positive else (fp_dist, fp_max)
    if rng is None:
        ys, xs = np.nonzero(dist == best)
        index = 0
    else:  # training: any pixel deep inside the chosen error (RITM's iterative training rule)
        ys, xs = np.nonzero(dist > best / 2.0)
        if len(ys) == 0:
            ys, xs = np.nonzero(dist == best)
        index = int(rng.integers(len(ys)))
    return int(xs[index]), int(ys[index]), bool(positive)


def next_click(
    pred_bool: np.ndarray,
    target: np.ndarray,
    void_mask: np.ndarray | None = None,
    *,
    void: np.ndarray | None = None,
) -> Click | None:
    """The evaluation click: ``(x, y, positive)`` at the error pixel farthest from the error
    boundary (the first such pixel in row-major order on ties), or None when there is no error.

    Positive when that pixel is a missed object pixel, negative when it is a false one.
    ``void`` is an alias of ``void_mask``.
    """
    distances = _error_distances(pred_bool, target, void_mask, void)
    if distances is None:
        return None
    return _pick(*distances, rng=None)


def largest_error_click(
    pred_bool: np.ndarray,
    target: np.ndarray,
    void_mask: np.ndarray | None = None,
    rng: np.random.Generator | int | None = None,
    *,
    void: np.ndarray | None = None,
) -> Click | None:
    """The training click: into the largest (deepest) error, like :func:`next_click`.

    The error type (missed vs false) is chosen the same way; with ``rng`` (a Generator or a seed)
    the click is drawn uniformly among that error's pixels deeper than half its maximum depth, so
    training sees varied but still central corrections (RITM's iterative training); without it
    the click is exactly :func:`next_click`'s.
    """
    distances = _error_distances(pred_bool, target, void_mask, void)
    if distances is None:
        return None
    if rng is not None and not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    return _pick(*distances, rng=rng)
