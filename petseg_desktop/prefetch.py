"""Decode the next photo of a folder in the background, so that moving to it does not wait.

Decoding a 24 MP JPEG (plus its EXIF rotation) takes about half a second; the editor asks for
the photo after the current one while the user works on this one. Pillow releases the GIL while
it decodes, so the GUI stays responsive.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np


def _file_stamp(path: Path) -> tuple[int, int] | None:
    """(size, modification time) of ``path``, or None when it cannot be read."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


class ImagePrefetcher:
    """Holds at most one photo decoded ahead of time; ``load`` hands it over or decodes now."""

    def __init__(self, decode: Callable[[Path], np.ndarray]) -> None:
        self._decode = decode
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="petseg-prefetch")
        self._path: Path | None = None
        self._stamp: tuple[int, int] | None = None
        self._future: Future | None = None

    def prefetch(self, path: Path) -> None:
        """Start decoding ``path`` (dropping any other photo decoded ahead)."""
        path = Path(path)
        if path == self._path:
            return
        self.discard()
        self._path, self._stamp = path, _file_stamp(path)
        self._future = self._executor.submit(self._decode, path)

    def load(self, path: Path) -> np.ndarray:
        """``path`` decoded: the prefetched result when it is that unchanged file, else decoded now.

        A decoding error of the prefetched photo is raised here, as a direct decode would raise it.
        """
        path = Path(path)
        if self._future is not None and path == self._path and _file_stamp(path) == self._stamp:
            future, self._path, self._stamp, self._future = self._future, None, None, None
            return future.result()  # waits if it is still decoding
        self.discard()
        return self._decode(path)

    def discard(self) -> None:
        """Forget the photo decoded ahead (cancelled if it has not started)."""
        if self._future is not None:
            self._future.cancel()
        self._path = self._stamp = self._future = None

    def shutdown(self) -> None:
        """Stop the background thread (a decode in progress finishes on its own)."""
        self.discard()
        self._executor.shutdown(wait=False, cancel_futures=True)
