"""OpenCV GrabCut as an interactive baseline with the same interface as the app's Predictor.

``GrabCutPredictor().set_image(rgb)`` then ``predict(points=[(x, y, positive)], box=None,
prev_mask=None) -> HxW float32`` in {0, 1} at the original resolution (points in image pixels, the
box (x0, y0, x1, y1) with continuous edges, x1/y1 exclusive, reordered and clipped by
:func:`models.geometry.clip_box` as in the Predictor), so :mod:`training.click_protocol` drives it
with exactly the same simulated clicks and boxes as a model.

Initialisation:
- a box alone: ``GC_INIT_WITH_RECT`` (outside the box is background).
- clicks (with or without a box): ``GC_INIT_WITH_MASK``; every pixel starts as probable
  background, except the previous result (probable foreground where ``prev_mask > 0.5``) or,
  before any result, a disk of probable foreground around each positive click; then positive
  clicks are sure-foreground disks and negative clicks sure-background disks, and outside the box
  (if any) is sure background.
GrabCut runs ``iterations`` rounds on a copy whose long side is at most ``max_side`` pixels, and
the result is upscaled to the original size, where nothing of it spills over a box's edges.
"""

from __future__ import annotations

from typing import Any, Sequence

import cv2
import numpy as np

from models.geometry import clip_box
from models.images import check_image

Point = tuple[float, float, bool]


class GrabCutPredictor:
    """GrabCut driven by clicks and/or a box (a baseline, not a model)."""

    name = "grabcut"

    def __init__(
        self,
        max_side: int = 450,
        iterations: int = 5,
        click_radius: float = 0.012,
        prior_radius: float = 0.2,
        use_prev: bool = True,
    ) -> None:
        """``click_radius`` and ``prior_radius`` are fractions of the working image's long side:
        the sure-label disk drawn at each click, and the probable-foreground disk around a
        positive click when there is no previous mask."""
        self.max_side = max_side
        self.iterations = iterations
        self.click_radius = click_radius
        self.prior_radius = prior_radius
        self.use_prev = use_prev
        self.metadata: dict[str, Any] = {"arch": "grabcut", "task": "prompt", "max_side": max_side,
                                         "iterations": iterations}
        self.device = "cpu"
        self._image: np.ndarray | None = None
        self._scale = 1.0
        self._shape = (0, 0)

    def set_image(self, rgb: np.ndarray) -> None:
        rgb = check_image(rgb)
        h, w = rgb.shape[:2]
        self._shape = (h, w)
        self._scale = min(1.0, self.max_side / max(h, w))
        if self._scale < 1.0:
            size = (max(1, round(w * self._scale)), max(1, round(h * self._scale)))
            small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        else:
            small = rgb
        # OpenCV's GrabCut wants an 8-bit 3-channel image; channel order does not matter to it.
        self._image = np.ascontiguousarray(small)

    def _small_xy(self, x: float, y: float) -> tuple[int, int]:
        sh, sw = self._image.shape[:2]
        return (int(np.clip(round(x * self._scale), 0, sw - 1)), int(np.clip(round(y * self._scale), 0, sh - 1)))

    def _small_box(self, box: Sequence[float]) -> tuple[int, int, int, int]:
        """The box (see :func:`models.geometry.clip_box`) as integer pixel bounds [x0, x1) x [y0, y1)
        of the working image (at least 1 px)."""
        sh, sw = self._image.shape[:2]
        h, w = self._shape
        x0, y0, x1, y1 = clip_box(box, w, h)
        s = self._scale
        bx0 = int(np.clip(np.floor(x0 * s), 0, sw - 1))
        by0 = int(np.clip(np.floor(y0 * s), 0, sh - 1))
        bx1 = int(np.clip(np.ceil(x1 * s), bx0 + 1, sw))
        by1 = int(np.clip(np.ceil(y1 * s), by0 + 1, sh))
        return bx0, by0, bx1, by1

    def predict(
        self,
        points: Sequence[Point] = (),
        box: Sequence[float] | None = None,
        prev_mask: np.ndarray | None = None,
    ) -> np.ndarray:
        if self._image is None:
            raise RuntimeError("set_image() must be called before predict()")
        h, w = self._shape
        points = list(points or [])
        if not points and box is None:
            return np.zeros((h, w), dtype=np.float32)
        image = self._image
        sh, sw = image.shape[:2]
        mask = np.full((sh, sw), cv2.GC_PR_BGD, dtype=np.uint8)
        rect_box = self._small_box(box) if box is not None else None

        if not points:
            x0, y0, x1, y1 = rect_box
            rect = (x0, y0, x1 - x0, y1 - y0)
            mode = cv2.GC_INIT_WITH_RECT
            fallback = np.zeros((sh, sw), dtype=np.uint8)
            fallback[y0:y1, x0:x1] = 1
        else:
            long_side = max(sh, sw)
            r_click = max(2, round(self.click_radius * long_side))
            r_prior = max(r_click + 1, round(self.prior_radius * long_side))
            if prev_mask is not None and self.use_prev:
                prev_small = cv2.resize(np.asarray(prev_mask, np.float32), (sw, sh), interpolation=cv2.INTER_LINEAR)
                mask[prev_small > 0.5] = cv2.GC_PR_FGD
            for x, y, positive in points:
                if positive:
                    cv2.circle(mask, self._small_xy(x, y), r_prior, cv2.GC_PR_FGD, -1)
            for x, y, positive in points:
                if not positive:
                    cv2.circle(mask, self._small_xy(x, y), r_prior // 2, cv2.GC_PR_BGD, -1)
            if rect_box is not None:
                x0, y0, x1, y1 = rect_box
                outside = np.ones((sh, sw), dtype=bool)
                outside[y0:y1, x0:x1] = False
                mask[outside] = cv2.GC_BGD
            for x, y, positive in points:
                cv2.circle(mask, self._small_xy(x, y), r_click, cv2.GC_FGD if positive else cv2.GC_BGD, -1)
            rect = None
            mode = cv2.GC_INIT_WITH_MASK
            fallback = np.isin(mask, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.uint8)

        result = self._grabcut(image, mask, rect, mode)
        small = fallback if result is None else result
        full = small
        if small.shape != (h, w):
            full = cv2.resize(small.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR) > 0.5
        if box is not None:
            full = full & self._box_allows(small, box, rect_box)
        return full.astype(np.float32)

    def _box_allows(self, small: np.ndarray, box: Sequence[float], small_box: tuple[int, int, int, int]) -> np.ndarray:
        """Where a box's mask may lie at the original size: inside the box, and outside it only
        where the working-size result is (a positive click's disk there), so that upscaling lets
        nothing spill over the box's edges."""
        h, w = self._shape
        x0, y0, x1, y1 = clip_box(box, w, h)
        allowed = np.zeros((h, w), dtype=bool)
        allowed[int(np.floor(y0)) : int(np.ceil(y1)), int(np.floor(x0)) : int(np.ceil(x1))] = True
        outside = small.astype(np.uint8)
        bx0, by0, bx1, by1 = small_box
        outside[by0:by1, bx0:bx1] = 0
        if outside.any():
            allowed |= cv2.resize(outside, (w, h), interpolation=cv2.INTER_NEAREST) > 0
        return allowed

    def _grabcut(self, image, mask, rect, mode) -> np.ndarray | None:
        """Run GrabCut; None when it cannot (e.g. no background or no foreground samples)."""
        labels = mask
        fg_any = np.isin(labels, (cv2.GC_FGD, cv2.GC_PR_FGD)).any() if rect is None else True
        bg_any = np.isin(labels, (cv2.GC_BGD, cv2.GC_PR_BGD)).any() if rect is None else True
        if not (fg_any and bg_any):
            return None
        bgd_model = np.zeros((1, 65), np.float64)
        fgd_model = np.zeros((1, 65), np.float64)
        try:
            cv2.grabCut(image, labels, rect, bgd_model, fgd_model, self.iterations, mode)
        except cv2.error:
            return None
        return np.isin(labels, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.uint8)
