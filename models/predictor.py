"""Segment photos with PetSeg checkpoints: interactive prompts and whole-image semantic labels.

Modelled on Segment Anything's ``SamPredictor``: :meth:`Predictor.set_image` does the per-image
work once (letterbox, normalise, encode), then :meth:`Predictor.predict` turns clicks, a box and
the previous mask into probabilities at the photo's own resolution, cheaply, once per click::

    predictor = load_predictor()          # best discovered prompt checkpoint, CUDA if available
    predictor.set_image(rgb)              # HxWx3 uint8
    prob = predictor.predict(points=[(120, 80, True)], box=(40, 30, 300, 260))
    prob = predictor.predict(points=[(120, 80, True), (20, 200, False)], prev_mask=prob)

Large photos are refined on a zoomed crop around the object (the RITM/FocalClick zoom-in idea), so
boundaries stay sharp at 12-24 MP. Pure Python + torch: no Qt.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import cv2
import numpy as np
import torch
from torch import nn

from models.checkpoint import CheckpointError, load_checkpoint
from models.discovery import BUNDLED, CheckpointEntry, discover_checkpoints, search_folders
from models.prompts import render_prompt_maps
from models.classes import PROMPT, SEMANTIC
from models.geometry import Letterbox, clip_box, letterbox, to_model_tensor, unletterbox
from models.images import check_image

Point = tuple[float, float, bool]
Box = tuple[float, float, float, float]
Rect = tuple[int, int, int, int]  # x0, y0, x1, y1 in image pixels, x1/y1 exclusive

# Zoom-in refinement: used when the photo's long side is at least ZOOM_MIN_RATIO x the model input
# and the object's crop (its prompts' bounding box grown by ZOOM_EXPAND) is under ZOOM_MAX_AREA of
# the photo. A cached crop is reused while it still holds the object with ZOOM_REUSE_MARGIN context
# and is at most ZOOM_REUSE_AREA x the crop wanted now, so most clicks only run the decoder.
ZOOM_MIN_RATIO = 2.0
ZOOM_EXPAND = 0.4
ZOOM_MAX_AREA = 0.5
ZOOM_REUSE_MARGIN = 0.1
ZOOM_REUSE_AREA = 2.0

# torch intra-op threads for the per-click work on the CPU (prompt maps and decoder at model
# resolution). Its ops are small, so fanning them out gains little, and on a busy CPU (the app's
# own threads, a hover preview, other programs) one descheduled OpenMP worker stalls every op of
# the click: measured on 2 shared cores, 2 threads made the 24 MP click median 3-10x slower.
# set_image (the encoder) keeps the caller's thread count. The count is process-wide, so work on
# other threads during a click may run on one thread too; it is always restored afterwards.
CLICK_THREADS = 1

# A box bounds its mask: outside the box grown by BOX_MARGIN of its width (height) on each side,
# at least BOX_MARGIN_MIN_PX, the prediction is zeroed (the edge is where the user drew it; fur
# may spill a few pixels over it), except where it is connected to a positive click out there.
# Measured on two-pet composites, 2% let ~1-3% of a tight box's mask into the margin; 1% halves that.
# With the instance model (validation photos, tight boxes), 1% / 0.5% / 0: box mIoU 0.977 / 0.977 /
# 0.977 (single) and 0.916 / 0.916 / 0.916 (composites), share inside the box 0.987 / 0.990 / 0.990
# and 0.979 / 0.981 / 0.981: half a margin still lets fur spill a few pixels over a box's edge.
BOX_MARGIN = 0.005
BOX_MARGIN_MIN_PX = 2.0

# A prediction without a previous mask (an object's first click or box) is fed back as the
# previous mask this many more times (decoder only, at model resolution, same prompts). One decoder
# pass spreads a click only as far as its convolutions reach, so one click on a large pet gave a
# blob around it; each pass grows it over the pet. Later clicks refine the mask they are given in
# one pass, as the model was trained: feeding those back too let a leak regrow after each negative
# click. Measured with the instance model on its 137 validation photos and 138 pets of two-pet
# composites of them, 0 / 2 / 3 / 4 passes: IoU after one click 0.952 / 0.961 / 0.961 / 0.961
# (single) and 0.823 / 0.882 / 0.886 / 0.888 (composites), box mIoU on composites 0.809 / 0.909 /
# 0.912 / 0.916; 4 has the best mean of IoU after 1 and 3 clicks (training's --best-by rule).
REFINE_PASSES = 4


class NoModelError(RuntimeError):
    """No usable checkpoint for the task; ``str(error)`` is a one-line reason for the user."""


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` as a torch.device; None picks CUDA when available, else the CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _entry_score(entry: CheckpointEntry) -> tuple[bool, float]:
    """Sort key: bundled checkpoints first, then the higher validation mIoU (unknown last)."""
    miou = ((entry.metadata or {}).get("metrics") or {}).get("miou")
    return entry.source != BUNDLED, -miou if isinstance(miou, (int, float)) else float("inf")


def find_checkpoint(task: str) -> Path:
    """The best discovered loadable checkpoint for ``task``; raises NoModelError if there is none."""
    entries = discover_checkpoints(task=task)
    if entries:
        return min(entries, key=_entry_score).path
    unusable = [e for e in discover_checkpoints() if not e.loadable]
    folders = ", ".join(str(folder) for _, folder in search_folders())
    detail = f"; {len(unusable)} unusable, e.g. {unusable[0].describe()}" if unusable else ""
    raise NoModelError(f"no usable {task} checkpoint found (searched {folders}){detail}")


def _load_model(checkpoint: str | Path | None, device: torch.device, task: str) -> tuple[nn.Module, dict[str, Any]]:
    """Load ``checkpoint`` (None: discover one) for ``task``; every failure becomes NoModelError."""
    path = Path(checkpoint) if checkpoint is not None else find_checkpoint(task)
    try:
        model, metadata = load_checkpoint(path, device)
    except CheckpointError as error:
        raise NoModelError(str(error)) from error
    if metadata["task"] != task:
        raise NoModelError(f"{path.name}: a {metadata['task']} model ({metadata['arch']}), not a {task} model")
    return model, metadata


def box_bounds(box: Sequence[float], width: int, height: int) -> Rect:
    """The rectangle a box's mask is bounded by: ``box`` (clipped, x1/y1 exclusive) grown by
    ``BOX_MARGIN`` of its size on each side (at least ``BOX_MARGIN_MIN_PX``), inside the image."""
    x0, y0, x1, y1 = clip_box(box, width, height)
    mx = max(BOX_MARGIN * (x1 - x0), BOX_MARGIN_MIN_PX)
    my = max(BOX_MARGIN * (y1 - y0), BOX_MARGIN_MIN_PX)
    return (
        max(0, int(np.floor(x0 - mx))),
        max(0, int(np.floor(y0 - my))),
        min(width, int(np.ceil(x1 + mx))),
        min(height, int(np.ceil(y1 + my))),
    )


def _zero_outside(array: np.ndarray, rect: Rect) -> None:
    """Zero ``array`` (HxW, in place) outside ``rect`` (x0, y0, x1, y1; may reach past the array)."""
    x0, y0, x1, y1 = (max(0, v) for v in rect)
    array[:y0] = 0
    array[y1:] = 0
    array[:, :x0] = 0
    array[:, x1:] = 0


def _components_at(prob: np.ndarray, seeds: list[tuple[float, float]], hole: Rect, content: Rect) -> np.ndarray:
    """Pixels of ``prob`` > 0.5 inside ``content`` (the letterbox's photo, not its padding) and
    outside ``hole``, 8-connected there to a seed (x, y): bool SxS."""
    fg = (prob > 0.5).astype(np.uint8)
    _zero_outside(fg, content)
    fg[max(0, hole[1]) : max(0, hole[3]), max(0, hole[0]) : max(0, hole[2])] = 0
    _, labels = cv2.connectedComponents(fg, connectivity=8)
    size = prob.shape[0]
    picked = {int(labels[min(size - 1, max(0, round(y))), min(size - 1, max(0, round(x)))]) for x, y in seeds}
    picked.discard(0)
    return np.isin(labels, sorted(picked))


def _fit(array: np.ndarray, size: int) -> tuple[np.ndarray, Letterbox]:
    """Letterbox ``array`` to ``size``, area-averaging when shrinking (no aliasing on big photos)."""
    shrink = max(array.shape[:2]) > size
    return letterbox(array, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def _prev_to_model(prev: np.ndarray, size: int) -> torch.Tensor:
    """A (crop of a) previous mask letterboxed to ``size``: SxS float32 probabilities."""
    if prev.dtype == np.bool_:
        prev = prev.view(np.uint8)
    elif not np.issubdtype(prev.dtype, np.floating):
        prev = (prev > 0).view(np.uint8)
    elif prev.dtype not in (np.float32, np.float64):
        prev = prev.astype(np.float32)
    # Linear sampling costs O(model pixels) even on a 24 MP mask; the mask channel is smooth anyway.
    # Non-finite values are made probabilities on the small map (NaN 0, +inf 1), where it is cheap.
    small, _ = letterbox(prev, size, interpolation=cv2.INTER_LINEAR)
    small = np.nan_to_num(small, nan=0.0, posinf=1.0, neginf=0.0)
    return torch.from_numpy(np.clip(small, 0, 1, dtype=np.float32))


@contextmanager
def _torch_threads(count: int, device: torch.device) -> Iterator[None]:
    """Run the block with ``count`` torch intra-op threads on the CPU (restored after); no-op elsewhere."""
    before = torch.get_num_threads()
    if device.type != "cpu" or before == count:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass(frozen=True)
class _View:
    """One encoded view of the image: the whole photo or a zoom crop (``rect`` in image pixels)."""

    rect: Rect
    box: Letterbox
    features: Any


class _LoadedModel:
    """A model in eval mode with what feeding it needs: device, input size, normalisation."""

    def __init__(self, model: nn.Module, metadata: dict[str, Any], device: torch.device) -> None:
        self.model = model
        self.metadata = metadata
        self.device = device
        self.input_size = int(metadata["input_size"])
        self._normalization = metadata["normalization"]


class Predictor(_LoadedModel):
    """Interactive segmentation of one image at a time with a prompt model (clicks, box, mask)."""

    def __init__(self, model: nn.Module, metadata: dict[str, Any], device: torch.device,
                 refine_passes: int = REFINE_PASSES) -> None:
        super().__init__(model, metadata, device)
        self.refine_passes = refine_passes
        """How many times a prediction without a previous mask is fed back as one (``REFINE_PASSES``)."""
        self._image: np.ndarray | None = None
        self._global: _View | None = None
        self._crop: _View | None = None
        self.last_crop: Rect | None = None
        """The zoom-in crop the last :meth:`predict` refined on, or None when it used the whole photo."""

    @property
    def image_size(self) -> tuple[int, int] | None:
        """(height, width) of the image set, or None."""
        return None if self._image is None else self._image.shape[:2]

    def _encode(self, rgb: np.ndarray, rect: Rect) -> _View:
        resized, box = _fit(rgb, self.input_size)
        tensor = to_model_tensor(resized, self._normalization).to(self.device)
        return _View(rect, box, self.model.encode_image(tensor))

    @torch.inference_mode()
    def set_image(self, rgb: np.ndarray) -> None:
        """Validate, letterbox, normalise and encode ``rgb`` (HxWx3 uint8) once for many predictions.

        The array is copied, so the caller may reuse or free its buffer afterwards.
        """
        rgb = check_image(rgb)
        self._image = self._global = self._crop = None
        image = np.array(rgb, order="C")
        h, w = image.shape[:2]
        self._global = self._encode(image, (0, 0, w, h))
        self._image = image
        self.last_crop = None

    def _check_prompts(
        self, points: Sequence[Sequence[Any]], box: Sequence[float] | None, prev_mask: np.ndarray | None
    ) -> tuple[list[Point], Box | None]:
        h, w = self._image.shape[:2]
        checked: list[Point] = []
        for point in points:
            if len(point) != 3:
                raise ValueError(f"a point is (x, y, positive), got {point!r}")
            try:
                x, y, positive = float(point[0]), float(point[1]), bool(point[2])
            except (TypeError, ValueError):
                raise ValueError(f"a point's coordinates must be numbers, got {point!r}") from None
            if not (0 <= x < w and 0 <= y < h):  # NaN and inf fail here too
                raise ValueError(f"point ({point[0]}, {point[1]}) lies outside the {w}x{h} image")
            checked.append((x, y, positive))
        clipped = None if box is None else clip_box(box, w, h)
        if prev_mask is not None and (not isinstance(prev_mask, np.ndarray) or prev_mask.shape != (h, w)):
            shape = getattr(prev_mask, "shape", type(prev_mask).__name__)
            raise ValueError(f"prev_mask must be an array of the image's shape {(h, w)}, got {shape}")
        if not checked and clipped is None:
            raise ValueError("predict needs at least one point or a box")
        return checked, clipped

    def _object_rect(self, points: list[Point], box: Box | None, prev_mask: np.ndarray | None) -> Rect | None:
        """Bounding box of what the prompts say the object is, or None when only clicks are known."""
        h, w = self._image.shape[:2]
        xs: list[float] = []
        ys: list[float] = []
        if box is not None:
            xs += [box[0], box[2]]
            ys += [box[1], box[3]]
        if prev_mask is not None:
            step = max(1, max(h, w) // 1024)  # a strided look is enough for a box grown by 40%
            coarse = prev_mask[::step, ::step] > 0.5
            cols, rows = np.flatnonzero(coarse.any(axis=0)), np.flatnonzero(coarse.any(axis=1))
            if cols.size:
                xs += [cols[0] * step, min((cols[-1] + 1) * step, w)]
                ys += [rows[0] * step, min((rows[-1] + 1) * step, h)]
        if not xs:
            return None
        for x, y, positive in points:
            if positive:
                xs += [x, x + 1]
                ys += [y, y + 1]
        return int(min(xs)), int(min(ys)), int(np.ceil(max(xs))), int(np.ceil(max(ys)))

    def _grow(self, rect: Rect, fraction: float) -> Rect:
        """``rect`` grown by ``fraction`` of its size (at least to the model input), inside the image."""
        h, w = self._image.shape[:2]
        x0, y0, x1, y1 = rect
        half_w = max((x1 - x0) * (1 + fraction), self.input_size) / 2
        half_h = max((y1 - y0) * (1 + fraction), self.input_size) / 2
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        return (
            max(0, int(cx - half_w)),
            max(0, int(cy - half_h)),
            min(w, int(np.ceil(cx + half_w))),
            min(h, int(np.ceil(cy + half_h))),
        )

    def _zoom_view(self, points: list[Point], box: Box | None, prev_mask: np.ndarray | None) -> _View | None:
        """The encoded crop to refine on, or None when the whole photo is the better view."""
        h, w = self._image.shape[:2]
        if max(h, w) < ZOOM_MIN_RATIO * self.input_size:
            return None
        rect = self._object_rect(points, box, prev_mask)
        if rect is None:
            return None
        x0, y0, x1, y1 = want = self._grow(rect, ZOOM_EXPAND)
        area = (x1 - x0) * (y1 - y0)
        if area >= ZOOM_MAX_AREA * h * w:
            return None
        cached = self._crop
        if cached is not None:
            cx0, cy0, cx1, cy1 = cached.rect
            mx0, my0, mx1, my1 = self._grow(rect, ZOOM_REUSE_MARGIN)
            holds = cx0 <= mx0 and cy0 <= my0 and cx1 >= mx1 and cy1 >= my1
            if holds and (cx1 - cx0) * (cy1 - cy0) <= ZOOM_REUSE_AREA * area:
                return cached
        self._crop = self._encode(self._image[y0:y1, x0:x1], want)
        return self._crop

    @torch.inference_mode()
    def predict(
        self,
        points: Sequence[Sequence[Any]] = (),
        box: Sequence[float] | None = None,
        prev_mask: np.ndarray | None = None,
    ) -> np.ndarray:
        """Object probabilities (HxW float32 in [0, 1], the image's resolution) for the prompts.

        ``points``: (x, y, positive) in image pixels; ``box``: (x0, y0, x1, y1) in image pixels
        (reordered and clipped to the image); ``prev_mask``: an earlier result of ``predict`` or
        an edited mask (float probabilities, bool, or integer where > 0 is the object), HxW.

        A box bounds its mask: outside the box grown by 0.5% of its width (height) on each side, at
        least 2 px (:func:`box_bounds`), the result is 0, except where the mask (> 0.5) is
        connected, outside those bounds, to a positive click outside them; so one pet's box never
        takes in the pet next to it, while a click on a tail sticking out of the box extends the
        mask there. Negative clicks and predictions without a box are unaffected.

        Without ``prev_mask``, the model's answer is fed back as the previous mask ``refine_passes``
        more times with the same prompts, so a first click's mask grows over the whole pet (see
        ``REFINE_PASSES``).
        """
        if self._image is None:
            raise RuntimeError("call set_image(rgb) before predict()")
        checked, box = self._check_prompts(points, box, prev_mask)
        view = self._zoom_view(checked, box, prev_mask) or self._global
        x0, y0, x1, y1 = view.rect
        lb = view.box
        # A zoom crop holds every positive click; negative clicks outside it fall where the output
        # is background anyway (zero outside the crop), so they are left out.
        positives, negatives = [], []
        for x, y, positive in checked:
            if x0 <= x < x1 and y0 <= y < y1:
                (positives if positive else negatives).append(lb.to_model(x - x0, y - y0))
        model_box = None
        if box is not None:
            # Box edges are continuous (x1 exclusive); the map's box is inclusive model pixels, so
            # pass the edges shifted by half a pixel: a model pixel is inside when its centre is.
            bx0, by0 = lb.to_model(max(box[0], x0) - x0 - 0.5, max(box[1], y0) - y0 - 0.5)
            bx1, by1 = lb.to_model(min(box[2], x1) - x0 - 0.5, min(box[3], y1) - y0 - 0.5)
            model_box = (bx0, by0, bx1, by1)
        prev = None if prev_mask is None else _prev_to_model(prev_mask[y0:y1, x0:x1], self.input_size)
        maps = render_prompt_maps(self.input_size, positives, negatives, box=model_box, prev_mask=prev)
        with _torch_threads(CLICK_THREADS, self.device):
            prob = self._decode(view, maps.to(self.device), self.refine_passes if prev_mask is None else 0)
        self.last_crop = None if view is self._global else view.rect
        full = unletterbox(prob, lb)
        if box is not None:
            self._bound_to_box(full, prob, box, checked, view)
        if view is self._global:
            return full
        h, w = self._image.shape[:2]
        out = np.zeros((h, w), np.float32)  # outside the crop lies well clear of the object
        out[y0:y1, x0:x1] = full
        return out

    def _decode(self, view: _View, maps: torch.Tensor, passes: int) -> np.ndarray:
        """Probabilities (SxS) for the prompt ``maps`` (4xSxS), each fed back as the previous-mask
        channel ``passes`` times; the letterbox's padding stays 0 there, as for a real mask."""
        lb = view.box
        content = torch.zeros_like(maps[3])
        content[lb.pad_top : lb.pad_top + lb.new_h, lb.pad_left : lb.pad_left + lb.new_w] = 1
        for done in range(passes + 1):
            prob = torch.sigmoid(self.model.decode(view.features, maps.unsqueeze(0))[0, 0].float())
            if done < passes:
                maps = torch.cat([maps[:3], (prob * content)[None]])
        return prob.cpu().numpy()

    def _bound_to_box(self, full: np.ndarray, prob: np.ndarray, box: Box, points: list[Point], view: _View) -> None:
        """Zero ``full`` (the view's probabilities, in place) outside ``box_bounds(box)``, except
        what is connected there to a positive click there (found on ``prob``, the model-size map).

        The box-only case is array slicing; components are only labelled when a positive click
        lies outside the bounds, and at model resolution, so a 24 MP click costs no more."""
        h, w = self._image.shape[:2]
        x0, y0 = view.rect[:2]
        bx0, by0, bx1, by1 = box_bounds(box, w, h)
        local = (bx0 - x0, by0 - y0, bx1 - x0, by1 - y0)
        seeds = [(x, y) for x, y, positive in points if positive and not (bx0 <= x < bx1 and by0 <= y < by1)]
        if not seeds:
            _zero_outside(full, local)
            return
        lb = view.box
        # Model pixels wholly inside the bounds (edges are continuous; pixel centres sit at +0.5).
        mx0, my0 = lb.to_model(local[0] - 0.5, local[1] - 0.5)
        mx1, my1 = lb.to_model(local[2] - 0.5, local[3] - 0.5)
        hole = (
            int(np.ceil(mx0 + 0.5)),
            int(np.ceil(my0 + 0.5)),
            int(np.floor(mx1 - 0.5)) + 1,
            int(np.floor(my1 - 0.5)) + 1,
        )
        content = (lb.pad_left, lb.pad_top, lb.pad_left + lb.new_w, lb.pad_top + lb.new_h)
        keep = _components_at(prob, [lb.to_model(x - x0, y - y0) for x, y in seeds], hole, content)
        # One model pixel of slack so the kept parts meet the bounds without a seam after resizing.
        keep = cv2.dilate(keep.view(np.uint8), np.ones((3, 3), np.uint8))
        allowed = unletterbox(keep, lb, interpolation=cv2.INTER_NEAREST)
        allowed[max(0, local[1]) : max(0, local[3]), max(0, local[0]) : max(0, local[2])] = 1
        np.multiply(full, allowed, out=full)


class Segmenter(_LoadedModel):
    """Whole-image semantic segmentation into background (0), cat (1) and dog (2)."""

    @torch.inference_mode()
    def _small_probabilities(self, rgb: np.ndarray) -> tuple[np.ndarray, Letterbox]:
        """Class probabilities at model resolution (SxSx3, padding included) and the letterbox."""
        resized, lb = _fit(check_image(rgb), self.input_size)
        logits = self.model(to_model_tensor(resized, self._normalization).to(self.device))
        prob = torch.softmax(logits[0].float(), dim=0).permute(1, 2, 0).contiguous()
        return prob.cpu().numpy(), lb

    def probabilities(self, rgb: np.ndarray) -> np.ndarray:
        """Per-class probabilities (HxWx3 float32: background, cat, dog) at the image's resolution."""
        prob, lb = self._small_probabilities(rgb)
        return unletterbox(prob, lb)

    def segment(self, rgb: np.ndarray) -> np.ndarray:
        """Labels (HxW uint8: 0 background, 1 cat, 2 dog) at the image's resolution."""
        return self.probabilities(rgb).argmax(axis=2).astype(np.uint8)


def load_predictor(checkpoint: str | Path | None = None, device: str | torch.device | None = None,
                   refine_passes: int = REFINE_PASSES) -> Predictor:
    """A :class:`Predictor` for ``checkpoint`` (None: the best discovered prompt checkpoint).

    Raises NoModelError (one-line reason) when no checkpoint is found or it cannot be used.
    """
    device = pick_device(device)
    return Predictor(*_load_model(checkpoint, device, PROMPT), device, refine_passes)


def load_segmenter(checkpoint: str | Path | None = None, device: str | torch.device | None = None) -> Segmenter:
    """A :class:`Segmenter` for ``checkpoint`` (None: the best discovered semantic checkpoint).

    Raises NoModelError (one-line reason) when no checkpoint is found or it cannot be used.
    """
    device = pick_device(device)
    return Segmenter(*_load_model(checkpoint, device, SEMANTIC), device)
