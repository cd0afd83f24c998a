"""COCO run-length encoding: column-major runs, compressed to pycocotools' string form."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from models.formats.core import FormatError, check_size


def rle_encode(mask: np.ndarray) -> dict[str, Any]:
    """COCO compressed RLE of a binary HxW mask (column-major runs, as pycocotools writes it)."""
    h, w = mask.shape
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate(([0], changes, [flat.size])))
    if flat.size and flat[0]:
        runs = np.concatenate(([0], runs))
    counts = runs.tolist()
    chars = []
    for i, run in enumerate(counts):
        x = run - counts[i - 2] if i > 2 else run  # pycocotools' delta coding (from the fourth run on)
        while True:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            chars.append(chr((c | 0x20 if more else c) + 48))
            if not more:
                break
    return {"size": [h, w], "counts": "".join(chars)}


def _runs_from_string(counts: str, path: Path, where: str) -> list[int]:
    """Run lengths of pycocotools' compressed counts string (inverse of the coding above)."""
    runs: list[int] = []
    pos, n = 0, len(counts)
    while pos < n:
        x, k, more = 0, 0, True
        while more:
            if pos >= n:
                raise FormatError(path, f"{where}: truncated RLE counts")
            c = ord(counts[pos]) - 48
            if not 0 <= c < 64:
                raise FormatError(path, f"{where}: RLE counts hold a character outside COCO's alphabet")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            pos, k = pos + 1, k + 1
            if k > 7:
                raise FormatError(path, f"{where}: RLE run too long")
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(runs) > 2:
            x += runs[-2]
        runs.append(x)
    return runs


def rle_runs(rle: Any, path: Path, where: str) -> tuple[tuple[int, int], list[int]]:
    """``((h, w), runs)`` of a COCO RLE (compressed string or list counts), checked to cover h*w."""
    if not isinstance(rle, dict):
        raise FormatError(path, f"{where}: expected an RLE object with size and counts")
    size, counts = rle.get("size"), rle.get("counts")
    if not (isinstance(size, list) and len(size) == 2):
        raise FormatError(path, f"{where}: RLE size must be [height, width]")
    shape = check_size(size[0], size[1], path, f"{where} size")
    if isinstance(counts, str):
        runs = _runs_from_string(counts, path, where)
    elif isinstance(counts, list) and all(isinstance(c, int) and not isinstance(c, bool) for c in counts):
        runs = counts
    else:
        raise FormatError(path, f"{where}: RLE counts must be a string or a list of whole numbers")
    if any(r < 0 for r in runs) or sum(runs) != shape[0] * shape[1]:
        raise FormatError(path, f"{where}: RLE runs do not cover the {shape[1]}x{shape[0]} mask exactly")
    return shape, runs


def rle_decode(rle: Any, path: Path, where: str = "segmentation") -> np.ndarray:
    """The HxW boolean mask of a COCO RLE; FormatError (before allocating) when it is inconsistent."""
    (h, w), runs = rle_runs(rle, path, where)
    values = np.arange(len(runs)) % 2 == 1
    return np.repeat(values, np.asarray(runs, dtype=np.int64)).reshape(w, h).T.copy()
