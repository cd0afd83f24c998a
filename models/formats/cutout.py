"""Cut-outs: per object, an RGBA PNG of the photo's pixels inside its mask, cropped to the object.

``<stem>_<n>_<class>.png`` (n: the object's number, 1-based, in drawing order); pixels outside the
mask are fully transparent. Export only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from models.formats.core import OutputFile, PhotoObjects
from models.images import load_rgb, save_png_atomic


def cutout(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The HxWx4 RGBA crop of ``rgb`` to ``mask``'s bounding box, alpha 255 inside the mask."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    alpha = mask[box].astype(np.uint8) * 255
    return np.dstack([rgb[box] * (alpha[:, :, None] > 0), alpha]).astype(np.uint8)


def export_cutouts(
    items: Sequence[PhotoObjects],
    text: dict[str, str] | None = None,
    load: Callable[[Path], np.ndarray] = load_rgb,
) -> list[OutputFile]:
    """One RGBA PNG per non-empty object; photos are read when the file is written, one at a time."""
    files = []
    for item in items:
        for number, obj in enumerate(item.objects, start=1):
            if obj.mask.any():
                name = Path(f"{item.photo.stem}_{number}_{obj.class_name}.png")
                files.append(OutputFile(name, _writer(item.photo, obj.mask, text, load)))
    return files


def _writer(photo: Path, mask: np.ndarray, text: dict[str, str] | None, load: Callable[[Path], np.ndarray]):
    def write(target: Path) -> None:
        rgb = load(photo)
        if rgb.shape[:2] != mask.shape:
            raise ValueError(f"{photo.name}: photo is {rgb.shape[1]}x{rgb.shape[0]}, its mask {mask.shape[1]}x{mask.shape[0]}")
        save_png_atomic(target, cutout(rgb, mask), text=text)

    return write
