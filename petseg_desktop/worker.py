"""The inference worker: a QObject living in its own QThread that owns the models.

The GUI thread only posts requests (never waits): each kind of request has one "pending" slot, so
a fast series of clicks overwrites the slot and only the latest runs (coalescing). Every request
carries the image id (and predictions a request id) so the GUI can drop stale results. Model
loading, ``set_image`` and the semantic pass run here too; failures arrive as signals.

Hover previews ("preview") are the lowest-priority kind: a real ``predict`` drops a pending
preview, and every kind is served before one. A preview never reports a failure.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections import Counter, deque
from pathlib import Path
from typing import Any

import numpy as np
from PyQt5.QtCore import QObject, Qt, QThread, pyqtSignal, pyqtSlot

from models.classes import PROMPT, SEMANTIC
from models.errors import one_line

# Order in which pending requests are served: models first, then the image, then the user's
# interactive prediction, then the (slower, once per image) semantic pass, then hover previews.
_ORDER = (("load", PROMPT), ("load", SEMANTIC), "image", "predict", "segment", "refine", "preview")
SERVED_LOG = 200  # how many served request kinds ``served`` keeps (tests check the order)
CLICK_TIMES = 10  # how many recent predict times ``click_seconds`` keeps


class InferenceWorker(QObject):
    """Owns the prompt predictor and the semantic segmenter; see the module docstring."""

    modelLoaded = pyqtSignal(str, str, object, str)  # task, path, metadata, device
    modelFailed = pyqtSignal(str, str, str)  # task, path, one-line reason
    imageReady = pyqtSignal(int, float)  # image id, seconds
    predicted = pyqtSignal(int, int, object, float)  # image id, request id, HxW float32, seconds
    previewed = pyqtSignal(int, int, object, float)  # as predicted, for a hover preview
    refined = pyqtSignal(int, int, object, float)  # image id, request id, [HxW float32 per box], seconds
    segmented = pyqtSignal(int, object, float)  # image id, (HxW uint8 labels, HxW cat-minus-dog or None), s
    failed = pyqtSignal(str, str)  # what ("predict", "segment", "image"), one-line reason
    _wake = pyqtSignal()

    def __init__(self, device: str | None = None) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._pending: dict[Any, Any] = {}
        self._stopping = False
        self._device = device
        self._predictor: Any = None
        self._segmenter: Any = None
        self._image: np.ndarray | None = None
        self._image_id = -1
        self._predictor_image = -1
        self.runs: Counter[str] = Counter()  # how many times each kind actually ran (for tests/logs)
        self.served: deque[str] = deque(maxlen=SERVED_LOG)  # kinds in the order they were served
        self.click_seconds: deque[float] = deque(maxlen=CLICK_TIMES)  # recent predict (and preview) times
        self._wake.connect(self._drain, Qt.QueuedConnection)

    # ------------------------------------------------------------------ GUI-thread API (non-blocking)
    def _post(self, key: Any, value: Any) -> None:
        with self._lock:
            self._pending[key] = value
        self._wake.emit()

    def load_model(self, task: str, path: str | Path) -> None:
        self._post(("load", task), str(path))

    def set_image(self, image_id: int, rgb: np.ndarray) -> None:
        with self._lock:  # anything queued for the previous image is now stale
            for kind in ("predict", "segment", "refine", "preview"):
                self._pending.pop(kind, None)
        self._post("image", (image_id, rgb))

    def predict(self, image_id: int, request_id: int, points: list, box: Any, prev_mask: np.ndarray | None) -> None:
        with self._lock:  # a real request goes first: a pending preview is dropped
            self._pending.pop("preview", None)
        self._post("predict", (image_id, request_id, list(points), box, prev_mask))

    def preview(self, image_id: int, request_id: int, points: list, box: Any, prev_mask: np.ndarray | None) -> None:
        """Like ``predict`` but served last and answered with ``previewed`` (a hover preview)."""
        self._post("preview", (image_id, request_id, list(points), box, prev_mask))

    def cancel_preview(self) -> None:
        """Drop a preview that has not started yet."""
        with self._lock:
            self._pending.pop("preview", None)

    def segment(self, image_id: int) -> None:
        self._post("segment", image_id)

    def refine(self, image_id: int, request_id: int, boxes: list[tuple[int, int, int, int]]) -> None:
        """Run the prompt model once per box (auto-segment); answered with one ``refined``.

        Served after clicks, so the user's own prompts never wait for a whole batch queued behind them.
        """
        self._post("refine", (image_id, request_id, list(boxes)))

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._pending.clear()

    # ------------------------------------------------------------------ worker thread
    def _take(self) -> tuple[Any, Any] | None:
        with self._lock:
            if self._stopping:
                return None
            for key in _ORDER:
                if key in self._pending:
                    return key, self._pending.pop(key)
        return None

    @pyqtSlot()
    def _drain(self) -> None:
        taken = self._take()
        if taken is None:
            return
        while taken is not None:
            key, value = taken
            self.served.append(key if isinstance(key, str) else key[0])
            try:
                self._serve(key, value)
            except Exception as error:  # noqa: BLE001 - every failure becomes a signal
                traceback.print_exc()
                what = key[0] if isinstance(key, tuple) else key
                if what != "preview":  # an optional preview that failed is only logged
                    self.failed.emit(what, one_line(error))
            taken = self._take()

    def _serve(self, key: Any, value: Any) -> None:
        if isinstance(key, tuple):
            self._load(key[1], value)
        elif key == "image":
            self._set_image(*value)
        elif key == "predict":
            self._predict(*value)
        elif key == "preview":
            self._preview(*value)
        elif key == "segment":
            self._segment(value)
        elif key == "refine":
            self._refine(*value)

    def _load(self, task: str, path: str) -> None:
        from models import predictor as inference

        if self._device is None:
            self._device = str(inference.pick_device())
        try:
            if task == PROMPT:
                model = inference.load_predictor(path, device=self._device)
            else:
                model = inference.load_segmenter(path, device=self._device)
        except Exception as error:  # noqa: BLE001 - CheckpointError, NoModelError, CUDA errors...
            self.modelFailed.emit(task, path, one_line(error))
            return
        self.runs["load"] += 1
        metadata = getattr(model, "metadata", {}) or {}
        device = str(getattr(model, "device", self._device))
        if task == PROMPT:
            self._predictor = model
            self._predictor_image = -1
            if self._image is not None:
                self._predictor.set_image(self._image)
                self._predictor_image = self._image_id
        else:
            self._segmenter = model
        self.modelLoaded.emit(task, path, metadata, device)

    def _set_image(self, image_id: int, rgb: np.ndarray) -> None:
        self._image, self._image_id = rgb, image_id
        start = time.perf_counter()
        if self._predictor is not None:
            self._predictor.set_image(rgb)
            self._predictor_image = image_id
            self.runs["image"] += 1
        self.imageReady.emit(image_id, time.perf_counter() - start)

    def _ready_for(self, image_id: int, what: str) -> bool:
        """True when the prompt model can answer for ``image_id`` (embedding it if needed)."""
        if image_id != self._image_id:
            return False  # stale: another image is open now
        if self._predictor is None:
            self.failed.emit(what, "no prompt model is loaded (Model menu)")
            return False
        if self._predictor_image != image_id:
            self._predictor.set_image(self._image)
            self._predictor_image = image_id
        return True

    def _predict(self, image_id: int, request_id: int, points: list, box: Any, prev_mask: Any) -> None:
        if not self._ready_for(image_id, "predict"):
            return
        probs, seconds = self._timed_predict(points, box, prev_mask)
        self.runs["predict"] += 1
        self.predicted.emit(image_id, request_id, probs, seconds)

    def _refine(self, image_id: int, request_id: int, boxes: list) -> None:
        if not self._ready_for(image_id, "refine"):
            return
        results = [self._timed_predict([], box, None) for box in boxes]
        self.runs["refine"] += 1
        self.refined.emit(image_id, request_id, [probs for probs, _ in results], sum(s for _, s in results))

    def _preview(self, image_id: int, request_id: int, points: list, box: Any, prev_mask: Any) -> None:
        if image_id != self._image_id or self._predictor is None or self._predictor_image != image_id:
            return  # stale, or nothing to preview with yet: silently, a preview is optional
        probs, seconds = self._timed_predict(points, box, prev_mask)
        self.runs["preview"] += 1
        self.previewed.emit(image_id, request_id, probs, seconds)

    def _timed_predict(self, points: list, box: Any, prev_mask: Any) -> tuple[np.ndarray, float]:
        """Run the prompt model on the current image; the probabilities and the seconds it took."""
        start = time.perf_counter()
        probs = np.asarray(self._predictor.predict(points=points, box=box, prev_mask=prev_mask), dtype=np.float32)
        seconds = time.perf_counter() - start
        self.click_seconds.append(seconds)
        return probs, seconds

    def _segment(self, image_id: int) -> None:
        if image_id != self._image_id or self._segmenter is None or self._image is None:
            return
        start = time.perf_counter()
        if hasattr(self._segmenter, "probabilities"):
            probs = self._segmenter.probabilities(self._image)
            labels = probs.argmax(axis=2).astype(np.uint8)
            evidence = (probs[..., 1] - probs[..., 2]).astype(np.float16)  # > 0: more cat than dog
        else:
            labels, evidence = np.asarray(self._segmenter.segment(self._image), dtype=np.uint8), None
        self.runs["segment"] += 1
        self.segmented.emit(image_id, (labels, evidence), time.perf_counter() - start)


class WorkerHost(QObject):
    """Creates the worker, moves it to a QThread and shuts both down cleanly."""

    def __init__(self, device: str | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.thread = QThread()
        self.thread.setObjectName("petseg-inference")
        self.worker = InferenceWorker(device)
        self.worker.moveToThread(self.thread)
        self.thread.start()

    def shutdown(self, timeout_ms: int = 10000) -> None:
        self.worker.stop()
        self.thread.quit()
        self.thread.wait(timeout_ms)
