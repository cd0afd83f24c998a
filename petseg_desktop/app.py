"""``petseg``: start the desktop annotator, optionally on an image or a folder."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

STARTUP_CHECK_TIMEOUT_S = 120


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="petseg", description="Annotate pet photos: background / cat / dog masks.")
    parser.add_argument("path", nargs="?", help="an image or a folder of images to open")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: CUDA when available)")
    parser.add_argument(
        "--startup-check", action="store_true",
        help="open the window, wait until the default models are loaded, print the startup time and "
        "close again (exit 1 if a model failed): checks an installation or a packaged build",
    )
    return parser


def close_when_models_ready(window, started: float) -> list[str]:
    """Close ``window`` once every selected model has loaded or failed, printing the time taken.

    Returns the list that collects the failures (filled while the event loop runs).
    """
    from PyQt5.QtCore import QTimer

    from models.classes import PROMPT, SEMANTIC
    from models.version import __version__

    pending = {task for task in (PROMPT, SEMANTIC) if window.models.selected(task)}
    failures = [] if pending else ["no model found"]

    def finish() -> None:
        if not window.isVisible():
            return  # already finished (the time-out fired late)
        loaded = [f"{Path(path).name} on {device}"
                  for path, _, device in map(window.models.loaded_info, (PROMPT, SEMANTIC)) if path]
        print(f"petseg {__version__} startup check: window and models ready in {time.perf_counter() - started:.2f} s; "
              f"loaded: {', '.join(loaded) or 'none'}; {'; '.join(failures) or 'ok'}", flush=True)
        window.close()

    def done(task: str, reason: str | None = None) -> None:
        if reason:
            failures.append(f"{task} model failed: {reason}")
        pending.discard(task)
        if not pending:
            QTimer.singleShot(0, finish)

    window.worker.modelLoaded.connect(lambda task, *_: done(task))
    window.worker.modelFailed.connect(lambda task, _path, reason: done(task, reason))
    if not pending:
        QTimer.singleShot(0, finish)
    QTimer.singleShot(STARTUP_CHECK_TIMEOUT_S * 1000, lambda: (failures.append("timed out"), finish()))
    return failures


@contextmanager
def closing_on_sigterm(window) -> Iterator[None]:
    """Within the block SIGTERM (logout, ``kill``) closes ``window`` like Quit: the last edits are
    autosaved and the folder's annotation lock is released. A timer lets Python see the signal
    while Qt waits for events."""
    from PyQt5.QtCore import QTimer

    previous = signal.signal(signal.SIGTERM, lambda *_: window.close())
    wake = QTimer(window)
    wake.timeout.connect(lambda: None)  # runs Python, which then calls the signal handler
    wake.start(200)
    try:
        yield
    finally:
        wake.stop()
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    started = time.perf_counter()
    args = build_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    # The canvas draws with the raster engine. Qt's GLX integration would load Mesa's LLVM, which
    # clashes with the LLVM inside triton (imported by CUDA builds of torch): a segfault on X11.
    os.environ.setdefault("QT_XCB_GL_INTEGRATION", "none")
    from PyQt5.QtCore import Qt
    from PyQt5.QtWidgets import QApplication

    from models.version import __version__
    from petseg_desktop import crash
    from petseg_desktop.main_window import MainWindow

    QApplication.setAttribute(Qt.AA_EnableHighDpiScaling, True)
    QApplication.setAttribute(Qt.AA_UseHighDpiPixmaps, True)
    app = QApplication.instance() or QApplication([sys.argv[0] if sys.argv else "petseg"])
    app.setOrganizationName("PetSeg")
    app.setApplicationName("petseg")
    app.setApplicationVersion(__version__)
    window = MainWindow(device=args.device)
    window.show()
    # an exception escaping a slot autosaves and shows a dialog instead of aborting the process
    with crash.installed(window), closing_on_sigterm(window):
        if args.path:
            window.open_path(args.path)
        failures = close_when_models_ready(window, started) if args.startup_check else []
        code = app.exec_()
    return 1 if failures else code


if __name__ == "__main__":
    sys.exit(main())
