"""The standard click protocol (RITM / f-BRS) on one image, for any interactive predictor.

A predictor is anything with ``set_image(rgb)`` and ``predict(points=..., box=..., prev_mask=...)
-> HxW probabilities`` (:class:`models.predictor.Predictor`, the GrabCut and U2-Netp baselines).
The object is the pet (labels 1 and 2); void (255) is ignored. The first click comes from
:func:`training.clicks.next_click` on an empty prediction, every later one from the current error;
each prediction gets all clicks so far and the previous probabilities as ``prev_mask``; the mask
is ``probability > 0.5``. NoC@85 / NoC@90 is the number of clicks until the IoU first reaches
0.85 / 0.90, ``max_clicks`` when it never does. A run stops early once its IoU reached 0.90 after
at least 5 clicks (nothing reported depends on later clicks). The box prompt is the tight
bounding box of the pet's pixels (``x1``/``y1`` exclusive).
"""

from __future__ import annotations

import time
from typing import Any, Protocol, Sequence

import numpy as np

from models.classes import VOID
from training.clicks import Click, next_click
from training.metrics import binary_iou

NOC_THRESHOLDS = (0.85, 0.90)
IOU_AT = (1, 3, 5)
THRESHOLD = 0.5
EARLY_STOP_IOU = 0.90
EARLY_STOP_MIN_CLICKS = max(IOU_AT)
DEFAULT_MAX_CLICKS = 20


class InteractivePredictor(Protocol):
    """What the protocol needs: the interface of :class:`models.predictor.Predictor`."""

    def set_image(self, rgb: np.ndarray) -> None: ...

    def predict(self, points: Sequence[Sequence[Any]] = (), box: Sequence[float] | None = None,
                prev_mask: np.ndarray | None = None) -> np.ndarray: ...


def object_target(mask: np.ndarray) -> np.ndarray:
    """Labels (0 bg, 1 cat, 2 dog, 255 void) -> binary target 0 background, 1 pet, 255 void."""
    target = ((mask == 1) | (mask == 2)).astype(np.uint8)
    target[mask == VOID] = VOID
    return target


def tight_box(target: np.ndarray) -> tuple[int, int, int, int] | None:
    """The pet's tight bounding box (x0, y0, x1, y1), x1/y1 exclusive; None when there is no pet."""
    ys, xs = np.nonzero(target == 1)
    if xs.size == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def share_inside(pred: np.ndarray, box: Sequence[int]) -> float | None:
    """The share of ``pred``'s pixels inside ``box`` (x0, y0, x1, y1; x1/y1 exclusive); None when empty."""
    total = int(np.count_nonzero(pred))
    if total == 0:
        return None
    x0, y0, x1, y1 = box
    return int(np.count_nonzero(pred[y0:y1, x0:x1])) / total


def noc(ious: Sequence[float], threshold: float, max_clicks: int) -> int:
    """Clicks until the IoU first reaches ``threshold`` (``max_clicks`` if it never does)."""
    for k, value in enumerate(ious[:max_clicks], start=1):
        if value >= threshold:
            return k
    return max_clicks


def iou_after(ious: Sequence[float], k: int) -> float:
    """The IoU after click ``k`` (the last one when the run stopped earlier; 0 without clicks)."""
    if not ious:
        return 0.0
    return float(ious[min(k, len(ious)) - 1])


def simulate_clicks(predictor: InteractivePredictor, target: np.ndarray, max_clicks: int = DEFAULT_MAX_CLICKS,
                    early_stop: bool = True) -> dict[str, Any]:
    """Run the click protocol on the image already given to ``predictor.set_image``.

    Returns ``{"clicks": [(x, y, positive)], "ious": [IoU after click k], "seconds": [per call],
    "last": the last probabilities (None without clicks)}``; ``ious`` has one entry per click made
    (if the prediction becomes perfect, no more clicks are possible and the last IoU stands for the rest).
    """
    void = target == VOID
    pred = np.zeros(target.shape, dtype=bool)
    prev = None
    clicks: list[Click] = []
    ious: list[float] = []
    seconds: list[float] = []
    for _ in range(max_clicks):
        click = next_click(pred, target, void)
        if click is None:
            break
        clicks.append(click)
        start = time.perf_counter()
        prob = predictor.predict(points=list(clicks), box=None, prev_mask=prev)
        seconds.append(time.perf_counter() - start)
        prev = np.asarray(prob, dtype=np.float32)
        pred = prev > THRESHOLD
        ious.append(binary_iou(pred, target))
        if early_stop and len(clicks) >= EARLY_STOP_MIN_CLICKS and ious[-1] >= EARLY_STOP_IOU:
            break
    return {"clicks": clicks, "ious": ious, "seconds": seconds, "last": prev}


def evaluate_sample(predictor: InteractivePredictor, rgb: np.ndarray, target: np.ndarray,
                    max_clicks: int = DEFAULT_MAX_CLICKS, early_stop: bool = True) -> dict[str, Any] | None:
    """Clicks and the tight box on one image; None when ``target`` has no pet pixels.

    Returns the clicks, the IoU per click, NoC@85/90, IoU after 1/3/5 clicks, the box, its IoU
    and the share of its mask inside it (None when the mask is empty), and the seconds of ``set_image``, of each click's ``predict`` and of the box's.
    """
    box = tight_box(target)
    if box is None:  # nothing to click on
        return None
    start = time.perf_counter()
    predictor.set_image(rgb)
    image_seconds = time.perf_counter() - start
    run = simulate_clicks(predictor, target, max_clicks, early_stop)
    start = time.perf_counter()
    box_prob = predictor.predict(points=[], box=box, prev_mask=None)
    box_seconds = time.perf_counter() - start
    ious = run["ious"]
    box_mask = np.asarray(box_prob) > THRESHOLD
    result: dict[str, Any] = {
        "clicks": [list(c) for c in run["clicks"]],
        "ious": [round(v, 6) for v in ious],
        "box": list(box),
        "box_iou": binary_iou(box_mask, target),
        "box_inside": share_inside(box_mask, box),
    }
    for t in NOC_THRESHOLDS:
        result[f"noc{round(t * 100)}"] = noc(ious, t, max_clicks)
    for k in IOU_AT:
        result[f"iou@{k}"] = iou_after(ious, k)
    result["seconds"] = {"set_image": image_seconds, "clicks": run["seconds"], "box": box_seconds}
    return result
