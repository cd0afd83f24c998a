"""Hover preview: as the mouse rests on the canvas, a faint mask of what a positive click there gives.

The canvas reports where the idle mouse is (``hoverChanged``); after ``REST_MS`` without a move
the preview asks the worker for the current prompts plus that point as an extra positive, with the
current mask as ``prev_mask`` (so it previews the next click). The worker serves previews last and
drops a pending one when a real click arrives; any move, press, key, leave or document change
cancels the preview here, and a result for an older preview is dropped. The document, the undo
stack and the autosave are never touched.

On by default when the prompt model runs on CUDA or the measured click latency is at most
``FAST_CLICK_S``; the user's choice (View > Hover preview) is kept in QSettings and wins.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
from PyQt5.QtCore import QObject, QSettings, QTimer, pyqtSignal

from models.classes import PROMPT

REST_MS = 120  # the mouse rests this long before a preview is asked for
FAST_CLICK_S = 0.120  # a click at most this slow (median of recent ones) turns the preview on by default
SETTING = "view/hoverPreview"


class HoverPreview(QObject):
    """Debounces hovering into preview requests and shows their results on the canvas."""

    enabledChanged = pyqtSignal(bool)  # the effective state (for the View menu's check mark)
    shown = pyqtSignal(float)  # seconds from the mouse resting to the preview being drawn

    def __init__(self, canvas, editor, worker, settings: QSettings, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.canvas, self.editor, self.worker, self.settings = canvas, editor, worker, settings
        self._cuda = False
        self._enabled = self._auto_default()
        self._point: tuple[int, int] | None = None
        self._rest_start = 0.0
        self._request_id = 0  # bumped on every cancel: only the latest request's result is shown
        self.last_latency: float | None = None
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(REST_MS)
        self._timer.timeout.connect(self._request)
        canvas.hoverChanged.connect(self.hover)
        editor.changed.connect(self.cancel)
        worker.previewed.connect(self._on_previewed)
        worker.predicted.connect(lambda *_: self._follow_default())
        worker.modelLoaded.connect(self._on_model_loaded)

    # ------------------------------------------------------------------ on/off
    def enabled(self) -> bool:
        return self._enabled

    def user_choice(self) -> bool | None:
        """What the user chose in the View menu (saved), or None while the default applies."""
        value = self.settings.value(SETTING)
        return None if value is None else value in (True, "true", "1", 1)

    def set_enabled(self, on: bool) -> None:
        """The user's choice: saved, and it overrides the default from now on."""
        self.settings.setValue(SETTING, bool(on))
        self._set(bool(on))

    def _auto_default(self) -> bool:
        choice = self.user_choice()
        if choice is not None:
            return choice
        times = list(self.worker.click_seconds)
        return self._cuda or (bool(times) and statistics.median(times) <= FAST_CLICK_S)

    def _follow_default(self) -> None:
        if self.user_choice() is None:
            self._set(self._auto_default())

    def _on_model_loaded(self, task: str, path: str, metadata, device: str) -> None:
        if task == PROMPT:
            self._cuda = device.startswith("cuda")
            self._follow_default()

    def _set(self, on: bool) -> None:
        if on != self._enabled:
            self._enabled = on
            if not on:
                self.cancel()
            self.enabledChanged.emit(on)

    # ------------------------------------------------------------------ hovering
    def hover(self, point: tuple[int, int] | None) -> None:
        """The idle mouse is over ``point`` (restart the rest timer), or gone/busy (None)."""
        self.cancel()
        if point is not None and self._enabled and self.editor.doc is not None:
            self._point, self._rest_start = point, time.perf_counter()
            self._timer.start()

    def cancel(self) -> None:
        """Forget the rest, drop the pending request and any late result, and hide the preview."""
        self._timer.stop()
        self._point = None
        self._request_id += 1
        self.worker.cancel_preview()
        if self.canvas.preview_shown():
            self.canvas.set_preview_mask(None)

    def _request(self) -> None:
        doc = self.editor.doc
        if self._point is None or doc is None:
            return
        points = [*doc.prompts.points, (*self._point, True)]
        self.worker.preview(self.editor.image_id, self._request_id, points, doc.prompts.box, doc.probabilities)

    def _on_previewed(self, image_id: int, request_id: int, probs: np.ndarray, seconds: float) -> None:
        doc = self.editor.doc
        if request_id != self._request_id or image_id != self.editor.image_id or doc is None:
            return  # the mouse moved, clicked or the photo changed since: stale
        if probs.shape != doc.shape:
            return
        self.canvas.set_preview_mask(probs >= self.editor.threshold)
        self.last_latency = time.perf_counter() - self._rest_start
        self.shown.emit(self.last_latency)
