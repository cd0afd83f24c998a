"""Driving the real main window in tests: make it, open photos, click, drag, press shortcuts, wait.

Mouse input goes through QTest/QMouseEvent on the canvas viewport at the widget position of image
coordinates; results from the worker thread are awaited with qtbot.waitUntil, never with sleeps.
The fixtures ``with_models`` and ``window`` (tests/conftest.py) build on :func:`make_window`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PyQt5.QtCore import QEvent, QPoint, QPointF, QSettings, Qt
from PyQt5.QtGui import QKeySequence, QMouseEvent
from PyQt5.QtTest import QTest
from PyQt5.QtWidgets import QApplication

from models.classes import PROMPT, SEMANTIC
from petseg_desktop.main_window import MainWindow

WAIT = 30000  # ms; the models are tiny, but the machine is shared


def make_window(qtbot, tmp_path, wait_models=True, size=(1000, 760)) -> MainWindow:
    """A shown MainWindow with its settings in ``tmp_path``, on the CPU; waits for both models unless told not to."""
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.IniFormat)
    window = MainWindow(settings=settings, device="cpu")
    qtbot.addWidget(window)
    if size:
        window.resize(*size)
    window.show()
    qtbot.waitExposed(window)
    if wait_models:
        qtbot.waitUntil(
            lambda: bool(window.models.loaded_info(PROMPT)[0] and window.models.loaded_info(SEMANTIC)[0]), timeout=WAIT
        )
    return window


def open_and_wait(qtbot, w: MainWindow, path: Path) -> None:
    """Open ``path`` and wait until its semantic labels are in."""
    w.open_path(path)
    qtbot.waitUntil(lambda: w.editor.doc is not None and w.editor.semantic_labels is not None, timeout=WAIT)


def wait_mask(qtbot, w: MainWindow) -> None:
    """Wait until the worker has answered every request."""
    qtbot.waitUntil(lambda: not w.editor.busy(), timeout=WAIT)


def view_pos(w: MainWindow, x: float, y: float) -> QPoint:
    """The viewport position of image pixel (x, y)'s centre."""
    return w.canvas.mapFromScene(QPointF(x + 0.5, y + 0.5))


def click(w: MainWindow, x: int, y: int, button=Qt.LeftButton, modifier=Qt.NoModifier) -> None:
    """A mouse click on image pixel (x, y)."""
    QTest.mouseClick(w.canvas.viewport(), button, modifier, view_pos(w, x, y))


def drag(w: MainWindow, start: tuple[int, int], end: tuple[int, int], button=Qt.LeftButton) -> None:
    """Press at image pixel ``start``, move through the middle, release at ``end``."""
    viewport = w.canvas.viewport()
    a, b = view_pos(w, *start), view_pos(w, *end)
    mid = QPoint((a.x() + b.x()) // 2, (a.y() + b.y()) // 2)
    QApplication.sendEvent(viewport, QMouseEvent(QEvent.MouseButtonPress, a, button, button, Qt.NoModifier))
    for p in (mid, b):
        QApplication.sendEvent(viewport, QMouseEvent(QEvent.MouseMove, p, Qt.NoButton, button, Qt.NoModifier))
    QApplication.sendEvent(viewport, QMouseEvent(QEvent.MouseButtonRelease, b, button, Qt.NoButton, Qt.NoModifier))


def key(qtbot, w: MainWindow, sequence: str) -> None:
    """Fire the window's action bound to ``sequence`` as a key press would."""
    wanted = QKeySequence(sequence)
    for act in w.actions():
        if any(s == wanted for s in act.shortcuts()):
            assert act.isEnabled(), f"{sequence} is disabled"
            act.trigger()
            return
    raise AssertionError(f"no action for {sequence}")


def shown_alpha(w: MainWindow) -> np.ndarray:
    """The alpha channel of the current-mask overlay as drawn on the canvas."""
    image = w.canvas._current_item.pixmap().toImage()
    if image.isNull():
        return np.zeros(w.editor.doc.shape, dtype=bool)
    image = image.convertToFormat(image.Format_RGBA8888)
    ptr = image.constBits()
    ptr.setsize(image.byteCount())
    arr = np.frombuffer(ptr, np.uint8).reshape(image.height(), image.bytesPerLine() // 4, 4)
    return arr[:, : image.width(), 3] > 0


def usable_threshold(w: MainWindow) -> int:
    """A slider value (percent) at which the random-init model's mask is neither empty nor full."""
    probs = w.editor.doc.probabilities
    inside = probs[probs > 0]  # a box zeroes what lies outside it
    return max(1, int(np.floor(np.median(inside) * 100)))
