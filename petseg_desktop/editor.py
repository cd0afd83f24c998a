"""The editor: one open image's annotation, its undo stack, and the traffic with the worker.

No widgets here. The main window forwards what the canvas emits (clicks, boxes, strokes) and key
actions (accept, delete, class, undo); the editor turns each into an undoable command, asks the
worker for masks (never waiting for them), drops stale results, and autosaves (debounced).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
from PyQt5.QtCore import QObject, QTimer, pyqtSignal
from PyQt5.QtWidgets import QUndoStack

from models.classes import CAT, CLASS_NAMES
from models.errors import one_line
from models.formats import FormatError
from models.images import load_rgb
from petseg_desktop.annotation import (
    AnnotationObject,
    ImageAnnotation,
    Prompts,
    min_instance_pixels,
    moved,
    object_class,
    other_class,
    pet_instances,
    tight_box,
    unclaimed_part,
)
from petseg_desktop.commands import State, StateCommand
from petseg_desktop.folder import mask_path
from petseg_desktop.mask_files import (
    MaskNotOurs,
    mask_file_counts,
    objects_digest,
    objects_of_mask_file,
    should_write,
    state_of,
    write_masks,
)
from petseg_desktop.prefetch import ImagePrefetcher
from petseg_desktop.sidecar import open_document, save_document, sidecar_path

AUTOSAVE_DELAY_MS = 400
READ_ONLY_EDIT = "Read-only: another PetSeg is annotating this folder, edits are not possible here"
OVERLAP_RULE = "New object: pixels of accepted objects left out (B paints them in; Edit menu allows overlap)"


class Editor(QObject):
    changed = pyqtSignal()  # prompts, current mask or objects changed: redraw
    stateChanged = pyqtSignal(object, str)  # Path, mask_files state (TODO, UNSAVED or SAVED)
    maskRefused = pyqtSignal(object)  # Path of an existing mask PetSeg did not write (not overwritten)
    predictionShown = pyqtSignal(float)  # model seconds of the mask now shown
    message = pyqtSignal(str)
    error = pyqtSignal(str, str)  # title, text

    def __init__(self, worker, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.worker = worker
        self.prefetcher = ImagePrefetcher(load_rgb)
        self.stack = QUndoStack(self)
        self.doc: ImageAnnotation | None = None
        self.rgb: np.ndarray | None = None
        self.image_id = 0
        self.threshold = 0.5
        self.default_class = CAT
        self.semantic_available = False
        self.semantic_labels: np.ndarray | None = None
        self.semantic_evidence: np.ndarray | None = None  # P(cat) - P(dog), float16
        self._auto_pending = False
        self._auto_request: tuple[int, list[tuple[int, np.ndarray]]] | None = None  # refine request id, pets
        self.allow_overlap = False  # True: the model's mask may take pixels of accepted objects (old behaviour)
        self._overlap_explained = False
        self._exclusion: tuple[tuple, np.ndarray | None] = ((), None)  # (objects, editing) -> others' pixels
        self._request_id = 0
        self._waiting: dict[int, StateCommand | None] = {}
        self._resolved = True
        self._dirty = False
        self._autosave_error_shown = False
        self._protected: Path | None = None  # a bad sidecar that could not be set aside: never written over
        self.read_only = False  # another instance writes this folder's sidecars: no edits, no writes
        self.auto_write = True  # rewrite the mask PNG whenever the accepted objects change (at autosave)
        self._unusable_masks: set[Path] = set()  # photos whose mask file could not be shown (said once)
        self.mask_target: Callable[[], tuple[Path | None, bool]] = lambda: (None, False)  # output folder, colour PNG
        self.overwrite_ok: set[Path] = set()  # masks PetSeg did not write that the user let it replace
        self.refused: set[Path] = set()  # ... and those the user kept (not asked again)
        self._mask_error_shown = False
        self._digest: tuple[tuple, str] = ((), objects_digest([]))  # objects -> digest, for unchanged objects
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(AUTOSAVE_DELAY_MS)
        self._timer.timeout.connect(self.flush)
        worker.predicted.connect(self._on_predicted)
        worker.segmented.connect(self._on_segmented)
        worker.refined.connect(self._on_refined)
        worker.failed.connect(self._on_failed)

    # ------------------------------------------------------------------ images
    def open_image(self, path: Path) -> None:
        """Load ``path`` and its saved annotation; raises ImageLoadError for unreadable images."""
        path = Path(path)
        rgb = self.prefetcher.load(path)  # raises before anything changes, so the old image stays open
        self.flush()
        shape = rgb.shape[:2]
        doc, problem = open_document(path, shape, read_only=self.read_only)
        self._protected = problem.path if problem is not None and problem.kept is None else None
        if problem is not None:
            self.error.emit("Annotation not restored", str(problem))
        elif not doc.objects and doc.mask_digest is None:
            self._show_mask_file(doc)
        self.rgb, self.doc = rgb, doc
        self.image_id += 1
        self._request_id += 1
        self._waiting.clear()
        self._resolved = True
        self._dirty = False
        self.semantic_labels = self.semantic_evidence = None
        self._auto_pending = False
        self._auto_request = None
        self.stack.clear()
        self.worker.set_image(self.image_id, rgb)
        if self.semantic_available:
            self.worker.segment(self.image_id)
        self.stateChanged.emit(path, self.mask_state())  # e.g. a mask file found unusable just now
        self.changed.emit()

    def _show_mask_file(self, doc: ImageAnnotation) -> None:
        """A photo without objects whose mask file exists (made in another tool, or its annotation
        lost): its objects are that mask's, recorded as written, so the photo stays saved until edited.
        A file that is not a mask of this photo is said once per file."""
        try:
            doc.objects = objects_of_mask_file(doc.image_path, self.mask_target()[0], doc.shape)
        except (FormatError, OSError) as problem:
            if doc.image_path not in self._unusable_masks:
                self._unusable_masks.add(doc.image_path)
                self.error.emit("Mask not shown", f"The mask of {doc.image_path.name} is not shown: {one_line(problem)}")
            return
        if doc.objects:
            doc.mask_digest = objects_digest(doc.objects)

    def close_image(self) -> None:
        self.flush()
        self.doc, self.rgb = None, None
        self.stack.clear()
        self.changed.emit()

    def semantic_model_changed(self, available: bool) -> None:
        self.semantic_available = available
        self.semantic_labels = self.semantic_evidence = None
        if available and self.doc is not None:
            self.worker.segment(self.image_id)

    # ------------------------------------------------------------------ state and results
    def capture(self) -> State:
        d = self.doc
        return State(tuple(d.objects), d.prompts.copy(), d.probabilities, d.editing, self._resolved, d.strokes)

    def restore(self, state: State, predict_for: StateCommand | None = None) -> None:
        d = self.doc
        d.objects = list(state.objects)
        d.prompts = state.prompts.copy()
        d.probabilities = state.probabilities
        d.editing = state.editing
        d.strokes = state.strokes
        self._request_id += 1  # whatever was in flight no longer matches what is shown
        self._resolved = state.resolved
        if predict_for is not None or (not state.resolved and not state.prompts.is_empty()):
            self._request(predict_for)
        self._touch()

    def _request(self, command: StateCommand | None) -> None:
        d = self.doc
        rid = self._request_id
        self._waiting[rid] = command
        self.worker.predict(self.image_id, rid, d.prompts.points, d.prompts.box, d.probabilities)

    def _on_predicted(self, image_id: int, request_id: int, probs: np.ndarray, seconds: float) -> None:
        if image_id != self.image_id or self.doc is None:
            return
        if probs.shape != self.doc.shape:
            self.error.emit("Prompt model", f"mask of size {probs.shape} for a {self.doc.shape} image")
            return
        command = self._waiting.pop(request_id, None)
        for rid in [r for r in self._waiting if r < request_id]:  # superseded, never ran
            self._waiting.pop(rid)
        if command is not None:
            command.set_result(probs)
            self._resolve_following(command)
        if request_id != self._request_id:
            return  # stale: the user moved on
        self.doc.probabilities = probs
        self._resolved = True
        self.predictionShown.emit(seconds)
        self._touch()
        self._explain_exclusion()

    def _explain_exclusion(self) -> None:
        """Say once per session why the mask stops at accepted objects, when it first does."""
        excluded = self.excluded_pixels()
        probs = self.doc.probabilities
        if self._overlap_explained or excluded is None or probs is None:
            return
        if (excluded & (probs >= self.threshold)).any():
            self._overlap_explained = True
            self.message.emit(OVERLAP_RULE)

    def _resolve_following(self, command: StateCommand) -> None:
        """A result that came in after the next prompt was pushed also fixes that command's ``before``."""
        for i in range(self.stack.count() - 1):
            if self.stack.command(i) is command:
                following = self.stack.command(i + 1)
                before = getattr(following, "before", None)
                if before is not None and not before.resolved and before.prompts == command.after.prompts:
                    following.before = command.after
                return

    def _on_segmented(self, image_id: int, result: tuple, seconds: float) -> None:
        labels, evidence = result
        if image_id != self.image_id or self.doc is None or labels.shape != self.doc.shape:
            return
        self.semantic_labels = labels
        self.semantic_evidence = evidence
        self.message.emit(f"Semantic model ready ({seconds * 1000:.0f} ms)")
        if self._auto_pending:
            self._auto_pending = False
            self.auto_segment()

    def busy(self) -> bool:
        """True while a mask for the shown prompts is still being computed."""
        return not self._resolved

    def _touch(self) -> None:
        self._dirty = True
        self._timer.start()
        self.changed.emit()

    def refuses_edits(self) -> bool:
        """True (with a status message) while the folder is read-only."""
        if self.read_only:
            self.message.emit(READ_ONLY_EDIT)
        return self.read_only

    def _push(self, text: str, after: State, predict: bool = False, before: State | None = None) -> None:
        if self.refuses_edits():
            return
        self.stack.push(StateCommand(self.restore, text, before or self.capture(), after, predict))

    # ------------------------------------------------------------------ what is shown
    def excluded_pixels(self) -> np.ndarray | None:
        """Pixels the model's part of the current mask may not take (None: none, or overlap allowed).

        Those of the accepted objects other than the one being re-edited; cached per objects.
        """
        d = self.doc
        if d is None or self.allow_overlap or not d.objects:
            return None
        key = (tuple(id(o) for o in d.objects), d.editing)
        if self._exclusion[0] != key:
            others = d.others_mask()
            self._exclusion = (key, others if others.any() else None)
        return self._exclusion[1]

    def set_allow_overlap(self, allowed: bool) -> None:
        """Edit > New objects may overlap accepted ones: off, the model's mask stops at accepted objects."""
        self.allow_overlap = bool(allowed)
        self.changed.emit()

    def current_mask(self) -> np.ndarray | None:
        return None if self.doc is None else self.doc.current_mask(self.threshold, self.excluded_pixels())

    def set_threshold(self, threshold: float) -> None:
        """Re-threshold the last probabilities; never runs the model."""
        self.threshold = float(threshold)
        self.changed.emit()

    def shown_labels(self) -> np.ndarray | None:
        """The objects' label map without the object being re-edited (it shows as the current mask)."""
        if self.doc is None:
            return None
        return self.doc.label_map_without_editing()

    # ------------------------------------------------------------------ edits (all undoable)
    def add_point(self, x: int, y: int, positive: bool) -> None:
        if self.doc is None:
            return
        before = self.capture()
        after = replace(before, prompts=before.prompts.with_point(x, y, positive), resolved=False)
        self._push("Positive point" if positive else "Negative point", after, predict=True, before=before)

    def set_box(self, x0: int, y0: int, x1: int, y1: int) -> None:
        if self.doc is None:
            return
        before = self.capture()
        after = replace(before, prompts=before.prompts.with_box((x0, y0, x1, y1)), resolved=False)
        self._push("Box", after, predict=True, before=before)

    def clear_prompts(self) -> bool:
        d = self.doc
        if d is None or (d.prompts.is_empty() and d.probabilities is None and d.editing is None and d.strokes.is_empty()):
            return False
        text = "Cancel re-edit" if d.editing is not None else "Clear prompts"
        self._push(text, State(tuple(d.objects), Prompts(), None, None, True))
        return True

    def accept(self, class_id: int | None = None) -> int | None:
        """Accept the current mask as an object; returns its index (None if there is no mask)."""
        d = self.doc
        mask = self.current_mask()
        if d is None or self.refuses_edits():
            return None
        if mask is None or not mask.any():
            self.message.emit("Nothing to accept: click on the pet first")
            return None
        objects = list(d.objects)
        source = "prompt" if not d.prompts.is_empty() else "brush"
        if d.editing is not None and d.editing < len(objects):
            index = d.editing
            cid = class_id or objects[index].class_id
            objects[index] = AnnotationObject(cid, mask.copy(), d.prompts.copy(), source, d.strokes)
        else:
            suggested = object_class(mask, self.semantic_labels)
            cid = class_id or suggested or self.default_class
            how = "suggested by the semantic model" if suggested and not class_id else "press C to change"
            self.message.emit(f"Accepted a {CLASS_NAMES[cid]} ({how})")
            objects.append(AnnotationObject(cid, mask.copy(), d.prompts.copy(), source, d.strokes))
            index = len(objects) - 1
        self._push(f"Accept {CLASS_NAMES[cid]}", State(tuple(objects), Prompts(), None, None, True))
        return index

    def delete_object(self, index: int) -> None:
        d = self.doc
        if d is None or not 0 <= index < len(d.objects):
            return
        objects = [o for i, o in enumerate(d.objects) if i != index]
        before = self.capture()
        editing = d.editing
        if editing == index:
            after = State(tuple(objects), Prompts(), None, None, True)
        else:
            shifted = None if editing is None else (editing - 1 if editing > index else editing)
            after = replace(before, objects=tuple(objects), editing=shifted)
        self._push(f"Delete {d.objects[index].class_name}", after, before=before)

    def set_object_class(self, index: int, class_id: int) -> None:
        d = self.doc
        if d is None or not 0 <= index < len(d.objects) or d.objects[index].class_id == class_id:
            return
        self.default_class = class_id
        objects = list(d.objects)
        objects[index] = replace(objects[index], class_id=class_id)
        before = self.capture()
        self._push(f"Class {CLASS_NAMES[class_id]}", replace(before, objects=tuple(objects)), before=before)

    def toggle_class(self, index: int) -> None:
        if self.doc is not None and 0 <= index < len(self.doc.objects):
            self.set_object_class(index, other_class(self.doc.objects[index].class_id))

    def move_object(self, index: int, to: int) -> None:
        """Move object ``index`` to position ``to`` in the paint order (later objects are in front)."""
        d = self.doc
        if d is None or not (0 <= index < len(d.objects) and 0 <= to < len(d.objects)) or index == to:
            return
        objects, order = moved(d.objects, index, to)
        before = self.capture()
        editing = None if d.editing is None else order.index(d.editing)
        text = f"Move {d.objects[index].class_name} {'forward' if to > index else 'back'}"
        self._push(text, replace(before, objects=tuple(objects), editing=editing), before=before)

    def edit_object(self, index: int) -> None:
        """Take object ``index`` back into the editor: its prompts, mask and strokes become current."""
        d = self.doc
        if d is None or not 0 <= index < len(d.objects):
            return
        obj = d.objects[index]
        after = State(tuple(d.objects), obj.prompts.copy(), obj.mask.astype(np.float32), index, True, obj.strokes)
        self._push(f"Re-edit {obj.class_name}", after)

    def brush(self, stroke: list[tuple[int, int]], radius: int, erase: bool) -> None:
        """Add a brush (or eraser) stroke to the edit layer over the model's mask."""
        import cv2

        d = self.doc
        if d is None or (erase and self.current_mask() is None):
            return
        paint = np.zeros(d.shape, dtype=np.uint8)
        pts = np.asarray(stroke, dtype=np.int32).reshape(-1, 1, 2)
        cv2.polylines(paint, [pts], False, 1, thickness=max(1, 2 * radius), lineType=cv2.LINE_8)
        for x, y in stroke:
            cv2.circle(paint, (int(x), int(y)), radius, 1, -1)
        before = self.capture()
        after = replace(before, strokes=d.strokes.with_stroke(paint.astype(bool), erase))
        self._push("Erase" if erase else "Brush", after, before=before)

    def auto_segment(self) -> bool:
        """Start from the semantic model: one object per pet, below the existing objects.

        The semantic model's pet pixels are split into pets (:func:`pet_instances`); the prompt model
        refines each from its tight box in the worker, and :meth:`_on_refined` adds them all as one
        undo step. Returns False when nothing was started.
        """
        d = self.doc
        if d is None or self.refuses_edits():
            return False
        if self.semantic_labels is None:
            if not self.semantic_available:
                self.error.emit("Auto-segment", "No semantic model is loaded; pick one in the Model menu.")
                return False
            self._auto_pending = True
            self.worker.segment(self.image_id)
            self.message.emit("Auto-segment: waiting for the semantic model…")
            return True
        pets = pet_instances(self.semantic_labels)
        if not pets:
            self.message.emit("Auto-segment: the semantic model found no cat or dog")
            return False
        self._request_id += 1
        self._auto_request = (self._request_id, pets)
        self.worker.refine(self.image_id, self._request_id, [tight_box(mask) for _, mask in pets])
        self.message.emit(f"Auto-segment: refining {len(pets)} pet{'s' if len(pets) > 1 else ''}…")
        return True

    def auto_busy(self) -> bool:
        """True while an auto-segment waits for the prompt model."""
        return self._auto_request is not None

    def _on_refined(self, image_id: int, request_id: int, probs: list[np.ndarray], seconds: float) -> None:
        if image_id != self.image_id or self.doc is None or self._auto_request is None:
            return
        if request_id != self._auto_request[0] or any(p.shape != self.doc.shape for p in probs):
            return
        self._add_auto_objects(self._auto_request[1], probs)

    def _on_failed(self, what: str, _text: str) -> None:
        """Without a prompt model, auto-segment keeps the semantic model's pets as they are."""
        if what == "refine" and self._auto_request is not None and self.doc is not None:
            self._add_auto_objects(self._auto_request[1], [None] * len(self._auto_request[1]))

    def _add_auto_objects(self, pets: list[tuple[int, np.ndarray]], probs: list[np.ndarray | None]) -> None:
        """Add one object per pet (refined mask inside its box, else the semantic one), as one undo step.

        Unless overlap is allowed, no object takes pixels of the accepted objects or of a larger pet,
        and a pet mostly taken already is left out (:func:`unclaimed_part`).
        """
        self._auto_request = None
        d = self.doc
        taken = np.zeros(d.shape, bool) if self.allow_overlap else d.label_map() > 0
        new = []
        min_pixels = min_instance_pixels(d.shape)
        for (cid, semantic), p in zip(pets, probs):
            mask = unclaimed_part(semantic if p is None else self._refined_in_box(p, semantic), taken, min_pixels)
            if mask is None:
                continue
            if not self.allow_overlap:
                taken |= mask
            new.append(AnnotationObject(object_class(mask, self.semantic_labels) or cid, mask, Prompts(), "auto"))
        if not new:
            self.message.emit("Auto-segment: every pet found is already annotated")
            return
        before = self.capture()
        editing = None if before.editing is None else before.editing + len(new)
        self._push("Auto-segment", replace(before, objects=(*new, *before.objects), editing=editing), before=before)
        self.message.emit(f"Auto-segment: {len(new)} object{'s' if len(new) > 1 else ''}, one per pet")

    def _refined_in_box(self, probs: np.ndarray, semantic: np.ndarray) -> np.ndarray:
        """The prompt model's mask at the threshold inside the pet's box; the semantic mask if that is empty."""
        x0, y0, x1, y1 = tight_box(semantic)
        mask = np.zeros(semantic.shape, bool)
        mask[y0 : y1 + 1, x0 : x1 + 1] = probs[y0 : y1 + 1, x0 : x1 + 1] >= self.threshold
        return mask if mask.any() else semantic

    def import_objects(self, imported: list[AnnotationObject], replace_existing: bool = False) -> int:
        """Add ``imported`` after the objects (or replace them), undoably, and save at once.

        Returns how many objects the photo had before (0 when nothing changed: no document, read-only).
        """
        d = self.doc
        if d is None or self.refuses_edits():
            return 0
        before = self.capture()
        if replace_existing:
            after = State(tuple(imported), Prompts(), None, None, True)
        else:
            after = replace(before, objects=(*before.objects, *imported))
        self._push(f"Import {len(imported)} objects", after, before=before)
        self.flush()
        return len(before.objects)

    # ------------------------------------------------------------------ files
    def flush(self, force: bool = False) -> bool:
        """Write the sidecar now if anything changed since the last write (or always, with ``force``).

        Returns False when the write failed (reported once through ``error``); never writes while
        read-only.
        """
        self._timer.stop()
        if self.doc is None or self.read_only or not (self._dirty or force):
            return True
        self._write_automatically()
        path = sidecar_path(self.doc.image_path)
        try:
            if path == self._protected:
                raise OSError(f"{path.name} holds an annotation that could not be read; it is not overwritten")
            save_document(self.doc, path, threshold=self.threshold)
        except OSError as problem:
            if not self._autosave_error_shown:
                self._autosave_error_shown = True
                self.error.emit("Autosave failed", f"Cannot write the annotation of {self.doc.image_path.name}: {problem}")
            return False
        self._dirty = False
        self.stateChanged.emit(self.doc.image_path, self.mask_state())
        return True

    def objects_digest(self) -> str:
        """:func:`mask_files.objects_digest` of the objects, computed again only when they changed."""
        objects = tuple(self.doc.objects) if self.doc is not None else ()
        known, digest = self._digest
        if len(known) != len(objects) or any(a is not b for a, b in zip(known, objects)):
            digest = objects_digest(objects)
            self._digest = (objects, digest)
        return digest

    def mask_state(self) -> str:
        """The open photo's state for the file list: nothing yet, mask missing or stale, mask current."""
        d = self.doc
        target = mask_path(d.image_path, self.mask_target()[0])
        exists = mask_file_counts(d.image_path, target, d.mask_digest, bool(d.objects), d.image_path in self._unusable_masks)
        return state_of(self.objects_digest(), bool(d.objects), d.mask_digest, exists)

    def _write_automatically(self) -> None:
        """With ``auto_write``, rewrite the mask when the objects changed since it was last written.

        A mask PetSeg did not write is left alone (``maskRefused``, once per file); a failed write is
        reported once.
        """
        output_dir, colour = self.mask_target()
        target = mask_path(self.doc.image_path, output_dir)
        if not self.auto_write or target in self.refused or not should_write(self.doc, output_dir, self.objects_digest()):
            return
        try:
            write_masks(self.doc, output_dir, colour, overwrite=tuple(self.overwrite_ok))
        except MaskNotOurs as refusal:
            self.refused.add(refusal.path)
            self.maskRefused.emit(refusal.path)
        except (OSError, ValueError) as problem:
            if not self._mask_error_shown:
                self._mask_error_shown = True
                self.error.emit("Mask not written", f"Cannot write the mask of {self.doc.image_path.name}: {problem}")

    def save_mask(self, output_dir: Path | None = None, colour: bool = False) -> list[Path]:
        """Write the index PNG (0/1/2, original size) and optionally the colour PNG, marked as PetSeg's.

        Raises MaskNotOurs (nothing written) for an existing file PetSeg did not write that is not
        in ``overwrite_ok``, OSError on failure. The sidecar records what was written.
        """
        d = self.doc
        if d is None or self.refuses_edits():
            return []
        written = write_masks(d, output_dir, colour, overwrite=tuple(self.overwrite_ok))
        self._dirty = True
        self.flush()
        return written
