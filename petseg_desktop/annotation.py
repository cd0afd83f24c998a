"""The annotation document in memory: prompts, accepted objects, and one image's annotation.

Pure Python and NumPy (no Qt, no file I/O), so it is unit-testable on its own. One
:class:`ImageAnnotation` holds what the user made for one image: the accepted objects (class +
full-resolution mask + the prompts that produced it) and the prompts and mask of the object being
edited now. :mod:`petseg_desktop.sidecar` reads and writes it as JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.classes import CAT, CLASS_NAMES, DOG, PET_CLASSES


def other_class(class_id: int) -> int:
    return DOG if class_id == CAT else CAT


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


@dataclass(frozen=True)
class Strokes:
    """Brush and eraser edits kept on top of the model's mask (HxW boolean maps, None: no pixel).

    The mask shown is ``(model mask | painted) & ~erased``; a new model result replaces the model's
    part only, so strokes survive further clicks. Treated as an immutable value (undo snapshots
    share it): :meth:`with_stroke` returns a new one.
    """

    painted: np.ndarray | None = None
    erased: np.ndarray | None = None

    def is_empty(self) -> bool:
        return self.painted is None and self.erased is None

    def with_stroke(self, area: np.ndarray, erase: bool) -> Strokes:
        """These strokes plus one over ``area`` (a later stroke wins over earlier ones there)."""
        area = area.astype(bool)
        added, removed = (self.erased, self.painted) if erase else (self.painted, self.erased)
        added = area.copy() if added is None else added | area
        if removed is not None:
            removed = removed & ~area
            removed = removed if removed.any() else None
        return Strokes(removed, added) if erase else Strokes(added, removed)

    def apply(
        self, model_mask: np.ndarray | None, shape: tuple[int, int], exclude: np.ndarray | None = None
    ) -> np.ndarray | None:
        """The mask shown: ``model_mask`` (None: empty) with the strokes; None if there is neither.

        ``exclude`` (HxW bool) is taken out of the model's part only: painted pixels stay, since a
        brush stroke is an explicit choice of the user.
        """
        if model_mask is None and self.painted is None:
            return None
        mask = np.zeros(shape, dtype=bool) if model_mask is None else model_mask.copy()
        if exclude is not None:
            mask &= ~exclude
        if self.painted is not None:
            mask |= self.painted
        if self.erased is not None:
            mask &= ~self.erased
        return mask


@dataclass
class AnnotationObject:
    """An accepted object: its class, full-resolution boolean mask, the prompts behind it, and the
    brush/eraser strokes that were part of it (kept so that a re-edit keeps them)."""

    class_id: int
    mask: np.ndarray
    prompts: Prompts = field(default_factory=Prompts)
    source: str = "prompt"  # "prompt", "auto" (semantic model) or "brush"
    strokes: Strokes = field(default_factory=Strokes)

    @property
    def class_name(self) -> str:
        return CLASS_NAMES[self.class_id] if self.class_id in PET_CLASSES else str(self.class_id)

    @property
    def area(self) -> int:
        return int(np.count_nonzero(self.mask))


def compose_labels(objects: list[AnnotationObject], shape: tuple[int, int]) -> np.ndarray:
    """The HxW uint8 label map (0 bg, 1 cat, 2 dog); later objects are painted on top."""
    labels = np.zeros(shape, dtype=np.uint8)
    for obj in objects:
        labels[obj.mask] = obj.class_id
    return labels


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


def object_class(mask: np.ndarray, labels: np.ndarray | None) -> int | None:
    """Cat or dog for one object: the majority of the semantic model's cat/dog pixels inside ``mask``.

    Falls back to the photo-level majority (all pet pixels of ``labels``) when the object holds no
    pet pixel; None when the photo has none either (or on a tie, or without labels).
    """
    if labels is None:
        return None
    inside = labels[mask]
    if not np.isin(inside, PET_CLASSES).any():
        return suggest_class(np.isin(labels, PET_CLASSES), labels)
    return suggest_class(mask, labels)


def min_instance_pixels(shape: tuple[int, int], fraction: float = 0.002, floor: int = 500) -> int:
    """The smallest pet kept by :func:`pet_instances`: ``fraction`` of the photo or ``floor`` px, the larger."""
    return max(int(floor), int(round(fraction * shape[0] * shape[1])))


def pet_instances(labels: np.ndarray, min_pixels: int | None = None, opening: int = 3) -> list[tuple[int, np.ndarray]]:
    """Split a semantic label map into pets: ``(class_id, HxW bool mask)`` per connected component.

    Each class is opened with a ``opening``-pixel square first (thin bridges and single stray pixels
    go), then split into 8-connected components; components under ``min_pixels`` (default
    :func:`min_instance_pixels`) are dropped as specks. Largest first.
    """
    import cv2

    min_pixels = min_instance_pixels(labels.shape) if min_pixels is None else min_pixels
    kernel = np.ones((opening, opening), np.uint8)
    found = []
    for cid in PET_CLASSES:
        binary = (labels == cid).astype(np.uint8)
        if opening > 1:
            binary = cv2.morphologyEx(binary, cv2.MORPH_OPEN, kernel)
        count, components, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
        for i in range(1, count):
            if stats[i, cv2.CC_STAT_AREA] >= min_pixels:
                found.append((int(stats[i, cv2.CC_STAT_AREA]), cid, components == i))
    found.sort(key=lambda item: -item[0])
    return [(cid, mask) for _, cid, mask in found]


def unclaimed_part(mask: np.ndarray, taken: np.ndarray, min_pixels: int) -> np.ndarray | None:
    """The part of a found pet's ``mask`` outside ``taken`` (pixels of other objects), or None when
    at least half of it is taken or the rest is under ``min_pixels``: what is left of a pet already
    annotated is the fringe around its object, not another pet."""
    rest = mask & ~taken
    left = int(np.count_nonzero(rest))
    if left < min_pixels or 2 * left <= int(np.count_nonzero(mask)):
        return None
    return rest


def tight_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)`` of the pixels of a non-empty mask (inclusive)."""
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def objects_from_labels(labels: np.ndarray, min_pixels: int | None = None) -> list[AnnotationObject]:
    """One object per pet (see :func:`pet_instances`) of a semantic label map, unrefined."""
    return [AnnotationObject(cid, mask, Prompts(), "auto") for cid, mask in pet_instances(labels, min_pixels)]


@dataclass
class ImageAnnotation:
    """Everything annotated on one image, plus the object being edited now."""

    image_path: Path
    height: int
    width: int
    objects: list[AnnotationObject] = field(default_factory=list)
    prompts: Prompts = field(default_factory=Prompts)
    probabilities: np.ndarray | None = None  # HxW float32 of the object being edited (the model's part)
    strokes: Strokes = field(default_factory=Strokes)  # brush/eraser edits on top of the model's part
    editing: int | None = None  # index in ``objects`` of the object taken back for re-edit
    photo: dict | None = None  # fingerprint of the photo file this was made on (see sidecar.photo_fingerprint)
    mask_digest: str | None = None  # digest of the objects when their mask PNG was last written (mask_files)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    def label_map(self) -> np.ndarray:
        return compose_labels(self.objects, self.shape)

    def is_annotated(self) -> bool:
        return bool(self.objects)

    def others_mask(self) -> np.ndarray:
        """The pixels of the accepted objects other than the one being re-edited."""
        return self.label_map_without_editing() > 0

    def label_map_without_editing(self) -> np.ndarray:
        """:meth:`label_map` without the object being re-edited (it shows as the current mask)."""
        return compose_labels([o for i, o in enumerate(self.objects) if i != self.editing], self.shape)

    def current_mask(self, threshold: float = 0.5, exclude: np.ndarray | None = None) -> np.ndarray | None:
        """The mask of the object being edited: the model's at ``threshold`` minus ``exclude`` (e.g.
        :meth:`others_mask`), plus painted, minus erased."""
        model = None if self.probabilities is None else self.probabilities >= threshold
        return self.strokes.apply(model, self.shape, exclude)


def moved(items: list, index: int, to: int) -> tuple[list, list[int]]:
    """``items`` with the one at ``index`` moved to position ``to``, and the new order (old indices)."""
    order = list(range(len(items)))
    order.insert(to, order.pop(index))
    return [items[i] for i in order], order
