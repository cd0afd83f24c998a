"""COCO instances: one annotation per object, masks as compressed RLE (exact) or polygons.

Export: ``annotations.json`` with images sorted by photo name (ids 1..N), annotations in that
order (ids 1..M), categories 1 cat and 2 dog (PetSeg's class ids), each annotation with ``bbox``,
``area`` (mask pixels), ``iscrowd`` 0. RLE keeps every mask exactly, holes and separate parts
included. Polygons follow pixel edges (pycocotools rasterises them back pixel-exact); an object
in several parts gets one polygon per part, but COCO polygons cannot carry holes: they come back
filled. Import takes RLE (compressed or list counts) and polygons, any category named cat or dog.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.classes import CLASS_NAMES, PET_CLASSES
from models.formats.core import (
    FormatError,
    LabelledMask,
    OutputFile,
    PhotoObjects,
    check_finite_points,
    check_photo_size,
    check_size,
    class_id_of,
    find_photo,
    read_json,
    write_json,
)
from models.formats.polygons import fill_pixel_centres, pixel_edge_rings
from models.formats.rle import rle_decode, rle_encode, rle_runs

COCO_FILE = "annotations.json"
CATEGORIES = [{"id": cid, "name": CLASS_NAMES[cid], "supercategory": "pet"} for cid in PET_CLASSES]


def polygon_segmentation(mask: np.ndarray) -> list[list[float]]:
    """COCO polygons of ``mask``: one flat ``[x0, y0, x1, y1, ...]`` per part, along pixel edges."""
    return [[float(v) for v in ring.ravel()] for ring in pixel_edge_rings(mask)]


def coco_document(items: Sequence[PhotoObjects], polygons: bool = False) -> dict[str, Any]:
    """The COCO instances document of ``items`` (stable ids: photos sorted by name)."""
    images, annotations = [], []
    for image_id, item in enumerate(sorted(items, key=lambda i: i.photo.name), start=1):
        images.append({"id": image_id, "file_name": item.photo.name, "height": item.height, "width": item.width})
        for obj in item.objects:
            if not obj.mask.any():
                continue
            segmentation = polygon_segmentation(obj.mask) if polygons else rle_encode(obj.mask)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": obj.class_id,
                    "segmentation": segmentation,
                    "area": int(np.count_nonzero(obj.mask)),
                    "bbox": obj.bbox(),
                    "iscrowd": 0,
                }
            )
    return {
        "info": {"description": "PetSeg annotations", "version": "1.0"},
        "images": images,
        "annotations": annotations,
        "categories": CATEGORIES,
    }


def export_coco(items: Sequence[PhotoObjects], polygons: bool = False) -> list[OutputFile]:
    """``annotations.json`` of ``items`` (RLE, or polygons with ``polygons``)."""
    return [OutputFile(Path(COCO_FILE), write_json(coco_document(items, polygons)))]


def _polygons_to_mask(segmentation: Any, shape: tuple[int, int], path: Path, where: str) -> np.ndarray:
    """The union of COCO polygons (pixel-edge coordinates), checked to lie on the image."""
    if not isinstance(segmentation, list) or not segmentation:
        raise FormatError(path, f"{where}: expected a list of polygons or an RLE object")
    h, w = shape
    mask = np.zeros(shape, dtype=bool)
    for k, flat in enumerate(segmentation):
        ring = check_finite_points(flat, path, f"{where}[{k}]")
        if len(ring) < 3:
            raise FormatError(path, f"{where}[{k}]: a polygon needs at least 3 points")
        if (ring < -1).any() or (ring[:, 0] > w + 1).any() or (ring[:, 1] > h + 1).any():
            raise FormatError(path, f"{where}[{k}]: points outside the {w}x{h} image")
        mask |= fill_pixel_centres(ring, shape)
    return mask


def _segmentation_mask(ann: dict[str, Any], shape: tuple[int, int], path: Path, where: str) -> np.ndarray:
    segmentation = ann.get("segmentation")
    if isinstance(segmentation, dict):
        size, _ = rle_runs(segmentation, path, where)
        if size != shape:
            raise FormatError(path, f"{where}: {size[1]}x{size[0]} RLE on a {shape[1]}x{shape[0]} image")
        return rle_decode(segmentation, path, where)
    return _polygons_to_mask(segmentation, shape, path, f"{where}.segmentation")


def _checked_list(doc: dict[str, Any], key: str, path: Path) -> list[dict[str, Any]]:
    value = doc.get(key)
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise FormatError(path, f"'{key}' must be a list of objects")
    return value


def import_coco(path: Path, photos: Path | None = None) -> list[PhotoObjects]:
    """The photos and objects of a COCO instances file; ``photos``: the image folder (default: the
    file's folder), used to check sizes against photos that are there. Every size and segmentation
    is checked before any mask is made."""
    path = Path(path)
    doc = read_json(path)
    if not isinstance(doc, dict):
        raise FormatError(path, "not a COCO file (expected an object with images and annotations)")
    categories = {}
    for c in _checked_list(doc, "categories", path):
        if not isinstance(c.get("id"), int):
            raise FormatError(path, "a category without a whole-number id")
        categories[c["id"]] = c.get("name")
    images: dict[int, PhotoObjects] = {}
    for i, image in enumerate(_checked_list(doc, "images", path)):
        if not isinstance(image.get("id"), int) or not isinstance(image.get("file_name"), str):
            raise FormatError(path, f"images[{i}]: needs a whole-number id and a file_name")
        shape = check_size(image.get("height"), image.get("width"), path, f"images[{i}]")
        photo = find_photo(Path(photos or path.parent), image["file_name"])
        check_photo_size(photo, shape, path)
        images[image["id"]] = PhotoObjects(photo or Path(image["file_name"]), *shape)
    for i, ann in enumerate(_checked_list(doc, "annotations", path)):
        where = f"annotations[{i}]"
        item = images.get(ann.get("image_id"))  # type: ignore[arg-type]
        if item is None:
            raise FormatError(path, f"{where}: image_id {ann.get('image_id')!r} is not in images")
        if ann.get("category_id") not in categories:
            raise FormatError(path, f"{where}: category_id {ann.get('category_id')!r} is not in categories")
        class_id = class_id_of(categories[ann["category_id"]], path)
        item.objects.append(LabelledMask(class_id, _segmentation_mask(ann, item.shape, path, where)))
    return sorted(images.values(), key=lambda item: item.photo.name)
