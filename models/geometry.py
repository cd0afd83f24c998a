"""Model input geometry: letterbox a photo into a size x size square, map back exactly, normalise;
clip a box prompt to the image.

The image is resized, keeping its aspect ratio, so that its longer side is ``size``; the shorter
side is centred and padded. :func:`unletterbox` crops the padding and resizes back to the
original resolution. Coordinates map between the two with pixel centres lined up the way
``cv2.resize`` lines them up: pixel ``x`` covers ``[x, x + 1)`` and its centre is ``x + 0.5``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch


@dataclass(frozen=True)
class Letterbox:
    """Where an ``orig_h`` x ``orig_w`` image sits inside the ``size`` x ``size`` model input."""

    orig_h: int
    orig_w: int
    size: int
    scale: float
    pad_top: int
    pad_left: int
    new_h: int
    new_w: int

    def to_model(self, x: float, y: float) -> tuple[float, float]:
        """Map image pixel coordinates ``(x, y)`` to model pixel coordinates."""
        mx = (x + 0.5) * self.new_w / self.orig_w - 0.5 + self.pad_left
        my = (y + 0.5) * self.new_h / self.orig_h - 0.5 + self.pad_top
        return mx, my

    def to_image(self, mx: float, my: float) -> tuple[float, float]:
        """Map model pixel coordinates ``(mx, my)`` back to image pixel coordinates."""
        x = (mx - self.pad_left + 0.5) * self.orig_w / self.new_w - 0.5
        y = (my - self.pad_top + 0.5) * self.orig_h / self.new_h - 0.5
        return x, y


def letterbox_params(h: int, w: int, size: int) -> Letterbox:
    """The letterbox of an ``h`` x ``w`` image in a ``size`` x ``size`` square."""
    if h <= 0 or w <= 0 or size <= 0:
        raise ValueError(f"letterbox needs positive sizes, got {h}x{w} into {size}")
    scale = size / max(h, w)
    new_h = min(size, max(1, round(h * scale)))
    new_w = min(size, max(1, round(w * scale)))
    return Letterbox(h, w, size, scale, (size - new_h) // 2, (size - new_w) // 2, new_h, new_w)


def _resize(array: np.ndarray, width: int, height: int, interpolation: int) -> np.ndarray:
    """cv2.resize that skips no-op resizes and keeps a trailing single channel."""
    if array.shape[:2] == (height, width):
        return array
    resized = cv2.resize(array, (width, height), interpolation=interpolation)
    return resized[:, :, None] if array.ndim == 3 and resized.ndim == 2 else resized


def letterbox(
    array: np.ndarray, size: int, interpolation: int = cv2.INTER_LINEAR, pad_value: float = 0
) -> tuple[np.ndarray, Letterbox]:
    """Resize an HxW or HxWxC array into a ``size`` x ``size`` square, padding with ``pad_value``."""
    box = letterbox_params(array.shape[0], array.shape[1], size)
    resized = _resize(array, box.new_w, box.new_h, interpolation)
    out = np.full((size, size) + array.shape[2:], pad_value, dtype=array.dtype)
    out[box.pad_top : box.pad_top + box.new_h, box.pad_left : box.pad_left + box.new_w] = resized
    return out, box


def unletterbox(array: np.ndarray, box: Letterbox, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """Crop the padding off a ``size`` x ``size`` array and resize it back to ``orig_h`` x ``orig_w``."""
    if array.shape[:2] != (box.size, box.size):
        raise ValueError(f"expected a {box.size}x{box.size} array, got {array.shape[0]}x{array.shape[1]}")
    crop = array[box.pad_top : box.pad_top + box.new_h, box.pad_left : box.pad_left + box.new_w]
    return np.ascontiguousarray(_resize(crop, box.orig_w, box.orig_h, interpolation))


def to_model_tensor(rgb: np.ndarray, normalization: dict[str, Sequence[float]]) -> torch.Tensor:
    """Turn an HxWx3 uint8 RGB array into a normalised 1x3xHxW float tensor.

    ``normalization`` is ``{"mean": [r, g, b], "std": [r, g, b]}`` on 0..1 pixel values.
    """
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 RGB array, got {rgb.dtype} {rgb.shape}")
    mean = torch.tensor(normalization["mean"], dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(normalization["std"], dtype=torch.float32).view(3, 1, 1)
    tensor = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float().div_(255.0)
    return tensor.sub_(mean).div_(std).unsqueeze(0)


def clip_box(box: Sequence[float], width: int, height: int) -> tuple[float, float, float, float]:
    """A box prompt ``(x0, y0, x1, y1)`` (corners in any order, continuous edges, x1/y1 exclusive)
    reordered and clipped to a ``width`` x ``height`` image.

    Raises ValueError when ``box`` has not four finite numbers or less than a pixel of it lies inside.
    """
    if len(box) != 4:
        raise ValueError(f"a box is (x0, y0, x1, y1), got {box!r}")
    try:
        values = [float(v) for v in box]
    except (TypeError, ValueError):
        raise ValueError(f"box coordinates must be numbers, got {tuple(box)!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"box {tuple(box)} has a coordinate that is not a finite number")
    x0, x1 = sorted((values[0], values[2]))
    y0, y1 = sorted((values[1], values[3]))
    x0, x1 = min(max(x0, 0.0), width), min(max(x1, 0.0), width)
    y0, y1 = min(max(y0, 0.0), height), min(max(y1, 0.0), height)
    if x1 - x0 < 1 or y1 - y0 < 1:
        raise ValueError(f"box {tuple(box)} is empty or outside the {width}x{height} image")
    return x0, y0, x1, y1
