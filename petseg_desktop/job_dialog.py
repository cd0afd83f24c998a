"""What the export dialogs share: a job in a QThread with progress and Cancel, and the dialog frame
around it (a form on top, a progress bar, a status line, a log, Start / Cancel / Close)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from PyQt5.QtCore import QThread, pyqtSignal
from PyQt5.QtWidgets import (
    QDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from models.errors import one_line

ProgressCallback = Callable[[int, int, str], None]  # done, total, what (a path or a name)
Job = Callable[[ProgressCallback, threading.Event], Any]  # gets progress and the cancel Event


class JobThread(QThread):
    """Runs ``job(progress, cancel_event)`` off the GUI thread; its result or one-line error comes back."""

    progressed = pyqtSignal(int, int, str)
    finishedWith = pyqtSignal(object)
    failed = pyqtSignal(str)

    def __init__(self, job: Job, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.job = job
        self.cancel_event = threading.Event()

    def run(self) -> None:
        try:
            result = self.job(lambda done, total, what: self.progressed.emit(done, total, str(what)), self.cancel_event)
        except Exception as error:  # noqa: BLE001 - bad input, unwritable output, a full disk...
            self.failed.emit(one_line(error))
            return
        self.finishedWith.emit(result)


def browse_row(edit: QLineEdit, choose: Callable[[str], str | None]) -> QWidget:
    """``edit`` with a "…" button; ``choose(current text)`` returns the picked path or None."""
    box = QWidget()
    row = QHBoxLayout(box)
    row.setContentsMargins(0, 0, 0, 0)
    row.addWidget(edit, 1)
    browse = QPushButton("…")
    browse.setToolTip("Browse")

    def pick() -> None:
        path = choose(edit.text())
        if path:
            edit.setText(path)

    browse.clicked.connect(pick)
    row.addWidget(browse)
    return box


class JobDialog(QDialog):
    """A dialog that runs one job at a time: subclasses fill ``form`` and call :meth:`launch`.

    ``progressed`` repeats the job's progress on the GUI thread (tests cancel from it).
    """

    progressed = pyqtSignal(int, int, str)

    def __init__(self, title: str, start_text: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(title)
        self.job: JobThread | None = None
        self.cancelled_text = "Cancelled"  # the log when a job stopped because Cancel was pressed
        self.form = QFormLayout()
        self.progress = QProgressBar()
        self.rate_label = QLabel("")
        self.rate_label.setWordWrap(True)  # a long status wraps and never widens the dialog
        self.rate_label.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.start_button = QPushButton(start_text)
        self.cancel_button = QPushButton("Cancel")
        self.close_button = QPushButton("Close")
        self.cancel_button.setEnabled(False)
        self.start_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        self.close_button.clicked.connect(self.close)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        for button in (self.start_button, self.cancel_button, self.close_button):
            buttons.addWidget(button)
        layout = QVBoxLayout(self)
        layout.addLayout(self.form)
        layout.addWidget(self.progress)
        layout.addWidget(self.rate_label)
        layout.addWidget(self.log, 1)
        layout.addLayout(buttons)

    def start(self) -> bool:  # pragma: no cover - every subclass has its own
        raise NotImplementedError

    def running(self) -> bool:
        return self.job is not None and self.job.isRunning()

    def launch(self, job: Job, done: Callable[[Any], None], message: str) -> None:
        """Run ``job`` in a thread; ``done(result)`` on success, the error in the log otherwise."""
        self.log.setPlainText(message)
        self.progress.setRange(0, 0)
        self.job = JobThread(job, self)
        self.job.progressed.connect(self._on_progress)
        self.job.finishedWith.connect(lambda result: (self._finish(), done(result)))
        self.job.failed.connect(self._on_failed)
        self.start_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.job.start()

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancel_event.set()
            self.cancel_button.setEnabled(False)
            self.rate_label.setText("Cancelling…")

    def cancelled(self) -> bool:
        """Whether the last job was asked to stop."""
        return self.job is not None and self.job.cancel_event.is_set()

    def show_progress(self, done: int, total: int, what: str) -> None:
        """The status line while the job runs; subclasses may say more (a rate, a stage)."""
        self.rate_label.setText(f"{done}/{total}  {what}")

    def _on_progress(self, done: int, total: int, what: str) -> None:
        self.progress.setRange(0, total)
        self.progress.setValue(done)
        if not self.cancelled():
            self.show_progress(done, total, what)
        self.progressed.emit(done, total, what)

    def _finish(self) -> None:
        self.start_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        if self.progress.maximum() == 0:
            self.progress.setRange(0, 1)

    def _on_failed(self, reason: str) -> None:
        self._finish()
        if self.cancelled():
            self.rate_label.setText("Cancelled")
            self.log.setPlainText(self.cancelled_text)
            return
        self.rate_label.setText("Failed")
        self.log.setPlainText(f"Failed: {reason}")

    def closeEvent(self, event) -> None:
        if self.running():
            self.job.cancel_event.set()
            self.job.wait(30000)
        super().closeEvent(event)
