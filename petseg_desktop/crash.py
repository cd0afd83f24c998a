"""The app's last line of defence: an exception no slot caught autosaves, shows one line, and the app goes on.

PyQt5 aborts the process when an exception escapes a slot unless ``sys.excepthook`` is replaced;
:func:`installed` replaces it (and ``threading.excepthook``) with a :class:`CrashHandler`.
"""

from __future__ import annotations

import sys
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType

from PyQt5.QtCore import QObject, pyqtSignal
from PyQt5.QtWidgets import QMessageBox

from models.errors import one_line


def describe(error: BaseException) -> str:
    """``Type: message`` on one line."""
    text = one_line(error)
    return text if text == type(error).__name__ else f"{type(error).__name__}: {text}"


class CrashHandler(QObject):
    """Reports an uncaught exception from any thread in the window's (GUI) thread."""

    _caught = pyqtSignal(str, str)  # one line, traceback; queued to the GUI thread from other threads

    def __init__(self, window) -> None:
        super().__init__(window)
        self.window = window
        self.dialog: QMessageBox | None = None
        self._caught.connect(self._report)

    def __call__(self, kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
        """The ``sys.excepthook``: print the traceback and report it (never raises)."""
        details = "".join(traceback.format_exception(kind, error, tb))
        sys.stderr.write(details)
        if issubclass(kind, KeyboardInterrupt):
            return
        self._caught.emit(describe(error), details)

    def thread_hook(self, args: threading.ExceptHookArgs) -> None:
        """The ``threading.excepthook``: as :meth:`__call__`."""
        self(args.exc_type, args.exc_value or args.exc_type(), args.exc_traceback)

    def _report(self, line: str, details: str) -> None:
        """Autosave the open annotation, then show ``line`` with the traceback folded away."""
        saved = self._autosave()
        text = f"Unexpected error: {line} ({saved}); PetSeg goes on."
        if self.dialog is not None and self.dialog.isVisible():
            return  # one dialog at a time; the traceback is on stderr
        self.dialog = QMessageBox(QMessageBox.Critical, "PetSeg error", text, QMessageBox.Ok, self.window)
        self.dialog.setDetailedText(details)
        self.dialog.open()  # not exec_(): no nested event loop inside an exception hook

    def _autosave(self) -> str:
        editor = self.window.editor
        if editor.doc is None:
            return "no annotation open"
        if editor.read_only:
            return "folder read-only, nothing saved"
        try:
            saved = editor.flush(force=True)
        except Exception as error:  # noqa: BLE001 - the save itself may be what failed
            return f"autosave failed too: {describe(error)}"
        return f"{editor.doc.image_path.name} autosaved" if saved else "autosave failed too"


@contextmanager
def installed(window) -> Iterator[CrashHandler]:
    """Within the block, ``window``'s handler is the exception hook of the main and every other thread."""
    handler = CrashHandler(window)
    previous = sys.excepthook, threading.excepthook
    sys.excepthook, threading.excepthook = handler, handler.thread_hook
    try:
        yield handler
    finally:
        sys.excepthook, threading.excepthook = previous
