"""Watch the open folder: photos copied in or deleted show up in the file list without reopening it."""

from __future__ import annotations

from pathlib import Path

from PyQt5.QtCore import QFileSystemWatcher, QObject, QTimer, pyqtSignal

DEBOUNCE_MS = 400  # a copy of many photos is one rescan, after it has settled


class FolderWatcher(QObject):
    """Emits ``changed`` once a burst of changes in the watched folder has been quiet ``DEBOUNCE_MS``."""

    changed = pyqtSignal()

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._watcher = QFileSystemWatcher(self)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(DEBOUNCE_MS)
        self._watcher.directoryChanged.connect(lambda _path: self._timer.start())
        self._timer.timeout.connect(self.changed)

    def watch(self, folder: Path | None) -> None:
        """Watch ``folder`` only (None: nothing)."""
        self._timer.stop()
        if self._watcher.directories():
            self._watcher.removePaths(self._watcher.directories())
        if folder is not None:
            self._watcher.addPath(str(folder))

    def folder(self) -> Path | None:
        folders = self._watcher.directories()
        return Path(folders[0]) if folders else None
