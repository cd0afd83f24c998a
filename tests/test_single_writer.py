"""One writer per photo folder: a second instance (a real second process, or a second window)
opens the folder read-only, and the lock comes free when the first exits, is killed, or goes stale.

The holder is the real app, ``python -m petseg_desktop.app <folder>``, in a fresh user profile.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from app_driver import click, make_window

from petseg_desktop.annotation import AnnotationObject, ImageAnnotation, Prompts
from petseg_desktop.editor import AUTOSAVE_DELAY_MS
from petseg_desktop.export_files import collect_inputs
from petseg_desktop.folder import list_images
from petseg_desktop.folder_lock import LOCK_NAME, STALE_AFTER_MS
from petseg_desktop.main_window import MainWindow
from petseg_desktop.sidecar import SIDECAR_FOLDER, load_document, save_document, sidecar_path

START_TIMEOUT_S = 120  # the holder imports torch and Qt on a shared machine


# ---------------------------------------------------------------------------- helpers
def lock_file(folder: Path) -> Path:
    return folder / SIDECAR_FOLDER / LOCK_NAME


def lock_pid(folder: Path) -> int | None:
    """The pid recorded in the folder's lock file, None when there is none."""
    try:
        return int(lock_file(folder).read_text().split("\n")[0])
    except (OSError, ValueError):
        return None


def annotate(photo: Path) -> bytes:
    """Save a one-object sidecar for ``photo`` (as the first instance would) and return its bytes."""
    width, height = Image.open(photo).size
    mask = np.zeros((height, width), bool)
    mask[height // 4: height // 2, width // 4: width // 2] = True
    doc = ImageAnnotation(photo, height, width)
    doc.objects = [AnnotationObject(1, mask, Prompts(), "brush")]
    return save_document(doc).read_bytes()


@pytest.fixture
def holder(tmp_path, photos):
    """Start the real app on ``photos`` in another process; returns it once it holds the lock."""
    home = tmp_path / "holder-home"
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / "config"),
           "XDG_DATA_HOME": str(home / "data"), "QT_QPA_PLATFORM": "offscreen", "PETSEG_CHECKPOINTS": ""}
    log = (tmp_path / "holder.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "petseg_desktop.app", str(photos), "--device", "cpu"],
                            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + START_TIMEOUT_S
    while lock_pid(photos) != proc.pid:
        assert proc.poll() is None, (tmp_path / "holder.log").read_text()[-2000:]
        assert time.monotonic() < deadline, "the holder did not take the lock"
        time.sleep(0.1)
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait(30)
    log.close()


def open_folder(qtbot, tmp_path, folder: Path) -> MainWindow:
    w = make_window(qtbot, tmp_path, wait_models=False)
    w.open_path(folder)
    qtbot.waitUntil(lambda: w.editor.doc is not None, timeout=10000)
    return w


def assert_writes(qtbot, w: MainWindow, photo: Path) -> None:
    """``w`` holds the lock and an edit reaches ``photo``'s sidecar through autosave."""
    assert not w.editor.read_only and lock_pid(photo.parent) == os.getpid()
    assert not w.read_only_label.isVisibleTo(w)
    before = len(w.editor.doc.objects)
    w.editor.delete_object(0)
    qtbot.waitUntil(lambda: len(load_document(photo, w.editor.doc.shape).objects) == before - 1, timeout=5000)


# ---------------------------------------------------------------------------- another process
def test_a_second_process_opens_read_only_until_the_first_exits(
    qtbot, with_models, dialogs, photos, holder, tmp_path  # noqa: F811
):
    first = list_images(photos)[0]
    saved = annotate(first)  # what the holder wrote
    w = open_folder(qtbot, tmp_path, photos)
    assert w.image_path == first and len(w.editor.doc.objects) == 1  # existing annotation shown
    assert w.editor.read_only and w.lock is None
    message = w.read_only_dialog.text()
    assert w.read_only_dialog.isVisible() and not w.read_only_dialog.isModal()
    assert f"pid {holder.pid}" in message and "\n" not in message
    assert w.statusBar().currentMessage() == message
    assert w.read_only_label.isVisibleTo(w) and "[read-only]" in w.windowTitle()
    assert not w.save_action.isEnabled() and not w.brush_action.isEnabled()

    # every way to edit is refused with one status line; nothing reaches the disk
    click(w, 50, 50)
    w.editor.delete_object(0)
    w.accept_object()
    assert w.save_mask() == [] and w.editor.auto_segment() is False
    assert "Read-only" in w.statusBar().currentMessage()
    assert len(w.editor.doc.objects) == 1 and w.editor.stack.count() == 0
    w.editor.flush(force=True)
    w.step(1)  # viewing goes on
    qtbot.wait(3 * AUTOSAVE_DELAY_MS)
    assert sidecar_path(first).read_bytes() == saved
    assert sorted(p.name for p in (photos / SIDECAR_FOLDER).iterdir()) == [LOCK_NAME, f"{first.name}.json"]
    assert not list(photos.glob("*_mask*.png")) and dialogs == []
    w.close()

    holder.send_signal(signal.SIGTERM)  # closes like Quit: autosave, then the lock is released
    assert holder.wait(30) == 0
    assert not lock_file(photos).exists()
    w = open_folder(qtbot, tmp_path, photos)
    assert w.image_path == list_images(photos)[1]  # the folder reopens where the last window left it
    w.open_image(first)
    qtbot.waitUntil(lambda: w.editor.doc is not None and w.image_path == first, timeout=10000)
    assert_writes(qtbot, w, first)
    w.close()
    assert not lock_file(photos).exists()


def test_a_killed_holders_lock_is_taken_over_at_once(
    qtbot, with_models, dialogs, photos, holder, tmp_path  # noqa: F811
):
    first = list_images(photos)[0]
    annotate(first)
    holder.send_signal(signal.SIGKILL)
    holder.wait(30)
    assert lock_pid(photos) == holder.pid  # left behind
    started = time.monotonic()
    w = open_folder(qtbot, tmp_path, photos)
    assert time.monotonic() - started < 10  # a dead pid on this host is stale at once, no stale-time wait
    assert w.lock is not None and dialogs == []
    assert_writes(qtbot, w, first)
    w.close()


# ---------------------------------------------------------------------------- one process, other hosts
def test_two_windows_in_one_process_do_not_deadlock(qtbot, with_models, dialogs, photos, tmp_path):  # noqa: F811
    """The second window is read-only like a second process (tryLock never waits); it becomes
    writable when the folder is reopened after the first window closed."""
    first = list_images(photos)[0]
    annotate(first)
    a = open_folder(qtbot, tmp_path, photos)
    b = open_folder(qtbot, tmp_path, photos)
    assert not a.editor.read_only and b.editor.read_only
    assert "another PetSeg window" in b.read_only_dialog.text()
    a.close()
    assert not lock_file(photos).exists()
    b.open_path(photos)
    assert_writes(qtbot, b, first)
    b.close()


def test_a_lock_from_another_host_blocks_until_stale(qtbot, with_models, dialogs, photos, tmp_path):  # noqa: F811
    first = list_images(photos)[0]
    annotate(first)
    lock_file(photos).write_text("4242\npetseg\nother-host\n")  # QLockFile's format: pid, app, host
    w = open_folder(qtbot, tmp_path, photos)
    assert w.editor.read_only and "pid 4242 on other-host" in w.read_only_dialog.text()
    old = time.time() - STALE_AFTER_MS / 1000 - 60
    os.utime(lock_file(photos), (old, old))  # its holder stopped touching it: gone
    w.open_path(photos)  # reopening tries again
    assert_writes(qtbot, w, first)
    w.close()


def test_the_lock_is_never_a_photo_or_a_sidecar(qtbot, with_models, dialogs, photos, tmp_path):  # noqa: F811
    w = open_folder(qtbot, tmp_path, photos)
    assert lock_file(photos).is_file()
    names = sorted(p.name for p in photos.iterdir() if p.is_file())
    assert sorted(p.name for p in list_images(photos)) == names
    found, rejected = collect_inputs([photos])
    assert sorted(p.name for p in found) == names and rejected == []
    found, rejected = collect_inputs([lock_file(photos)])  # named on the command line: refused
    assert found == [] and "not a photo" in rejected[0][1]
    w.close()


def test_the_lock_goes_where_the_sidecars_go(qtbot, with_models, dialogs, photos, tmp_path):  # noqa: F811
    """A folder whose ``.petseg`` cannot be used (here a file) keeps sidecars and lock in the user data folder."""
    (photos / SIDECAR_FOLDER).write_text("not a folder")
    a = open_folder(qtbot, tmp_path, photos)
    b = open_folder(qtbot, tmp_path, photos)
    held = a.lock.path
    assert held == sidecar_path(a.image_path).parent / LOCK_NAME != lock_file(photos)
    assert held.is_file() and b.editor.read_only
    a.close()
    assert not held.exists()
    b.close()
