"""Index PNGs (0 background, 1 cat, 2 dog; VOC colours) and instance PNGs (1..N per object).

Export: ``<stem><suffix>.png`` per photo and, with instances, ``<stem><suffix>_instances.png``
(object numbers in drawing order, 0 background). Import: a folder of index PNGs gives one object
per class present; an instance PNG beside one splits them into its objects (each takes the class
most of its pixels have in the index PNG). Overlaps are flattened, later objects on top.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from models.classes import BACKGROUND, MASK_PALETTE, PET_CLASSES, VOID
from models.formats.core import (
    FormatError,
    LabelledMask,
    OutputFile,
    PhotoObjects,
    check_photo_size,
    find_photo,
    photo_size,
)
from models.images import ImageLoadError, load_mask, save_png_atomic

INSTANCE_SUFFIX = "_instances"


def voc_palette() -> list[int]:
    """The PASCAL VOC colour map (256 RGB triples, flattened): index i's bits spread over R, G, B."""
    palette = []
    for index in range(256):
        r = g = b = 0
        value = index
        for shift in range(7, -1, -1):
            r |= (value & 1) << shift
            g |= ((value >> 1) & 1) << shift
            b |= ((value >> 2) & 1) << shift
            value >>= 3
        palette += [r, g, b]
    return palette


def _png_writer(array: np.ndarray, palette: list[int], text: dict[str, str] | None):
    return lambda target: save_png_atomic(target, array, palette=palette, text=text)


def export_png(
    items: Sequence[PhotoObjects], instances: bool = False, suffix: str = "", text: dict[str, str] | None = None
) -> list[OutputFile]:
    """Index PNGs (and instance PNGs) of ``items``; ``text``: PNG text chunks to mark them with."""
    files = []
    for item in items:
        stem = item.photo.stem + suffix
        files.append(OutputFile(Path(f"{stem}.png"), _png_writer(item.label_map(), MASK_PALETTE, text)))
        if instances:
            array = item.instance_map()
            files.append(OutputFile(Path(f"{stem}{INSTANCE_SUFFIX}.png"), _png_writer(array, voc_palette(), text)))
    return files


def load_mask_checked(path: Path, shape: tuple[int, int] | None, beside: str = "index mask") -> np.ndarray:
    """A mask PNG's indices, its size checked from the header (against ``shape``, that of the
    ``beside`` it belongs to) before decoding; FormatError (one line) otherwise."""
    size = photo_size(path)
    if shape is not None and size != tuple(shape):
        raise FormatError(path, f"{size[1]}x{size[0]} mask beside a {shape[1]}x{shape[0]} {beside}")
    try:
        return load_mask(path)
    except ImageLoadError as error:
        raise FormatError(path, str(error).split(": ", 1)[-1]) from None


def objects_from_maps(labels: np.ndarray, instances: np.ndarray | None, path: Path) -> list[LabelledMask]:
    """Objects of an index map (one per class) or, with ``instances``, one per instance number."""
    unknown = np.setdiff1d(np.unique(labels), [BACKGROUND, VOID, *PET_CLASSES])
    if unknown.size:
        raise FormatError(path, f"value {int(unknown[0])} is not a class (0 background, 1 cat, 2 dog, 255 void)")
    if instances is None:
        return [LabelledMask(cid, labels == cid) for cid in PET_CLASSES if np.any(labels == cid)]
    objects = []
    for number in np.unique(instances[instances > 0]):
        mask = instances == number
        votes = [np.count_nonzero(labels[mask] == cid) for cid in PET_CLASSES]
        if max(votes) == 0:
            raise FormatError(path, f"instance {int(number)} lies on background in the index mask")
        objects.append(LabelledMask(PET_CLASSES[int(np.argmax(votes))], mask))
    return objects


def import_mask_folder(folder: Path, photos: Path | None = None) -> list[PhotoObjects]:
    """Index PNGs in ``folder`` (``<stem>[_mask].png``, with ``<stem>..._instances.png`` if any).

    ``photos``: the folder of the photos, to check sizes against (default: ``folder``).
    """
    folder, photos = Path(folder), Path(photos or folder)
    items = []
    for path in sorted(folder.glob("*.png")):
        if path.stem.endswith(INSTANCE_SUFFIX) or path.name.startswith("."):
            continue
        labels = load_mask_checked(path, None)
        instance_path = path.with_name(f"{path.stem}{INSTANCE_SUFFIX}.png")
        instances = load_mask_checked(instance_path, labels.shape) if instance_path.is_file() else None
        stem = path.stem.removesuffix("_mask")
        photo = find_photo(photos, stem) if photos != folder or stem != path.stem else None
        check_photo_size(photo, labels.shape, path)
        h, w = labels.shape
        items.append(PhotoObjects(photo or Path(f"{stem}.png"), h, w, objects_from_maps(labels, instances, path)))
    return items
