"""Time the canvas overlay updates on a 24 MP photo (what a click costs on the GUI side).

Runs offscreen: ``QT_QPA_PLATFORM=offscreen python tests/benchmarks/bench_overlay.py``. Prints the
median of a few runs of ``set_current_mask`` (every click) and ``set_objects`` (accept/delete),
each followed by a forced repaint of the viewport at fit zoom and at 4x zoom.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
from PyQt5.QtWidgets import QApplication

from petseg_desktop.canvas import Canvas


def blob(h: int, w: int, cy: float, cx: float, r: float) -> np.ndarray:
    """A wobbly disc: a mask with a long, non-trivial edge."""
    yy, xx = np.ogrid[:h, :w]
    angle = np.arctan2(yy - cy, xx - cx)
    radius = r * (1 + 0.1 * np.sin(7 * angle))
    return (yy - cy) ** 2 + (xx - cx) ** 2 < radius**2


def timed(fn, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    app = QApplication.instance() or QApplication([])
    h, w = 4000, 6000  # 24 MP
    canvas = Canvas()
    canvas.resize(1000, 700)
    canvas.show()
    canvas.set_image(np.full((h, w, 3), 90, np.uint8))
    app.processEvents()
    mask = blob(h, w, 2000, 2500, 1200)
    labels = np.zeros((h, w), np.uint8)
    labels[mask] = 2
    labels[blob(h, w, 1500, 4800, 700)] = 1

    def update(call, value):
        call(value)
        canvas.viewport().repaint()

    for zoom in ("fit", "4x"):
        if zoom == "4x":
            canvas.zoom_by(4 / canvas.zoom())
        current = timed(lambda: update(canvas.set_current_mask, mask))
        objects = timed(lambda: update(canvas.set_objects, labels))
        repaint = timed(lambda: canvas.viewport().repaint())
        print(f"24 MP, {zoom:>3}: current mask {current:6.0f} ms   objects {objects:6.0f} ms   repaint {repaint:5.0f} ms")


if __name__ == "__main__":
    main()
