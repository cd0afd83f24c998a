"""Rendering interactive prompts (clicks, box, previous mask) into the 4 prompt maps of the prompt U-Net.

Channels: 0 positive clicks, 1 negative clicks, 2 box (1 inside), 3 previous mask probability.
Coordinates are model pixels, points are (x, y). A click is a binary disk: pixel (u, v) is 1
where (u - x)**2 + (v - y)**2 <= radius**2, with (x, y) rounded to the nearest pixel (a disk
that reaches over the border is clipped). A box (x0, y0, x1, y1) is inclusive, clipped to the image.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

CLICK_RADIUS = 5  # model pixels; suits 256-320 px inputs

Point = tuple[float, float]
Box = tuple[float, float, float, float]
Mask = torch.Tensor | np.ndarray


def disk_kernel(radius: float) -> torch.Tensor:
    """A 1x1xKxK float kernel, 1 inside the disk of ``radius`` (K = 2*ceil(radius)+1)."""
    r = math.ceil(radius)
    offsets = torch.arange(-r, r + 1, dtype=torch.float32)
    return ((offsets[:, None] ** 2 + offsets[None, :] ** 2) <= radius**2).float()[None, None]


def _click_maps(size: int, clicks: Sequence[Sequence[Point]], radius: float) -> torch.Tensor:
    """BxSxS disks: impulses on a canvas padded by the kernel radius, convolved with the disk."""
    r = math.ceil(radius)
    canvas = torch.zeros(len(clicks), 1, size + 2 * r, size + 2 * r)
    index = [(b, round(y) + r, round(x) + r) for b, points in enumerate(clicks) for x, y in points]
    index = [(b, v, u) for b, v, u in index if 0 <= v < size + 2 * r and 0 <= u < size + 2 * r]
    if index:
        b, v, u = torch.tensor(index).T
        canvas[b, 0, v, u] = 1.0
    return (F.conv2d(canvas, disk_kernel(radius)) > 0.5).float()[:, 0]


def _box_maps(size: int, boxes: Sequence[Box | None]) -> torch.Tensor:
    """BxSxS: 1 inside each (inclusive, clipped) box, zeros for None."""
    bounds = torch.tensor([box if box is not None else (1, 1, 0, 0) for box in boxes], dtype=torch.float32)
    bounds = bounds.reshape(-1, 4)
    x0, x1 = torch.minimum(bounds[:, 0], bounds[:, 2]), torch.maximum(bounds[:, 0], bounds[:, 2])
    y0, y1 = torch.minimum(bounds[:, 1], bounds[:, 3]), torch.maximum(bounds[:, 1], bounds[:, 3])
    empty = torch.tensor([box is None for box in boxes])
    pixels = torch.arange(size, dtype=torch.float32)
    cols = (pixels >= x0[:, None]) & (pixels <= x1[:, None]) & ~empty[:, None]
    rows = (pixels >= y0[:, None]) & (pixels <= y1[:, None])
    return (rows[:, :, None] & cols[:, None, :]).float()


def _mask_maps(size: int, masks: Sequence[Mask | None]) -> torch.Tensor:
    """BxSxS previous-mask probabilities (zeros for None)."""
    out = torch.zeros(len(masks), size, size)
    for b, mask in enumerate(masks):
        if mask is not None:
            mask = torch.as_tensor(mask, dtype=torch.float32)
            if mask.shape != (size, size):
                raise ValueError(f"previous mask must be {size}x{size}, not {tuple(mask.shape)}")
            out[b] = mask
    return out


def render_prompt_maps_batch(
    size: int,
    positives: Sequence[Sequence[Point]],
    negatives: Sequence[Sequence[Point]],
    boxes: Sequence[Box | None] | None = None,
    prev_masks: Sequence[Mask | None] | None = None,
    radius: float = CLICK_RADIUS,
) -> torch.Tensor:
    """Bx4xSxS prompt maps for B prompt sets (one list of points per set; None: no box / mask)."""
    count = len(positives)
    if len(negatives) != count:
        raise ValueError("positives and negatives must have one entry per batch item")
    boxes = [None] * count if boxes is None else boxes
    prev_masks = [None] * count if prev_masks is None else prev_masks
    return torch.stack(
        [
            _click_maps(size, positives, radius),
            _click_maps(size, negatives, radius),
            _box_maps(size, boxes),
            _mask_maps(size, prev_masks),
        ],
        dim=1,
    )


def render_prompt_maps(
    size: int,
    positives: Sequence[Point],
    negatives: Sequence[Point],
    box: Box | None = None,
    prev_mask: Mask | None = None,
    radius: float = CLICK_RADIUS,
) -> torch.Tensor:
    """4xSxS prompt maps for one image (see the module doc for the conventions)."""
    return render_prompt_maps_batch(size, [positives], [negatives], [box], [prev_mask], radius)[0]
