"""Screenshots of the real PetSeg window for the README (run under xvfb-run with the bundled models).

    xvfb-run -s "-screen 0 1400x900x24" .venv/bin/python docs/make_screenshots.py docs/screenshots

Opens real Test photos: a box on a dog, accepted as an object (class suggested by the semantic
model), then a single click on a cat; grabs the window after each, and the shortcuts dialog.
"""

import os
import shutil
import sys
import tempfile
from pathlib import Path

from PyQt5.QtCore import QEventLoop, QSettings, QTimer
from PyQt5.QtWidgets import QApplication

from petseg_desktop.main_window import MainWindow

PETS = Path(__file__).resolve().parents[2] / "shared" / "pets" / "Test" / "color"
PHOTOS = ["Abyssinian_2.jpg", "american_bulldog_2.jpg", "Bengal_1.jpg", "Bombay_42.jpg"]


def spin(app: QApplication, window: MainWindow, ms: int = 300) -> None:
    """Let the event loop run ``ms`` and then until the inference worker is idle."""
    for _ in range(200):
        loop = QEventLoop()
        QTimer.singleShot(ms, loop.quit)
        loop.exec_()
        if not window.editor.busy():
            return


def main(out: Path) -> None:
    os.environ.setdefault("QT_XCB_GL_INTEGRATION", "none")  # as petseg_desktop.app.main does
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp())
    for name in PHOTOS:
        shutil.copy(PETS / name, work / name)
    app = QApplication([])
    window = MainWindow(QSettings(str(work / "settings.ini"), QSettings.IniFormat))
    window.resize(1280, 820)
    window.show()
    spin(app, window, 1500)
    window.open_path(work / "american_bulldog_2.jpg")
    spin(app, window, 800)
    h, w = window.editor.doc.shape
    window.on_box(int(w * 0.3), int(h * 0.1), int(w * 0.75), int(h * 0.99))  # a box on the dog
    spin(app, window)
    window.accept_object()  # class suggested by the semantic model
    spin(app, window)
    window.grab().save(str(out / "main-window.png"))
    window.open_path(work / "Abyssinian_2.jpg")
    spin(app, window, 800)
    h, w = window.editor.doc.shape
    window.on_point(int(w * 0.37), int(h * 0.55), True)  # a single click on the cat
    spin(app, window)
    window.grab().save(str(out / "one-click.png"))
    dialog = window.show_shortcuts()
    spin(app, window, 200)
    dialog.grab().save(str(out / "shortcuts.png"))
    dialog.close()
    window.close()
    print("wrote", sorted(p.name for p in out.glob("*.png")))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/screenshots"))
