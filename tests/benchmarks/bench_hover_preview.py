"""Hover preview latency and its effect on click latency, in the real (offscreen) main window.

With the bundled models on a 12 MP photo (a Test photo upscaled): for each of ``--runs`` points,
the mouse rests (a move event) and the time until the preview is drawn is taken (the 120 ms rest
included); then, preview on and off alternating, the mouse moves, rests ``--rest`` ms (so a preview
is often in flight) and clicks, and the time from the click to its mask being shown is taken.

    QT_QPA_PLATFORM=offscreen python tests/benchmarks/bench_hover_preview.py [--runs 8]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from PyQt5.QtCore import QEvent, QPointF, QSettings, Qt
from PyQt5.QtGui import QMouseEvent
from PyQt5.QtTest import QTest
from PyQt5.QtWidgets import QApplication

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from models.classes import PROMPT  # noqa: E402
from petseg_desktop.main_window import MainWindow  # noqa: E402


def wait(app: QApplication, done, timeout: float = 60.0) -> None:
    deadline = time.perf_counter() + timeout
    while not done():
        if time.perf_counter() > deadline:
            raise TimeoutError
        app.processEvents()
        time.sleep(0.001)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photo", default="/work/shared/pets/Test/color/Abyssinian_2.jpg")
    parser.add_argument("--size", default="4000x3000", help="upscaled to WxH (12 MP)")
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--rest", type=int, default=150, help="ms the mouse rests before each click")
    args = parser.parse_args()
    app = QApplication.instance() or QApplication(sys.argv)
    tmp = Path(tempfile.mkdtemp())
    width, height = (int(v) for v in args.size.split("x"))
    photo = tmp / "photo.png"
    Image.open(args.photo).convert("RGB").resize((width, height), Image.BICUBIC).save(photo)
    w = MainWindow(settings=QSettings(str(tmp / "settings.ini"), QSettings.IniFormat), device="cpu")
    w.resize(1200, 800)
    w.show()
    wait(app, lambda: bool(w.models.loaded_info(PROMPT)[0]))
    w.open_path(photo)
    wait(app, lambda: w.editor.doc is not None and w.worker.runs["image"] >= 1)
    viewport = w.canvas.viewport()

    def move(x: float, y: float) -> None:
        pos = QPointF(w.canvas.mapFromScene(QPointF(x, y)))
        QApplication.sendEvent(viewport, QMouseEvent(QEvent.MouseMove, pos, Qt.NoButton, Qt.NoButton, Qt.NoModifier))

    rng = np.random.default_rng(0)
    points = [(width * rng.uniform(0.3, 0.7), height * rng.uniform(0.3, 0.7)) for _ in range(args.runs)]
    w.hover_preview.set_enabled(True)
    hover = []
    for x, y in points:
        move(x, y)
        wait(app, w.canvas.preview_shown)
        hover.append(w.hover_preview.last_latency * 1000)
        move(1, 1)
    clicks: dict[bool, list[float]] = {True: [], False: []}
    for i, (x, y) in enumerate(points * 2):
        on = i % 2 == 0
        w.hover_preview.set_enabled(on)
        move(x, y)
        end = time.perf_counter() + args.rest / 1000
        while time.perf_counter() < end:
            app.processEvents()
        start = time.perf_counter()
        QTest.mouseClick(viewport, Qt.LeftButton, Qt.NoModifier, w.canvas.mapFromScene(QPointF(x, y)))
        wait(app, lambda: not w.editor.busy())
        clicks[on].append((time.perf_counter() - start) * 1000)
        w.editor.clear_prompts()
        wait(app, lambda: not w.editor.busy())
    print(f"12 MP hover rest -> preview shown: median {statistics.median(hover):.0f} ms, max {max(hover):.0f} ms")
    for on in (True, False):
        print(f"click -> mask shown, preview {'on ' if on else 'off'}: median {statistics.median(clicks[on]):.0f} ms,"
              f" max {max(clicks[on]):.0f} ms  ({len(clicks[on])} clicks)")
    print("worker click times (ms):", [round(s * 1000) for s in w.worker.click_seconds])
    w.close()


if __name__ == "__main__":
    main()
