"""One ``petseg-train finetune`` child process, run with QProcess so that the GUI never waits on it and
a crash of the child cannot take the window down.

The app never imports ``training`` (the import layers forbid it): it only checks that the package
is there and runs ``python -m training.cli``. The child's ``--progress-json`` lines come back as
:attr:`FinetuneProcess.reported` dicts; its human log (stderr) as :attr:`FinetuneProcess.logLine`,
with any Python traceback held back so that a failure reads as one line.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

from PyQt5.QtCore import QObject, QProcess, QProcessEnvironment, QTimer, pyqtSignal

KILL_AFTER_MS = 5000  # a child that ignores SIGTERM this long is killed
ERROR_PREFIX = "petseg-train: error: "
# Lines of a Python traceback other than its exception line (frames, source, chaining notes).
TRACEBACK_LINES = (" ", "\t", "Traceback (most recent", "During handling of", "The above exception")


def training_root() -> Path | None:
    """The folder holding the ``training`` package with its command line, or None where training is
    not installed (the packaged app, or an install without it). Nothing of training is imported:
    finding ``training.cli`` would run ``training/__init__``, so the top-level package is looked up."""
    if getattr(sys, "frozen", False):
        return None
    try:
        spec = importlib.util.find_spec("training")
    except (ImportError, ValueError):
        return None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    found = [Path(folder) for folder in locations if (Path(folder) / "cli.py").is_file()]
    return found[0].resolve().parent if found else None


def finetune_arguments(checkpoint: Path, data: Path, out: Path, source: Path, epochs: int,
                       replay: Path | None = None) -> list[str]:
    """The child's arguments after the Python executable; ``replay``: the original training data to
    mix in (``--replay``), where the user has it."""
    return ["-m", "training.cli", "finetune", "--init-from", str(checkpoint), "--data", str(data),
            "--out", str(out), "--source-folder", str(source), "--epochs", str(epochs),
            *(["--replay", str(replay)] if replay else []), "--progress-json", "--no-progress"]


class FinetuneProcess(QObject):
    """Runs one fine-tune child; :attr:`ended` carries None on success, else a one-line reason."""

    reported = pyqtSignal(dict)  # a --progress-json line
    logLine = pyqtSignal(str)  # a line of the child's log (no traceback lines)
    ended = pyqtSignal(object)  # None, or the one-line reason it failed

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.process = QProcess(self)
        self.process.readyReadStandardOutput.connect(self._read_stdout)
        self.process.readyReadStandardError.connect(self._read_stderr)
        self.process.finished.connect(self._finished)
        self.process.errorOccurred.connect(self._error)
        self._buffers = {"out": b"", "err": b""}
        self._in_traceback = False
        self._last_error = ""
        self._done = False  # the child said "done"
        self._ended = False

    def start(self, arguments: list[str]) -> None:
        """Start ``python arguments``; the ``training`` package's folder leads the child's PYTHONPATH."""
        env = QProcessEnvironment.systemEnvironment()
        root = training_root()
        paths = [str(root)] if root else []
        if env.value("PYTHONPATH"):
            paths.append(env.value("PYTHONPATH"))
        env.insert("PYTHONPATH", os.pathsep.join(paths))
        env.insert("PYTHONUNBUFFERED", "1")
        self.process.setProcessEnvironment(env)
        self.process.start(sys.executable, arguments)

    def running(self) -> bool:
        return self.process.state() != QProcess.NotRunning

    def pid(self) -> int:
        """The child's process id (0 when none runs)."""
        return int(self.process.processId())

    def stop(self) -> None:
        """Ask the child to stop (SIGTERM); kill it if it is still there after :data:`KILL_AFTER_MS`."""
        if self.running():
            self.process.terminate()
            QTimer.singleShot(KILL_AFTER_MS, self._kill_if_running)

    def stop_and_wait(self) -> None:
        """:meth:`stop`, blocking until the child is gone (closing the dialog: no orphan is left)."""
        if self.running():
            self.process.terminate()
            if not self.process.waitForFinished(KILL_AFTER_MS):
                self.process.kill()
                self.process.waitForFinished(KILL_AFTER_MS)

    def _kill_if_running(self) -> None:
        if self.running():
            self.process.kill()

    # ------------------------------------------------------------------ output
    def _lines(self, which: str, data: bytes) -> list[str]:
        text = self._buffers[which] + data
        *lines, self._buffers[which] = text.split(b"\n")
        return [line.decode("utf-8", "replace").rstrip("\r") for line in lines]

    def _read_stdout(self) -> None:
        for line in self._lines("out", bytes(self.process.readAllStandardOutput())):
            try:
                event = json.loads(line)
            except ValueError:
                continue  # not a progress line
            if isinstance(event, dict) and "event" in event:
                self._done = self._done or event["event"] == "done"
                self.reported.emit(event)

    def _read_stderr(self) -> None:
        for line in self._lines("err", bytes(self.process.readAllStandardError())):
            if line.startswith("Traceback (most recent call last)"):
                self._in_traceback = True
            if not line.strip() or (self._in_traceback and line.startswith(TRACEBACK_LINES)):
                continue
            self._last_error = line.strip()  # in a traceback: its exception line, not a frame
            if not self._in_traceback and not line.startswith(ERROR_PREFIX):  # that one ends the run: said once
                self.logLine.emit(line)

    # ------------------------------------------------------------------ the end
    def _finished(self, code: int, status: QProcess.ExitStatus) -> None:
        self._read_stdout()
        self._read_stderr()
        if status == QProcess.CrashExit:
            self._end(f"the training process stopped unexpectedly ({self._last_error or 'no message'})")
        elif code != 0:
            self._end(self._last_error.removeprefix(ERROR_PREFIX) or f"the training process exited with code {code}")
        else:
            self._end(None if self._done else "the training process ended without a result")

    def _error(self, error: QProcess.ProcessError) -> None:
        if error == QProcess.FailedToStart:
            self._end(f"cannot start {sys.executable}: {self.process.errorString()}")

    def _end(self, reason: str | None) -> None:
        if not self._ended:
            self._ended = True
            self.ended.emit(reason)
