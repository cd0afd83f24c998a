"""One writer per photo folder's annotations: a :class:`QLockFile` where the folder's sidecars go.

The instance that opens a folder first takes ``<sidecar folder>/.lock`` (``.petseg/.lock``, or in
the user data fallback folder for read-only photo folders) and keeps it until it opens another
folder or exits; any other instance (another process, or another window of the same process)
opens the folder read-only. The lock file records pid, host and application name: a lock left by
a dead process on this host is taken over at once, and one from another host (a shared folder)
once its file has not been touched for :data:`STALE_AFTER_MS`; the holder touches it every
:data:`HEARTBEAT_MS` so a live lock never looks stale.
"""

from __future__ import annotations

import os
from pathlib import Path

from PyQt5.QtCore import QLockFile, QObject, QTimer

from petseg_desktop.sidecar import sidecar_dir

LOCK_NAME = ".lock"
STALE_AFTER_MS = 5 * 60 * 1000
HEARTBEAT_MS = 60 * 1000


class FolderLock(QObject):
    """The annotation lock of one photo folder; :meth:`acquire` never waits."""

    def __init__(self, image_folder: Path, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.folder = Path(image_folder)
        self.path = sidecar_dir(self.folder) / LOCK_NAME
        self._lock = QLockFile(str(self.path))
        self._lock.setStaleLockTime(STALE_AFTER_MS)
        self._heartbeat = QTimer(self)
        self._heartbeat.setInterval(HEARTBEAT_MS)
        self._heartbeat.timeout.connect(self._beat)

    def acquire(self) -> bool | None:
        """Take the lock: True when taken, False when another instance holds it, None when it
        cannot be made here at all (an unwritable folder: then nothing can be autosaved anyway)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError:
            return None
        if self._lock.tryLock(0):
            self._heartbeat.start()
            return True
        return False if self._lock.error() == QLockFile.LockFailedError else None

    def held(self) -> bool:
        return self._lock.isLocked()

    def holder(self) -> str:
        """Who holds the lock, e.g. ``PetSeg (pid 123 on host)``."""
        found, pid, host, _app = self._lock.getLockInfo()
        if not found:
            return "another PetSeg"
        who = "another PetSeg window" if pid == os.getpid() and host == os.uname().nodename else "another PetSeg"
        return f"{who} (pid {pid} on {host})"

    def release(self) -> None:
        self._heartbeat.stop()
        if self._lock.isLocked():
            self._lock.unlock()

    def _beat(self) -> None:
        """Touch the lock file so that a live lock never looks stale by its age."""
        try:
            os.utime(self.path)
        except OSError:
            pass  # removed behind our back: the next instance takes the folder, nothing to repair here
