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

    def apply(self, model_mask: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray | None:
        """The mask shown: ``model_mask`` (None: empty) with the strokes; None if there is neither."""
        if model_mask is None and self.painted is None:
            return None
        mask = np.zeros(shape, dtype=bool) if model_mask is None else model_mask.copy()
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


def objects_from_labels(labels: np.ndarray) -> list[AnnotationObject]:
    """One object per class present in a semantic label map (the auto-segment starting point)."""
    return [
        AnnotationObject(cid, labels == cid, Prompts(), "auto")
        for cid in PET_CLASSES
        if np.any(labels == cid)
    ]


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

    def current_mask(self, threshold: float = 0.5) -> np.ndarray | None:
        """The mask of the object being edited: the model's at ``threshold``, plus painted, minus erased."""
        model = None if self.probabilities is None else self.probabilities >= threshold
        return self.strokes.apply(model, self.shape)


def moved(items: list, index: int, to: int) -> tuple[list, list[int]]:
    """``items`` with the one at ``index`` moved to position ``to``, and the new order (old indices)."""
    order = list(range(len(items)))
    order.insert(to, order.pop(index))
    return [items[i] for i in order], order
