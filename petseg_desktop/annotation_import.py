"""Another tool's annotations (COCO, labelme, YOLO, a folder of mask PNGs) as accepted objects of a
photo folder, matched by file name. No Qt: the dialog reads and matches in a thread, then the main
window hands the open photo's objects to the editor (undoable) and writes the others' sidecars.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from models.errors import one_line
from models.formats import FormatError, PhotoObjects
from models.formats.coco import import_coco
from models.formats.core import photo_size
from models.formats.labelme import import_labelme
from models.formats.png import import_mask_folder
from models.formats.yolo import import_yolo
from petseg_desktop.annotation import AnnotationObject
from petseg_desktop.annotation_export import ExportCancelled, count
from petseg_desktop.sidecar import SidecarError, open_document, save_document, sidecar_path

SOURCE = "import"  # AnnotationObject.source of every imported object
IMPORT_FORMATS = {  # format -> what its path is, for the dialog
    "coco": "a COCO annotations .json file",
    "labelme": "a folder of labelme .json files (or one file)",
    "yolo": "a YOLO-seg data set folder (labels/, data.yaml)",
    "png": "a folder of index mask PNGs (<photo stem>[_mask].png)",
}


@dataclass
class ImportPlan:
    """Imported objects per photo of the folder, and what could not be used (one line each)."""

    matched: dict[Path, list[AnnotationObject]] = field(default_factory=dict)
    unmatched: list[str] = field(default_factory=list)  # names in the data set not among the photos
    failed: list[tuple[str, str]] = field(default_factory=list)  # (name, reason)

    @property
    def objects(self) -> int:
        return sum(len(objects) for objects in self.matched.values())


def read_annotations(fmt: str, path: Path, photos: Path) -> list[PhotoObjects]:
    """The photos and objects of ``path`` in ``fmt`` (see IMPORT_FORMATS); sizes are checked against
    the photos in the folder ``photos`` where the format allows. FormatError for malformed files."""
    if not path.exists():
        raise FormatError(path, "does not exist")
    readers: dict[str, Callable[[], list[PhotoObjects]]] = {
        "coco": lambda: import_coco(path, photos=photos),
        "labelme": lambda: import_labelme(path),
        "yolo": lambda: import_yolo(path),
        "png": lambda: import_mask_folder(path, photos=photos),
    }
    if fmt not in readers:
        raise ValueError(f"unknown import format {fmt!r}: one of {', '.join(readers)}")
    return readers[fmt]()


def _find(name: str, by_name: dict[str, Path], by_stem: dict[str, list[Path]]) -> Path | None:
    """The photo called ``name``, else the only photo with its stem (masks are PNGs of JPEG photos)."""
    if name in by_name:
        return by_name[name]
    same_stem = by_stem.get(Path(name).stem, [])
    return same_stem[0] if len(same_stem) == 1 else None


def plan_import(
    items: list[PhotoObjects],
    photos: list[Path],
    progress: Callable[[int, int, str], None] | None = None,
    cancel: threading.Event | None = None,
) -> ImportPlan:
    """Match ``items`` to ``photos`` by file name and check each size against the photo's header."""
    by_name = {p.name: p for p in photos}
    by_stem: dict[str, list[Path]] = {}
    for p in photos:
        by_stem.setdefault(p.stem, []).append(p)
    plan = ImportPlan()
    for done, item in enumerate(items):
        if cancel is not None and cancel.is_set():
            raise ExportCancelled("cancelled")
        name = item.photo.name
        if progress is not None:
            progress(done + 1, len(items), name)
        photo = _find(name, by_name, by_stem)
        if photo is None:
            plan.unmatched.append(name)
            continue
        try:
            height, width = photo_size(photo)
        except FormatError as error:
            plan.failed.append((photo.name, one_line(error)))
            continue
        if (height, width) != item.shape:
            plan.failed.append((photo.name, f"photo is {width}x{height}, the annotation {item.width}x{item.height}"))
            continue
        objects = [AnnotationObject(o.class_id, o.mask.astype(bool), source=SOURCE) for o in item.objects if o.mask.any()]
        plan.matched.setdefault(photo, []).extend(objects)
    return plan


def combined(existing: list[AnnotationObject], imported: list[AnnotationObject], replace: bool) -> list[AnnotationObject]:
    """The objects a photo has after the import: the imported ones only, or added after its own."""
    return list(imported) if replace else [*existing, *imported]


def write_imported(photo: Path, imported: list[AnnotationObject], replace: bool) -> tuple[int, str | None]:
    """Add (or, with ``replace``, set) ``photo``'s objects in its sidecar; returns how many objects
    it had before and a one-line note when its old sidecar was unreadable (it is set aside)."""
    doc, problem = open_document(photo, photo_size(photo))
    before = len(doc.objects)
    doc.objects = combined(doc.objects, imported, replace)
    try:
        save_document(doc, sidecar_path(photo))
    except OSError as error:
        raise SidecarError(f"{photo.name}: cannot write its annotation: {error.strerror or one_line(error)}") from None
    return before, None if problem is None else one_line(problem)


@dataclass
class ImportSummary:
    """What an import did, told in :meth:`lines`."""

    photos: int = 0
    objects: int = 0
    added_to: int = 0  # photos that had objects and kept them
    replaced: int = 0  # photos whose objects were replaced
    unmatched: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)

    def lines(self) -> list[str]:
        head = f"Imported {count(self.objects, 'object')} into {count(self.photos, 'photo')}"
        if self.added_to:
            head += f"; added to the objects of {count(self.added_to, 'photo')}"
        if self.replaced:
            head += f"; replaced the objects of {count(self.replaced, 'photo')}"
        unmatched = [f"not in this folder ({len(self.unmatched)}): {', '.join(self.unmatched)}"] if self.unmatched else []
        return [head, *unmatched, *(f"failed: {name}: {reason}" for name, reason in self.failed)]


def apply_plan(
    plan: ImportPlan, replace: bool, current: Path | None, import_current: Callable[[list[AnnotationObject]], int]
) -> ImportSummary:
    """Give each matched photo its imported objects: ``import_current(objects)`` for the photo open
    in the editor (it returns how many objects that photo had), the sidecar for the others."""
    summary = ImportSummary(unmatched=list(plan.unmatched), failed=list(plan.failed))
    for photo, objects in plan.matched.items():
        try:
            if photo == current:
                had = import_current(objects)
            else:
                had, note = write_imported(photo, objects, replace)
                if note:
                    summary.failed.append((photo.name, f"its old annotation was unreadable: {note}"))
        except (SidecarError, FormatError, OSError) as error:
            summary.failed.append((photo.name, one_line(error)))
            continue
        summary.photos += 1
        summary.objects += len(objects)
        if had:
            summary.replaced += replace
            summary.added_to += not replace
    return summary
