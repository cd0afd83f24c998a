"""Hover preview in the real main window: shown after a rest, never in the way of a real click.

Mouse input goes to the canvas viewport as in test_app.py; the worker's ``served`` log (the order
in which it served request kinds) shows that a click is never queued behind a preview.
"""

from __future__ import annotations

import threading

import numpy as np
from PyQt5.QtCore import QEvent, QPointF, Qt
from PyQt5.QtGui import QMouseEvent
from PyQt5.QtTest import QTest
from PyQt5.QtWidgets import QApplication

from models.classes import PROMPT
from petseg_desktop.hover_preview import SETTING
from app_driver import WAIT, open_and_wait, view_pos, wait_mask


def set_hover(w, on: bool) -> None:
    """Choose View > Hover preview as the user would."""
    if w.hover_action.isChecked() != on:
        w.hover_action.trigger()
    assert w.hover_preview.enabled() == on


def hover(w, x: int, y: int) -> None:
    """A mouse move (no button) to image pixel (x, y); sent directly, as QTest.mouseMove drops a move
    to the position the previous test's window last saw."""
    event = QMouseEvent(QEvent.MouseMove, QPointF(view_pos(w, x, y)), Qt.NoButton, Qt.NoButton, Qt.NoModifier)
    QApplication.sendEvent(w.canvas.viewport(), event)


def opened(qtbot, w, photos):
    """Open a photo; the width and height. The threshold is 0 so that the random-init model's masks
    (probabilities near 0.42 everywhere) are never empty: a preview is always something drawn."""
    open_and_wait(qtbot, w, sorted(photos.iterdir())[0])
    w.editor.set_threshold(0.0)
    h, width = w.editor.doc.shape
    return width, h


def test_hover_shows_a_preview_and_leaves_the_document_alone(qtbot, window, photos):
    w = window
    width, h = opened(qtbot, w, photos)
    set_hover(w, True)
    runs = w.worker.runs["preview"]
    hover(w, width // 2, h // 2)
    assert not w.canvas.preview_shown()  # debounced: nothing before the mouse rests
    qtbot.waitUntil(w.canvas.preview_shown, timeout=WAIT)
    assert w.worker.runs["preview"] == runs + 1
    assert w.hover_preview.last_latency is not None
    doc = w.editor.doc
    assert w.editor.stack.count() == 0 and doc.prompts.is_empty() and doc.probabilities is None
    assert not w.editor._dirty and not w.editor._timer.isActive()  # nothing to autosave
    assert w.canvas._preview_item.opacity() < w.canvas._current_item.opacity()  # fainter than a mask

    hover(w, width // 3, h // 3)
    assert not w.canvas.preview_shown()  # a move removes it at once
    qtbot.waitUntil(w.canvas.preview_shown, timeout=WAIT)
    QApplication.sendEvent(w.canvas.viewport(), QEvent(QEvent.Leave))
    assert not w.canvas.preview_shown()
    qtbot.wait(3 * 120)
    assert not w.canvas.preview_shown()  # leaving also cancels the rest


def test_a_click_is_served_before_a_pending_preview_and_shows_its_own_mask(
    qtbot, window, photos, tiny_prompt_checkpoint, monkeypatch
):
    from models.images import load_rgb
    from models.predictor import load_predictor

    w = window
    width, h = opened(qtbot, w, photos)
    set_hover(w, True)
    gate, in_preview = threading.Event(), threading.Event()
    serve = w.worker._serve

    def gated(key, value):  # hold the first preview in the worker until the click has been made
        if key == "preview":
            in_preview.set()
            gate.wait(WAIT / 1000)
        serve(key, value)

    monkeypatch.setattr(w.worker, "_serve", gated)
    mark = len(w.worker.served)
    runs = w.worker.runs["preview"]
    hover(w, width // 3, h // 3)
    qtbot.waitUntil(in_preview.is_set, timeout=WAIT)  # preview 1 is running
    x, y = width // 2, h // 2
    hover(w, x, y)
    qtbot.waitUntil(lambda: "preview" in w.worker._pending, timeout=WAIT)  # preview 2 waits
    QTest.mouseClick(w.canvas.viewport(), Qt.LeftButton, Qt.NoModifier, view_pos(w, x, y))
    assert "preview" not in w.worker._pending  # the click dropped it
    gate.set()
    wait_mask(qtbot, w)
    qtbot.wait(50)  # the late result of preview 1 arrives too

    served = list(w.worker.served)[mark:]
    assert served == ["preview", "predict"]  # the click went straight after the one in flight
    assert w.worker.runs["preview"] == runs + 1
    assert not w.canvas.preview_shown()  # preview 1's late result was dropped
    predictor = load_predictor(tiny_prompt_checkpoint, "cpu")
    predictor.set_image(load_rgb(w.editor.doc.image_path))
    expected = predictor.predict(points=[(x, y, True)], box=None, prev_mask=None)
    np.testing.assert_allclose(w.editor.doc.probabilities, expected, atol=1e-5)
    assert w.editor.stack.count() == 1


def test_toggle_off_sends_no_preview_requests_and_is_saved(qtbot, window, photos, monkeypatch):
    w = window
    width, h = opened(qtbot, w, photos)
    set_hover(w, True)
    set_hover(w, False)
    asked = []
    monkeypatch.setattr(w.worker, "preview", lambda *args: asked.append(args))
    for x in (width // 4, width // 2):
        hover(w, x, h // 2)
        qtbot.wait(3 * 120)
    assert asked == [] and not w.canvas.preview_shown()
    assert w.settings.value(SETTING) in (False, "false")


def test_default_follows_the_device_and_the_measured_click_latency(qtbot, window, photos):
    w = window
    width, h = opened(qtbot, w, photos)
    preview = w.hover_preview
    assert w.settings.value(SETTING) is None
    assert not w.hover_action.isChecked()  # CPU and no click measured yet: off
    w.worker.click_seconds.extend([0.5] * 10)
    preview._follow_default()
    assert not w.hover_action.isChecked()  # slow clicks: off
    preview._on_model_loaded(PROMPT, "", {}, "cuda:0")
    assert w.hover_action.isChecked()  # CUDA: on
    preview._on_model_loaded(PROMPT, "", {}, "cpu")
    assert not w.hover_action.isChecked()
    w.worker.click_seconds.extend([0.01] * 10)  # fast clicks (as a measured click gives with tiny models)
    QTest.mouseClick(w.canvas.viewport(), Qt.LeftButton, Qt.NoModifier, view_pos(w, width // 2, h // 2))
    wait_mask(qtbot, w)
    assert w.hover_action.isChecked() == (np.median(list(w.worker.click_seconds)) <= 0.12)
    w.hover_action.trigger()  # the user's choice wins from now on
    w.worker.click_seconds.extend([0.01] * 10)
    preview._follow_default()
    assert w.hover_action.isChecked() == preview.enabled() == (w.settings.value(SETTING) in (True, "true"))
