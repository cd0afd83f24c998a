"""The mask PNGs the app writes beside the photos, and whether they match the annotation.

A photo's file-list state is one of :data:`TODO` (nothing yet), :data:`UNSAVED` (objects whose mask
is not written, or was written for other objects) and :data:`SAVED` (the mask file exists and was
written from the objects the sidecar holds now). "Current" is decided by a digest of the objects'
classes and masks (their run lengths as the sidecar stores them), recorded in the sidecar's optional
``mask_written`` field when the mask is written: robust to clock changes and copies, and cheap (no
mask is decoded). Masks carry the PNG text chunk :data:`APP_MARK`; an existing mask without it (or
petseg-export's mark) was written by someone else and is never replaced unless the user agrees;
opened with no annotation, such a mask is shown as objects (:func:`objects_of_mask_file`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from models.classes import MASK_PALETTE
from models.formats.core import FormatError, photo_size
from models.formats.png import load_mask_checked, objects_from_maps
from models.images import save_png_atomic
from petseg_desktop.annotation import AnnotationObject, ImageAnnotation, Prompts
from petseg_desktop.export_files import APP_MARK, EXPORT_MARK, has_png_mark
from petseg_desktop.folder import colour_path, mask_path
from petseg_desktop.sidecar import (
    CLASS_IDS,
    SidecarError,
    find_sidecar,
    load_document,
    read_sidecar,
    rle_encode,
    save_document,
)

TODO, UNSAVED, SAVED = "todo", "unsaved", "annotated"
MASK_FILE_SOURCE = "mask file"  # AnnotationObject.source of the objects read from an existing mask


class MaskNotOurs(OSError):
    """An existing mask file that PetSeg did not write is in the way (``path``)."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"{path.name} exists and was not written by PetSeg; it is not overwritten")
        self.path = path


def written_by_petseg(path: Path) -> bool:
    """Whether ``path`` is a PNG with the app's or petseg-export's mark (header only; False if unreadable)."""
    return has_png_mark(path, APP_MARK, EXPORT_MARK)


def _digest(pairs: Sequence[tuple[int, Any]]) -> str:
    text = json.dumps([[cid, rle] for cid, rle in pairs], sort_keys=True, separators=(",", ":"))
    return hashlib.sha1(text.encode()).hexdigest()


def objects_digest(objects: Sequence[AnnotationObject]) -> str:
    """Digest of what a mask is made of: each object's class and mask, in paint order."""
    return _digest([(o.class_id, rle_encode(o.mask)) for o in objects])


def _json_digest(objects: list[dict[str, Any]]) -> str:
    """:func:`objects_digest` of the sidecar's (checked) object JSON, without decoding any mask."""
    return _digest([(o["class_id"] if "class_id" in o else CLASS_IDS[o["class"]], o["mask"]) for o in objects])


def state_of(objects_digest_now: str, has_objects: bool, recorded: str | None, mask_exists: bool) -> str:
    """The file-list state from the objects' digest, the digest recorded at the last mask write and the file.

    A mask file with no objects and no write of PetSeg's recorded was made elsewhere and nothing
    disagrees with it (e.g. a stray click undone): saved, as when there is no annotation at all.
    An all-background mask recorded for no objects (earlier versions wrote one) is nothing yet.
    """
    if not has_objects and recorded == objects_digest_now:
        return TODO
    if mask_exists and (recorded == objects_digest_now or (recorded is None and not has_objects)):
        return SAVED
    return UNSAVED if has_objects or (mask_exists and recorded is not None) else TODO


def mask_file_counts(image_path: Path, mask: Path, recorded: str | None, has_objects: bool,
                     unusable: bool = False) -> bool:
    """Whether the mask file exists and counts for :func:`state_of`. One made elsewhere (no write of
    PetSeg's recorded, no objects to compare) counts only when it is the photo's size (headers only)
    and not found ``unusable`` when opened: a mask that is not of this photo is no annotation of it."""
    if not mask.is_file():
        return False
    if recorded is not None or has_objects:
        return True
    if unusable:
        return False
    try:
        return photo_size(mask) == photo_size(image_path)
    except (FormatError, OSError):
        return False


def mask_state(image_path: Path, output_dir: Path | None = None) -> str:
    """The state of a photo that is not open, from its sidecar and its mask file."""
    found = find_sidecar(image_path)
    objects: list[dict[str, Any]] = []
    recorded, digest = None, ""
    try:
        data = read_sidecar(found) if found is not None else None
        if isinstance(data, dict) and isinstance(data.get("objects"), list):
            recorded = (data.get("mask_written") or {}).get("objects_sha1")
            objects, digest = data["objects"], _json_digest(data["objects"])
    except (SidecarError, AttributeError, KeyError, TypeError):
        objects, recorded = [], None  # an unreadable annotation: as if there were none
    exists = mask_file_counts(image_path, mask_path(image_path, output_dir), recorded, bool(objects))
    return state_of(digest, bool(objects), recorded, exists)


def should_write(doc: ImageAnnotation, output_dir: Path | None, digest: str) -> bool:
    """Whether automatic writing has anything to do: the objects changed since the last write, and
    there are objects or an earlier mask of PetSeg's to remove (never an all-background file)."""
    if digest == doc.mask_digest and mask_path(doc.image_path, output_dir).is_file():
        return False
    return bool(doc.objects) or written_by_petseg(mask_path(doc.image_path, output_dir))


def write_masks(
    doc: ImageAnnotation, output_dir: Path | None, colour: bool, overwrite: Sequence[Path] = ()
) -> list[Path]:
    """Write ``doc``'s index PNG (and the colour PNG) atomically with the app's mark; returns the files written.

    Raises :class:`MaskNotOurs` before writing anything when a target exists that PetSeg did not
    write and is not in ``overwrite``; OSError when a write fails. Sets ``doc.mask_digest``.
    With no objects nothing is written and the photo's own mask files are removed instead
    (:func:`remove_own_masks`): an all-background file would read as a finished annotation.
    """
    targets = [mask_path(doc.image_path, output_dir)] + ([colour_path(doc.image_path, output_dir)] if colour else [])
    if not doc.objects:
        remove_own_masks(doc, targets, overwrite)
        return []
    for target in targets:
        if os.path.lexists(target) and target not in overwrite and not written_by_petseg(target):
            raise MaskNotOurs(target)
    if output_dir is not None:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
    labels = doc.label_map()
    save_png_atomic(targets[0], labels, text=APP_MARK)
    if colour:
        save_png_atomic(targets[1], labels, palette=MASK_PALETTE, text=APP_MARK)  # the dataset's colours
    doc.mask_digest = objects_digest(doc.objects)
    return targets


def remove_own_masks(doc: ImageAnnotation, targets: Sequence[Path], overwrite: Sequence[Path] = ()) -> None:
    """Remove those of ``targets`` that PetSeg wrote (or the user agreed to replace, ``overwrite``);
    the photo then has no mask and reads as not annotated."""
    for target in targets:
        if target.is_file() and (target in overwrite or written_by_petseg(target)):
            target.unlink()
    doc.mask_digest = None


def objects_of_mask_file(image_path: Path, output_dir: Path | None, shape: tuple[int, int]) -> list[AnnotationObject]:
    """The objects (one per class) of the photo's existing mask file, [] when there is none.

    For a photo opened without objects: a mask made in another tool (or whose annotation was lost)
    is shown, not just counted. FormatError (one line) for a file that is not a mask of this photo;
    its size is checked from the header before anything is decoded.
    """
    path = mask_path(image_path, output_dir)
    if not path.is_file():
        return []
    labels = load_mask_checked(path, shape, beside="photo")
    return [AnnotationObject(o.class_id, o.mask, Prompts(), MASK_FILE_SOURCE) for o in objects_from_maps(labels, None, path)]


def load_saved(image_path: Path) -> ImageAnnotation:
    """The saved annotation of a photo that is not open (its size read from the sidecar); SidecarError if unusable."""
    found = find_sidecar(image_path)
    data = read_sidecar(found) if found is not None else None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), int) for k in ("height", "width")):
        raise SidecarError(f"{Path(image_path).name}: no usable annotation", found)
    return load_document(image_path, (data["height"], data["width"]))


def save_photo_mask(image_path: Path, output_dir: Path | None, colour: bool, overwrite: Sequence[Path] = ()) -> list[Path]:
    """Write the mask of a photo that is not open from its sidecar, and record it there (see :func:`write_masks`)."""
    doc = load_saved(image_path)
    written = write_masks(doc, output_dir, colour, overwrite)
    save_document(doc)
    return written
