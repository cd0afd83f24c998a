"""labelme JSON: one ``<stem>.json`` per photo, one polygon shape per part of each object.

The keys are labelme's (``version``, ``flags``, ``shapes``, ``imagePath`` relative to the JSON
file, ``imageData`` null, ``imageHeight``, ``imageWidth``); each shape is ``label`` cat or dog,
``points``, ``shape_type`` polygon, ``group_id`` the object's number (labelme's way of making
several shapes one instance: ``labelme.utils.shapes_to_label`` merges them), ``flags`` and
``description``. labelme polygons cannot carry holes: an object's holes come back filled. Import
takes polygon and rectangle shapes; shapes with the same label and group_id are one object.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.formats.core import (
    FormatError,
    LabelledMask,
    OutputFile,
    PhotoObjects,
    check_finite_points,
    check_photo_size,
    check_size,
    class_id_of,
    read_json,
    write_json,
)
from models.formats.polygons import mask_parts, rings_to_mask

LABELME_VERSION = "5.11.4"  # the labelme release whose loader the tests read these files with


def labelme_document(item: PhotoObjects, json_folder: Path) -> dict[str, Any]:
    """The labelme JSON of one photo, to be saved in ``json_folder``."""
    shapes = []
    for group_id, obj in enumerate(item.objects, start=1):
        for part in mask_parts(obj.mask):
            points = part.outer.astype(float)
            if len(points) < 3:  # a one- or two-pixel sliver: labelme needs 3 points
                points = np.concatenate([points, points[-1:].repeat(3 - len(points), axis=0)])
            shapes.append(
                {
                    "label": obj.class_name,
                    "points": points.tolist(),
                    "group_id": group_id,
                    "description": "",
                    "shape_type": "polygon",
                    "flags": {},
                    "mask": None,
                }
            )
    return {
        "version": LABELME_VERSION,
        "flags": {},
        "shapes": shapes,
        "imagePath": Path(os.path.relpath(item.photo.resolve(), json_folder.resolve())).as_posix(),
        "imageData": None,
        "imageHeight": item.height,
        "imageWidth": item.width,
    }


def export_labelme(items: Sequence[PhotoObjects], output: Path) -> list[OutputFile]:
    """One labelme JSON per photo, for the folder ``output`` (``imagePath`` is relative to it)."""
    return [OutputFile(Path(f"{i.photo.stem}.json"), write_json(labelme_document(i, Path(output)))) for i in items]


def _shape_ring(shape: dict[str, Any], path: Path, where: str) -> np.ndarray:
    points = shape.get("points")
    if not isinstance(points, list) or not all(isinstance(p, list) and len(p) == 2 for p in points):
        raise FormatError(path, f"{where}: points must be a list of [x, y]")
    ring = check_finite_points([v for p in points for v in p], path, where)
    kind = shape.get("shape_type") or "polygon"
    if kind == "rectangle" and len(ring) == 2:
        (x0, y0), (x1, y1) = ring
        return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    if kind != "polygon":
        raise FormatError(path, f"{where}: shape_type {kind!r} is not supported (polygon, rectangle)")
    if len(ring) < 3:
        raise FormatError(path, f"{where}: a polygon needs at least 3 points")
    return ring


def import_labelme_file(path: Path) -> PhotoObjects:
    """The objects of one labelme JSON (its size checked against the photo when it is there)."""
    path = Path(path)
    doc = read_json(path)
    if not isinstance(doc, dict) or not isinstance(doc.get("shapes"), list) or not isinstance(doc.get("imagePath"), str):
        raise FormatError(path, "not a labelme file (expected shapes and imagePath)")
    shape = check_size(doc.get("imageHeight"), doc.get("imageWidth"), path, "imageHeight/imageWidth")
    photo = path.parent / Path(doc["imagePath"].replace("\\", "/"))
    check_photo_size(photo, shape, path)
    h, w = shape
    groups: dict[tuple[Any, ...], list[np.ndarray]] = {}
    for i, item in enumerate(doc["shapes"]):
        where = f"shapes[{i}]"
        if not isinstance(item, dict):
            raise FormatError(path, f"{where}: expected an object")
        class_id = class_id_of(item.get("label"), path)
        ring = _shape_ring(item, path, where)
        if (ring < -1).any() or (ring[:, 0] > w).any() or (ring[:, 1] > h).any():
            raise FormatError(path, f"{where}: points outside the {w}x{h} image")
        group = item.get("group_id")
        key = (class_id, group) if isinstance(group, int) else (class_id, "shape", i)
        groups.setdefault(key, []).append(ring)
    objects = [LabelledMask(key[0], _union(rings, shape)) for key, rings in groups.items()]
    return PhotoObjects(photo, h, w, objects)


def _union(rings: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    for ring in rings:
        mask |= rings_to_mask([ring], shape)
    return mask


def import_labelme(folder: Path) -> list[PhotoObjects]:
    """Every labelme JSON in ``folder`` (a single file also works)."""
    folder = Path(folder)
    paths = [folder] if folder.is_file() else sorted(p for p in folder.glob("*.json") if not p.name.startswith("."))
    return [import_labelme_file(p) for p in paths]
