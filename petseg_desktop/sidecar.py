"""The sidecar file: an :class:`ImageAnnotation` saved as JSON beside its image.

It autosaves as ``<image folder>/.petseg/<image name>.json`` (or, when that folder is read-only,
under the user data folder), with masks run-length encoded inside the JSON so one atomic write
saves all. Pure Python and NumPy (no Qt, no torch).
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from models.classes import CLASS_NAMES, PET_CLASSES
from models.files import atomic_path
from petseg_desktop.annotation import AnnotationObject, ImageAnnotation, Prompts

SIDECAR_FOLDER = ".petseg"
FORMAT = "petseg-annotation"
FORMAT_VERSION = 1
CLASS_IDS = {CLASS_NAMES[cid]: cid for cid in PET_CLASSES}


class SidecarError(ValueError):
    """A sidecar file that cannot be read or does not fit its image."""


# --------------------------------------------------------------------------- run-length encoding
def rle_encode(mask: np.ndarray) -> dict[str, Any]:
    """Row-major run lengths of a boolean mask, starting with a (possibly empty) run of False."""
    flat = np.ascontiguousarray(mask, dtype=bool).ravel()
    if flat.size == 0:
        return {"size": list(mask.shape), "counts": []}
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    counts = np.diff(np.concatenate(([0], change, [flat.size])))
    if flat[0]:
        counts = np.concatenate(([0], counts))
    return {"size": [int(s) for s in mask.shape], "counts": [int(c) for c in counts]}


def rle_decode(rle: dict[str, Any]) -> np.ndarray:
    """Inverse of :func:`rle_encode`; raises SidecarError on inconsistent data."""
    try:
        h, w = (int(v) for v in rle["size"])
        counts = np.asarray(rle["counts"], dtype=np.int64)
    except (KeyError, TypeError, ValueError):
        raise SidecarError("mask run-length data is malformed") from None
    if counts.size and (counts.min() < 0 or counts.sum() != h * w):
        raise SidecarError("mask run-length data does not match its size")
    values = np.arange(counts.size) % 2 == 1
    return np.repeat(values, counts).reshape(h, w)


# --------------------------------------------------------------------------- JSON of the document
def prompts_to_json(prompts: Prompts) -> dict[str, Any]:
    return {"points": [[x, y, int(p)] for x, y, p in prompts.points], "box": list(prompts.box) if prompts.box else None}


def prompts_from_json(data: dict[str, Any] | None) -> Prompts:
    data = data or {}
    try:
        points = [(int(x), int(y), bool(p)) for x, y, p in data.get("points") or []]
        box = data.get("box")
        return Prompts(points, tuple(int(v) for v in box) if box else None)
    except (TypeError, ValueError):
        raise SidecarError("prompts are malformed") from None


def object_to_json(obj: AnnotationObject) -> dict[str, Any]:
    return {
        "class": obj.class_name,
        "class_id": obj.class_id,
        "source": obj.source,
        "prompts": prompts_to_json(obj.prompts),
        "mask": rle_encode(obj.mask),
    }


def object_from_json(data: dict[str, Any], shape: tuple[int, int]) -> AnnotationObject:
    class_id = data.get("class_id", CLASS_IDS.get(data.get("class", ""), None))
    if class_id not in PET_CLASSES:
        raise SidecarError(f"unknown object class {data.get('class')!r}")
    mask = rle_decode(data.get("mask") or {})
    if mask.shape != tuple(shape):
        raise SidecarError(f"object mask is {mask.shape}, image is {tuple(shape)}")
    return AnnotationObject(int(class_id), mask, prompts_from_json(data.get("prompts")), str(data.get("source", "prompt")))


def document_to_json(doc: ImageAnnotation, threshold: float = 0.5) -> dict[str, Any]:
    current = doc.current_mask(threshold)
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "image": doc.image_path.name,
        "width": doc.width,
        "height": doc.height,
        "modified": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "objects": [object_to_json(obj) for obj in doc.objects],
        "current": {
            "prompts": prompts_to_json(doc.prompts),
            "mask": rle_encode(current) if current is not None else None,
            "editing": _editing_to_json(doc),
        },
    }


def document_from_json(data: dict[str, Any], image_path: Path, shape: tuple[int, int]) -> ImageAnnotation:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise SidecarError("not a PetSeg annotation file")
    if (int(data.get("height", -1)), int(data.get("width", -1))) != tuple(shape):
        raise SidecarError(f"annotation is for a {data.get('width')}x{data.get('height')} image")
    doc = ImageAnnotation(Path(image_path), shape[0], shape[1])
    doc.objects = [object_from_json(o, shape) for o in data.get("objects") or []]
    current = data.get("current") or {}
    doc.prompts = prompts_from_json(current.get("prompts"))
    if current.get("mask"):
        mask = rle_decode(current["mask"])
        if mask.shape == tuple(shape):
            doc.probabilities = mask.astype(np.float32)
    doc.editing = _editing_from_json(current.get("editing"), doc.objects)
    return doc


def _editing_to_json(doc: ImageAnnotation) -> list[int] | None:
    """``[index, class id]`` of the object being re-edited (the class guards against a stale index)."""
    if doc.editing is None or not 0 <= doc.editing < len(doc.objects):
        return None
    return [doc.editing, doc.objects[doc.editing].class_id]


def _editing_from_json(data: Any, objects: list[AnnotationObject]) -> int | None:
    try:
        index, class_id = (int(v) for v in data)
    except (TypeError, ValueError):  # None (no re-edit) or malformed: nothing is being re-edited
        return None
    if 0 <= index < len(objects) and objects[index].class_id == class_id:
        return index
    return None


# --------------------------------------------------------------------------- files
def save_document(doc: ImageAnnotation, path: Path | None = None, threshold: float = 0.5) -> Path:
    """Write the sidecar atomically; returns where it went (see :func:`sidecar_path`)."""
    path = path or sidecar_path(doc.image_path)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(document_to_json(doc, threshold), f, separators=(",", ":"))
    return path


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def load_document(image_path: Path, shape: tuple[int, int]) -> ImageAnnotation:
    """The saved annotation of ``image_path`` if there is one, else an empty document.

    Raises SidecarError when a sidecar exists but is corrupt or belongs to another size.
    """
    found = find_sidecar(image_path)
    if found is None:
        return ImageAnnotation(Path(image_path), shape[0], shape[1])
    try:
        data = _read_json(found)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SidecarError(f"{found.name}: unreadable annotation ({error})") from None
    return document_from_json(data, image_path, shape)


def has_objects(image_path: Path) -> bool:
    """Whether the sidecar of ``image_path`` exists and lists accepted objects (False if unreadable)."""
    found = find_sidecar(image_path)
    if found is None:
        return False
    try:
        return bool(_read_json(found).get("objects"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return False


# --------------------------------------------------------------------------- where sidecars live
def _folder_writable(folder: Path) -> bool:
    sidecars = folder / SIDECAR_FOLDER
    if sidecars.is_dir():
        return os.access(sidecars, os.W_OK | os.X_OK)
    return os.access(folder, os.W_OK | os.X_OK)


def fallback_sidecar_dir(image_folder: Path) -> Path:
    """Where sidecars of a read-only folder go: the user data folder, keyed by the folder path."""
    from models.discovery import user_data_dir  # imported when needed: models.discovery imports torch

    key = hashlib.sha1(str(Path(image_folder).resolve()).encode("utf-8")).hexdigest()[:16]
    return user_data_dir() / "annotations" / f"{Path(image_folder).name}-{key}"


def sidecar_path(image_path: Path) -> Path:
    """Where the sidecar of ``image_path`` is written: ``.petseg/`` beside it when writable."""
    image_path = Path(image_path)
    folder = image_path.parent
    base = folder / SIDECAR_FOLDER if _folder_writable(folder) else fallback_sidecar_dir(folder)
    return base / f"{image_path.name}.json"


def find_sidecar(image_path: Path) -> Path | None:
    """The existing sidecar of ``image_path`` (beside it, or in the fallback folder), newest first."""
    image_path = Path(image_path)
    candidates = [
        image_path.parent / SIDECAR_FOLDER / f"{image_path.name}.json",
        fallback_sidecar_dir(image_path.parent) / f"{image_path.name}.json",
    ]
    existing = [p for p in candidates if p.is_file()]
    if not existing:
        return None
    return max(existing, key=lambda p: p.stat().st_mtime)
