"""The annotation document: objects, prompts, label-map composition and the JSON sidecar.

Pure Python and NumPy (no Qt), so it is unit-testable on its own. One :class:`ImageAnnotation`
holds what the user made for one image: the accepted objects (class + full-resolution mask + the
prompts that produced it) and the prompts and mask of the object being edited now. It autosaves
as ``<image folder>/.petseg/<image name>.json`` (or, when that folder is read-only, under the
user data folder), with masks run-length encoded inside the JSON so one atomic write saves all.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from models.files import atomic_path

BACKGROUND, CAT, DOG = 0, 1, 2
CLASS_NAMES = {CAT: "cat", DOG: "dog"}
CLASS_IDS = {name: cid for cid, name in CLASS_NAMES.items()}
PALETTE = {BACKGROUND: (0, 0, 0), CAT: (255, 140, 0), DOG: (30, 144, 255)}
SIDECAR_FOLDER = ".petseg"
FORMAT = "petseg-annotation"
FORMAT_VERSION = 1
DEFAULT_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class SidecarError(ValueError):
    """A sidecar file that cannot be read or does not fit its image."""


def other_class(class_id: int) -> int:
    return DOG if class_id == CAT else CAT


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


# --------------------------------------------------------------------------- prompts and objects
@dataclass
class Prompts:
    """Clicks ``(x, y, positive)`` and an optional box ``(x0, y0, x1, y1)`` in image pixels."""

    points: list[tuple[int, int, bool]] = field(default_factory=list)
    box: tuple[int, int, int, int] | None = None

    def is_empty(self) -> bool:
        return not self.points and self.box is None

    def copy(self) -> Prompts:
        return Prompts(list(self.points), self.box)

    def with_point(self, x: int, y: int, positive: bool) -> Prompts:
        return Prompts([*self.points, (int(x), int(y), bool(positive))], self.box)

    def with_box(self, box: tuple[int, int, int, int] | None) -> Prompts:
        return Prompts(list(self.points), None if box is None else tuple(int(v) for v in box))

    def to_json(self) -> dict[str, Any]:
        return {"points": [[x, y, int(p)] for x, y, p in self.points], "box": list(self.box) if self.box else None}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Prompts:
        data = data or {}
        try:
            points = [(int(x), int(y), bool(p)) for x, y, p in data.get("points") or []]
            box = data.get("box")
            return cls(points, tuple(int(v) for v in box) if box else None)
        except (TypeError, ValueError):
            raise SidecarError("prompts are malformed") from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Prompts) and self.points == other.points and self.box == other.box


@dataclass
class AnnotationObject:
    """An accepted object: its class, full-resolution boolean mask, and the prompts behind it."""

    class_id: int
    mask: np.ndarray
    prompts: Prompts = field(default_factory=Prompts)
    source: str = "prompt"  # "prompt", "auto" (semantic model) or "brush"

    @property
    def class_name(self) -> str:
        return CLASS_NAMES.get(self.class_id, str(self.class_id))

    @property
    def area(self) -> int:
        return int(np.count_nonzero(self.mask))

    def to_json(self) -> dict[str, Any]:
        return {
            "class": self.class_name,
            "class_id": self.class_id,
            "source": self.source,
            "prompts": self.prompts.to_json(),
            "mask": rle_encode(self.mask),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], shape: tuple[int, int]) -> AnnotationObject:
        class_id = data.get("class_id", CLASS_IDS.get(data.get("class", ""), None))
        if class_id not in CLASS_NAMES:
            raise SidecarError(f"unknown object class {data.get('class')!r}")
        mask = rle_decode(data.get("mask") or {})
        if mask.shape != tuple(shape):
            raise SidecarError(f"object mask is {mask.shape}, image is {tuple(shape)}")
        return cls(int(class_id), mask, Prompts.from_json(data.get("prompts")), str(data.get("source", "prompt")))


def compose_labels(objects: list[AnnotationObject], shape: tuple[int, int]) -> np.ndarray:
    """The HxW uint8 label map (0 bg, 1 cat, 2 dog); later objects are painted on top."""
    labels = np.zeros(shape, dtype=np.uint8)
    for obj in objects:
        labels[obj.mask] = obj.class_id
    return labels


def colourise(labels: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 colour image of a label map with :data:`PALETTE`."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    for cid, rgb in PALETTE.items():
        lut[cid] = rgb
    return lut[labels]


def suggest_class(mask: np.ndarray, semantic: np.ndarray | None) -> int | None:
    """Cat or dog by majority inside ``mask`` of a semantic result, or None without evidence.

    ``semantic`` is an HxW integer label map (0/1/2), an HxW float map of P(cat) - P(dog), or
    HxWx3 class probabilities.
    """
    if semantic is None or not mask.any():
        return None
    if semantic.ndim == 2 and np.issubdtype(semantic.dtype, np.floating):
        total = float(semantic[mask].astype(np.float64).sum())
        cat, dog = max(total, 0.0), max(-total, 0.0)
    elif semantic.ndim == 2:
        inside = semantic[mask]
        cat, dog = int(np.count_nonzero(inside == CAT)), int(np.count_nonzero(inside == DOG))
    else:
        probs = semantic if semantic.shape[-1] == 3 else np.moveaxis(semantic, 0, -1)
        inside = probs[mask]
        cat, dog = float(inside[:, CAT].sum()), float(inside[:, DOG].sum())
    if cat == dog:
        return None
    return CAT if cat > dog else DOG


def objects_from_labels(labels: np.ndarray) -> list[AnnotationObject]:
    """One object per class present in a semantic label map (the auto-segment starting point)."""
    return [
        AnnotationObject(cid, labels == cid, Prompts(), "auto")
        for cid in (CAT, DOG)
        if np.any(labels == cid)
    ]


# --------------------------------------------------------------------------- the per-image document
@dataclass
class ImageAnnotation:
    """Everything annotated on one image, plus the object being edited now."""

    image_path: Path
    height: int
    width: int
    objects: list[AnnotationObject] = field(default_factory=list)
    prompts: Prompts = field(default_factory=Prompts)
    probabilities: np.ndarray | None = None  # HxW float32 of the object being edited
    editing: tuple[int, int] | None = None  # (list index, class) of an object taken back for re-edit

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    def label_map(self) -> np.ndarray:
        return compose_labels(self.objects, self.shape)

    def is_annotated(self) -> bool:
        return bool(self.objects)

    def current_mask(self, threshold: float = 0.5) -> np.ndarray | None:
        if self.probabilities is None:
            return None
        return self.probabilities >= threshold

    def clear_current(self) -> None:
        self.prompts = Prompts()
        self.probabilities = None
        self.editing = None

    def to_json(self, threshold: float = 0.5) -> dict[str, Any]:
        current = self.current_mask(threshold)
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "image": self.image_path.name,
            "width": self.width,
            "height": self.height,
            "modified": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "objects": [obj.to_json() for obj in self.objects],
            "current": {
                "prompts": self.prompts.to_json(),
                "mask": rle_encode(current) if current is not None else None,
                "editing": list(self.editing) if self.editing else None,
            },
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], image_path: Path, shape: tuple[int, int]) -> ImageAnnotation:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise SidecarError("not a PetSeg annotation file")
        if (int(data.get("height", -1)), int(data.get("width", -1))) != tuple(shape):
            raise SidecarError(f"annotation is for a {data.get('width')}x{data.get('height')} image")
        doc = cls(Path(image_path), shape[0], shape[1])
        doc.objects = [AnnotationObject.from_json(o, shape) for o in data.get("objects") or []]
        current = data.get("current") or {}
        doc.prompts = Prompts.from_json(current.get("prompts"))
        if current.get("mask"):
            mask = rle_decode(current["mask"])
            if mask.shape == tuple(shape):
                doc.probabilities = mask.astype(np.float32)
        editing = current.get("editing")
        if editing and len(editing) == 2 and int(editing[1]) in CLASS_NAMES:
            doc.editing = (int(editing[0]), int(editing[1]))
        return doc

    def save(self, path: Path | None = None, threshold: float = 0.5) -> Path:
        """Write the sidecar atomically; returns where it went (see :func:`sidecar_path`)."""
        path = path or sidecar_path(self.image_path)
        write_json_atomic(path, self.to_json(threshold))
        return path

    @classmethod
    def load(cls, image_path: Path, shape: tuple[int, int]) -> ImageAnnotation:
        """The saved annotation of ``image_path`` if there is one, else an empty document.

        Raises SidecarError when a sidecar exists but is corrupt or belongs to another size.
        """
        found = find_sidecar(image_path)
        if found is None:
            return cls(Path(image_path), shape[0], shape[1])
        try:
            data = json.loads(found.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise SidecarError(f"{found.name}: unreadable annotation ({error})") from None
        return cls.from_json(data, image_path, shape)


# --------------------------------------------------------------------------- paths and files
def write_json_atomic(path: Path, data: Any) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, separators=(",", ":"))


def user_data_dir() -> Path:
    from models.discovery import user_data_dir as base

    return base()


def _folder_writable(folder: Path) -> bool:
    sidecars = folder / SIDECAR_FOLDER
    if sidecars.is_dir():
        return os.access(sidecars, os.W_OK | os.X_OK)
    return os.access(folder, os.W_OK | os.X_OK)


def fallback_sidecar_dir(image_folder: Path) -> Path:
    """Where sidecars of a read-only folder go: the user data folder, keyed by the folder path."""
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


def mask_path(image_path: Path, output_dir: Path | None = None) -> Path:
    """``<stem>_mask.png`` beside the image, or in ``output_dir``."""
    image_path = Path(image_path)
    return (Path(output_dir) if output_dir else image_path.parent) / f"{image_path.stem}_mask.png"


def colour_path(image_path: Path, output_dir: Path | None = None) -> Path:
    image_path = Path(image_path)
    return (Path(output_dir) if output_dir else image_path.parent) / f"{image_path.stem}_mask_colour.png"


def sidecar_has_objects(image_path: Path) -> bool:
    found = find_sidecar(image_path)
    if found is None:
        return False
    try:
        data = json.loads(found.read_text(encoding="utf-8"))
        return bool(data.get("objects"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return False


def is_annotated(image_path: Path, output_dir: Path | None = None) -> bool:
    """An image counts as annotated once it has accepted objects or a saved mask PNG."""
    return sidecar_has_objects(image_path) or mask_path(image_path, output_dir).is_file()


def image_suffixes() -> tuple[str, ...]:
    try:
        from models.images import IMAGE_SUFFIXES

        return tuple(s.lower() for s in IMAGE_SUFFIXES)
    except ImportError:
        return DEFAULT_IMAGE_SUFFIXES


def list_images(folder: Path) -> list[Path]:
    """The images of ``folder`` (not recursive), sorted by name, skipping our own mask outputs."""
    suffixes = image_suffixes()
    found = []
    for path in sorted(Path(folder).iterdir(), key=lambda p: p.name.lower()):
        if not path.is_file() or path.name.startswith("."):
            continue
        if path.suffix.lower() not in suffixes:
            continue
        if path.stem.endswith("_mask") or path.stem.endswith("_mask_colour"):
            continue
        found.append(path)
    return found
