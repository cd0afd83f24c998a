"""The COCO instances file of batch export: compressed RLE masks, one annotation per class present."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from models.classes import CLASS_NAMES, PET_CLASSES
from models.files import atomic_path
from models.formats.core import FormatError, read_json
from models.formats.rle import rle_encode
from petseg_desktop.export_files import ExportSetupError

COCO_FILE = "annotations.json"
COCO_CATEGORIES = [{"id": cid, "name": CLASS_NAMES[cid], "supercategory": "pet"} for cid in PET_CLASSES]


CocoEntry = tuple[dict[str, Any], list[dict[str, Any]]]  # a photo's image record and annotations, without ids


def coco_entry(name: str, labels: np.ndarray) -> CocoEntry:
    """The image record of the photo ``name`` and one annotation per pet class present in ``labels``
    (HxW class indices), without ids: :meth:`CocoDocument.append` numbers them."""
    h, w = labels.shape
    annotations = []
    for category in PET_CLASSES:
        mask = labels == category
        if not mask.any():
            continue
        cols, rows = np.flatnonzero(mask.any(axis=0)), np.flatnonzero(mask.any(axis=1))
        x, y = int(cols[0]), int(rows[0])
        annotations.append(
            {
                "category_id": category,
                "segmentation": rle_encode(mask),
                "area": int(mask.sum()),
                "bbox": [x, y, int(cols[-1]) + 1 - x, int(rows[-1]) + 1 - y],
                "iscrowd": 0,
            }
        )
    return {"file_name": name, "height": h, "width": w}, annotations


def _write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file in the same folder and a rename."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _is_coco(doc: Any) -> bool:
    """Whether ``doc`` has the COCO lists this module adds to, with ids and file names."""
    if not isinstance(doc, dict) or not all(isinstance(doc.get(key), list) for key in ("images", "annotations")):
        return False
    images_ok = all(
        isinstance(i, dict) and isinstance(i.get("id"), int) and isinstance(i.get("file_name"), str)
        for i in doc["images"]
    )
    return images_ok and all(isinstance(a, dict) and isinstance(a.get("id"), int) for a in doc["annotations"])


def _read_coco(path: Path) -> dict[str, Any]:
    """The COCO document at ``path``; ExportSetupError (one line) when it cannot be added to."""
    try:
        doc = read_json(path)
    except FormatError as error:  # size-bounded read; str(error) names the file and the problem
        raise ExportSetupError(f"{path}: cannot add to this file ({error})") from None
    if not _is_coco(doc):
        raise ExportSetupError(f"{path}: cannot add to this file, it is not a COCO JSON with images and annotations")
    return doc


class CocoDocument:
    """The COCO document being built; with ``resume`` it starts from the existing file's photos."""

    def __init__(self, path: Path, resume: bool) -> None:
        self.path = path
        self.doc: dict[str, Any] = {"images": [], "annotations": [], "categories": COCO_CATEGORIES}
        if resume and path.is_file() and path.stat().st_size > 0:  # an empty file counts as missing
            self.doc = _read_coco(path)
        self.names = {image["file_name"] for image in self.doc["images"]}
        self._next_image_id = max((image["id"] for image in self.doc["images"]), default=0) + 1
        self._next_annotation_id = max((a["id"] for a in self.doc["annotations"]), default=0) + 1

    @classmethod
    def open(cls, path: Path, skip_existing: bool, overwrite: bool) -> CocoDocument:
        """The document for ``path``: an existing file is added to with ``skip_existing``, replaced
        with ``overwrite`` and otherwise refused (ExportSetupError)."""
        if os.path.lexists(path) and not path.is_file():
            raise ExportSetupError(f"{path} exists and is not a file")
        if path.is_file() and not (skip_existing or overwrite):
            raise ExportSetupError(f"{path} already exists: pass --skip-existing to add to it or --overwrite to replace it")
        return cls(path, resume=skip_existing)

    def add(self, name: str, labels: np.ndarray) -> None:
        """Add the photo ``name`` with its label mask ``labels`` under the next ids."""
        self.append(coco_entry(name, labels))

    def append(self, entry: CocoEntry) -> None:
        """Add an entry of :func:`coco_entry`, numbering its image and annotations after the last ones."""
        image, annotations = entry
        image_id = self._next_image_id
        self._next_image_id += 1
        self.doc["images"].append({"id": image_id, **image})
        for annotation in annotations:
            self.doc["annotations"].append({"id": self._next_annotation_id, "image_id": image_id, **annotation})
            self._next_annotation_id += 1
        self.names.add(image["file_name"])

    def save(self) -> None:
        _write_text_atomic(self.path, json.dumps(self.doc))


class CocoEntries:
    """One process's share of a COCO export under torchrun: entries kept in memory, unnumbered, until
    rank 0 appends everybody's to its :class:`CocoDocument` in the order of the whole photo list."""

    def __init__(self) -> None:
        self.entries: list[CocoEntry] = []

    def add(self, name: str, labels: np.ndarray) -> None:
        """Keep the entry of the photo ``name`` with its label mask ``labels``."""
        self.entries.append(coco_entry(name, labels))

    def save(self) -> None:
        """Nothing to write: rank 0 writes the one annotations.json."""
