"""Masks to polygons and back: OpenCV contours out, ``cv2.fillPoly`` in.

A mask is split into its parts (8-connected outer boundaries), each with its holes
(``cv2.RETR_CCOMP``). Vertices are the centres of boundary pixels (``CHAIN_APPROX_SIMPLE``: only
the corners of each straight run are kept, which loses nothing). Rasterising an outer ring with
``cv2.fillPoly`` gives back its pixels, boundary included.

Formats that carry one polygon per object (YOLO segmentation) get the parts and holes joined into
one ring by zero-width bridges, Ultralytics' own convention for multi-part objects: each extra ring
is entered from its nearest point to the ring it hangs on, traced once round, and left the same
way; ``cv2.fillPoly``'s even-odd filling then leaves holes open.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np


@dataclass
class Part:
    """One connected part of a mask: its outer ring and its holes, each an Nx2 array of (x, y)."""

    outer: np.ndarray
    holes: list[np.ndarray] = field(default_factory=list)


def mask_parts(mask: np.ndarray) -> list[Part]:
    """The parts of a boolean mask, largest first, each with its holes (rings of >= 1 point)."""
    contours, hierarchy = cv2.findContours(
        np.ascontiguousarray(mask, dtype=np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE
    )
    if hierarchy is None:
        return []
    links = hierarchy[0]  # per contour: next, previous, first child, parent
    parts = []
    for i, contour in enumerate(contours):
        if links[i][3] != -1:
            continue  # a hole: collected under its parent
        holes, child = [], links[i][2]
        while child != -1:
            holes.append(contours[child].reshape(-1, 2))
            child = links[child][0]
        parts.append(Part(contour.reshape(-1, 2), holes))
    parts.sort(key=lambda p: -cv2.contourArea(p.outer))
    return parts


def pixel_edge_rings(mask: np.ndarray) -> list[np.ndarray]:
    """The outer boundaries of a mask's parts along pixel edges (pixel (x, y) is the square
    [x, x+1] x [y, y+1]; COCO's polygon convention), largest first; holes are not included.

    Traced on a 2x grid where each pixel covers 3x3 cells from (2x, 2y): the cell centres of that
    grid's boundary, halved, are the pixel corners.
    """
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return []
    y0, x0 = int(rows[0]), int(cols[0])
    crop = np.asarray(mask[y0 : rows[-1] + 1, x0 : cols[-1] + 1], dtype=np.uint8)
    grid = np.zeros((2 * crop.shape[0] + 1, 2 * crop.shape[1] + 1), dtype=np.uint8)
    fine = np.repeat(np.repeat(crop, 2, axis=0), 2, axis=1)
    for dy in (0, 1):
        for dx in (0, 1):
            grid[dy : dy + fine.shape[0], dx : dx + fine.shape[1]] |= fine
    contours, _ = cv2.findContours(grid, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    rings = [c.reshape(-1, 2) / 2.0 + (x0, y0) for c in contours]
    return sorted(rings, key=lambda r: -cv2.contourArea(r.astype(np.float32)))


def fill_pixel_centres(ring: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Pixels whose centres (x + 0.5, y + 0.5) lie inside ``ring`` (even-odd), as pycocotools
    rasterises COCO polygons; the inverse of :func:`pixel_edge_rings` for a part without holes."""
    h, w = shape
    ends = np.roll(ring, -1, axis=0)
    rows: list[np.ndarray] = []
    xs: list[np.ndarray] = []
    for (x0, y0), (x1, y1) in zip(ring, ends):
        if y0 == y1:
            continue
        top, bottom = min(y0, y1), max(y0, y1)
        ys = np.arange(max(np.ceil(top - 0.5), 0), min(np.ceil(bottom - 0.5), h))  # centres in [top, bottom)
        if ys.size:
            rows.append(ys.astype(np.int64))
            xs.append(x0 + (ys + 0.5 - y0) * (x1 - x0) / (y1 - y0))
    mask = np.zeros(shape, dtype=bool)
    if not rows:
        return mask
    row, cross = np.concatenate(rows), np.concatenate(xs)
    order = np.lexsort((cross, row))
    row, cross = row[order], cross[order]
    starts = np.clip(np.ceil(cross[0::2] - 0.5), 0, w).astype(np.int64)  # crossings pair up per row
    stops = np.clip(np.ceil(cross[1::2] - 0.5), 0, w).astype(np.int64)
    for y, a, b in zip(row[0::2], starts, stops):
        mask[y, a:b] = True
    return mask


def rings_to_mask(rings: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Fill each ring (Nx2 x, y; rounded to pixels) with ``cv2.fillPoly`` (even-odd) into an HxW mask."""
    canvas = np.zeros(shape, dtype=np.uint8)
    polygons = [np.round(r).astype(np.int32).reshape(-1, 1, 2) for r in rings if len(r)]
    if polygons:
        cv2.fillPoly(canvas, polygons, 1)
    return canvas.astype(bool)


def parts_to_mask(parts: list[Part], shape: tuple[int, int]) -> np.ndarray:
    """The mask of ``parts`` exactly as written: outer rings filled, holes cleared, hole edges kept."""
    canvas = np.zeros(shape, dtype=np.uint8)
    for part in parts:
        cv2.fillPoly(canvas, [part.outer.astype(np.int32).reshape(-1, 1, 2)], 1)
        for hole in part.holes:
            ring = hole.astype(np.int32).reshape(-1, 1, 2)
            cv2.fillPoly(canvas, [ring], 0)
            cv2.polylines(canvas, [ring], True, 1)  # the hole's ring runs through object pixels
    return canvas.astype(bool)


def _nearest(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    """Indices ``(i, j)`` of the closest pair ``a[i]``, ``b[j]`` (in chunks: bounded memory)."""
    best, pair = np.inf, (0, 0)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    for start in range(0, len(b64), 512):
        chunk = b64[start : start + 512]
        d = ((a64[:, None, :] - chunk[None, :, :]) ** 2).sum(axis=2)
        i, j = np.unravel_index(int(np.argmin(d)), d.shape)
        if d[i, j] < best:
            best, pair = d[i, j], (int(i), start + int(j))
    return pair


def _hang(base: np.ndarray, rings: list[np.ndarray]) -> np.ndarray:
    """``base`` with each of ``rings`` bridged in at its nearest point (enter, go round, come back)."""
    inserts: dict[int, list[np.ndarray]] = {}
    for ring in rings:
        i, j = _nearest(base, ring)
        loop = np.concatenate([np.roll(ring, -j, axis=0), ring[j : j + 1], base[i : i + 1]])
        inserts.setdefault(i, []).append(loop)
    pieces = []
    for i, point in enumerate(base):
        pieces.append(point[None])
        pieces.extend(inserts.get(i, []))
    return np.concatenate(pieces)


def join_parts(parts: list[Part]) -> np.ndarray:
    """One ring for all of ``parts``: each part's holes bridged to its outer ring, then the parts
    bridged to the first (largest) one."""
    outers = [_hang(part.outer, part.holes) if part.holes else part.outer for part in parts]
    return _hang(outers[0], outers[1:]) if len(outers) > 1 else outers[0]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks (1.0 when both are empty)."""
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union
