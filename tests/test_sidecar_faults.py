"""Bad sidecars, odd ``.petseg`` folders, replaced photos and uncaught exceptions, in the real window.

Every bad sidecar is written to a real ``.petseg/`` beside a real pet photo and opened in the
MainWindow: the app goes on with an empty document, says one line, keeps the bad file's bytes
(renamed aside) and autosaves anew.
"""

from __future__ import annotations

import json
import os
import threading
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from PyQt5.QtCore import QSettings, QTimer
from PyQt5.QtWidgets import QMessageBox

from models.classes import CAT
from petseg_desktop import crash, sidecar
from petseg_desktop.main_window import MainWindow
from petseg_desktop.sidecar import SidecarError, load_document

RESTORE_TITLE = "Annotation not restored"


# ---------------------------------------------------------------------------- fixtures and helpers
@pytest.fixture
def window(qtbot, isolated, dialogs):
    """The real main window without models (none are needed to open, brush and autosave)."""
    w = MainWindow(settings=QSettings(str(isolated / "settings.ini"), QSettings.IniFormat), device="cpu")
    qtbot.addWidget(w)
    w.show()
    yield w
    w.close()


@pytest.fixture
def photo(photos) -> tuple[Path, int, int]:
    """A copied pet photo, its width and height."""
    path = sorted(photos.glob("*.jpg"))[0]
    with Image.open(path) as im:
        return path, im.width, im.height


def sidecar_of(image: Path) -> Path:
    return image.parent / ".petseg" / f"{image.name}.json"


def valid(w: int, h: int) -> dict[str, Any]:
    """A good sidecar of a w x h photo: one cat (all but the first row) and no current object."""
    return {
        "format": "petseg-annotation", "version": 1, "image": "x.jpg", "width": w, "height": h,
        "objects": [{"class": "cat", "class_id": CAT, "source": "brush", "prompts": {"points": [[1, 1, 1]], "box": None},
                     "mask": {"size": [h, w], "counts": [w, w * (h - 1)]}}],
        "current": {"prompts": {"points": [], "box": None}, "mask": None, "editing": None},
    }


def edit(path: str, value: Any) -> Callable[[int, int], bytes]:
    """A case: the valid sidecar with the item at dotted ``path`` set to ``value`` (or ``value(w, h)``)."""

    def build(w: int, h: int) -> bytes:
        data = valid(w, h)
        *parents, last = [int(k) if k.isdigit() else k for k in path.split(".")]
        node = data
        for k in parents:
            node = node[k]
        node[last] = value(w, h) if callable(value) else value
        return json.dumps(data).encode()

    return build


def raw(text: bytes) -> Callable[[int, int], bytes]:
    return lambda w, h: text


def brush_and_accept(w: MainWindow) -> None:
    w.editor.brush([(5, 5), (40, 30)], 6, erase=False)
    assert w.editor.accept(CAT) is not None


def one_message(dialogs: list, title: str) -> str:
    texts = [text for _, t, text in dialogs if t == title]
    assert len(texts) == 1, dialogs
    assert "\n" not in texts[0] and len(texts[0]) < 400
    return texts[0]


# ---------------------------------------------------------------------------- bad sidecars
BAD = [
    pytest.param(raw(b"{not json"), "unreadable", id="not-json"),
    pytest.param(raw(b"\xff\xfe{}"), "unreadable", id="not-utf8"),
    pytest.param(raw(b"[" * 100_000), "unreadable", id="nested-too-deep"),
    pytest.param(raw(b"[1, 2]"), "not a PetSeg annotation", id="top-level-list"),
    pytest.param(edit("format", "other"), "not a PetSeg annotation", id="wrong-format"),
    pytest.param(edit("version", 99), "version", id="newer-version"),
    pytest.param(edit("height", "abc"), "width/height", id="height-text"),
    pytest.param(edit("height", "x" * 100_000), "width/height", id="height-long-text"),
    pytest.param(raw(b'{"format":"petseg-annotation","version":1,"width":NaN,"height":2}'), "width/height", id="width-nan"),
    pytest.param(edit("width", lambda w, h: w + 1), "annotation is for a", id="other-size"),
    pytest.param(edit("objects", "abc"), "objects: expected a list", id="objects-text"),
    pytest.param(edit("objects.0", 5), "objects[0]: expected an object", id="object-not-dict"),
    pytest.param(edit("objects.0.class_id", 7), "objects[0].class_id", id="unknown-class"),
    pytest.param(edit("objects.0.mask", None), "objects[0].mask: expected an object with size", id="no-mask"),
    pytest.param(edit("objects.0.mask.counts", []), "runs cover 0 pixels", id="empty-counts"),
    pytest.param(edit("objects.0.mask.counts", [1, 2, 3]), "runs cover 6 pixels", id="counts-short"),
    pytest.param(edit("objects.0.mask.counts", lambda w, h: [-1, w * h + 1]), ">= 0", id="negative-count"),
    pytest.param(edit("objects.0.mask.counts", lambda w, h: [w * h / 2, w * h / 2]), ">= 0", id="float-counts"),
    pytest.param(raw(b'{"objects":[{"mask":{"counts":[' + b"9" * 5000 + b"]}}]}"), "unreadable", id="huge-integer"),
    pytest.param(edit("objects.0.mask.size", lambda w, h: [h, w // 2]), "mask for a", id="mask-other-size"),
    pytest.param(edit("current", "x"), "current: expected an object", id="current-text"),
    pytest.param(edit("current.mask", {"size": "x"}), "current.mask.size", id="current-mask-bad"),
    pytest.param(edit("objects.0.prompts.points", [["a", "b", 1]]), "points[0]", id="points-text"),
    pytest.param(edit("objects.0.prompts.points", [[1, 1, 1], [1e9, 3, 0]]), "outside", id="point-outside"),
    pytest.param(edit("current.prompts", {"box": [1, 2]}), "current.prompts.box", id="box-short"),
    pytest.param(edit("current.editing", ["a", 1]), "current.editing", id="editing-text"),
    pytest.param(edit("photo", "abc"), "photo", id="fingerprint-malformed"),
]


@pytest.mark.parametrize(("build", "fragment"), BAD)
def test_a_bad_sidecar_is_set_aside_and_reported_in_one_line(qtbot, window, photo, dialogs, build, fragment):
    image, w, h = photo
    bad = sidecar_of(image)
    bad.parent.mkdir()
    data = build(w, h)
    bad.write_bytes(data)
    window.open_path(image)  # must not raise
    message = one_message(dialogs, RESTORE_TITLE)
    assert bad.name in message and fragment in message
    (kept,) = bad.parent.glob(f"{bad.name}.bad-*")
    assert kept.name in message and kept.read_bytes() == data
    assert window.editor.doc is not None and window.editor.doc.objects == []
    brush_and_accept(window)
    assert window.editor.flush()
    assert len(load_document(image, (h, w)).objects) == 1  # the new autosave, not the bad file
    assert kept.read_bytes() == data
    assert window.isVisible()


# ---------------------------------------------------------------------------- memory: refused before allocating
def huge(w: int, h: int, declared: tuple[int, int], mask: tuple[int, int] | None = None, counts: Any = None) -> bytes:
    """A small sidecar that declares ``declared`` (w, h) and one object mask of ``mask`` size."""
    data = valid(w, h)
    data["width"], data["height"] = declared
    mw, mh = mask or declared
    data["objects"][0]["mask"] = {"size": [mh, mw], "counts": counts if counts is not None else [mw * mh]}
    return json.dumps(data).encode()


HUGE = [
    pytest.param(lambda w, h: huge(w, h, (40000, 40000)), "annotation is for a 40000x40000", id="declares-40000"),
    pytest.param(lambda w, h: huge(w, h, (100000, 100000)), "annotation is for a 100000x100000", id="declares-100000"),
    pytest.param(lambda w, h: huge(w, h, (w, h), (100000, 100000)), "100000x100000 mask", id="mask-100000"),
    pytest.param(lambda w, h: huge(w, h, (w, h), (w, h), [0, 10**12]), "runs cover", id="counts-10^12"),
]


@pytest.mark.parametrize(("build", "fragment"), HUGE)
def test_a_huge_declared_size_is_refused_without_allocating(photo, isolated, build, fragment):
    image, w, h = photo
    bad = sidecar_of(image)
    bad.parent.mkdir()
    bad.write_bytes(build(w, h))
    assert bad.stat().st_size < 400
    tracemalloc.start()
    try:
        with pytest.raises(SidecarError, match=fragment):
            load_document(image, (h, w))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2**20


def test_a_sidecar_over_the_size_limit_is_refused_before_reading(qtbot, window, photo, dialogs):
    image, w, h = photo
    bad = sidecar_of(image)
    bad.parent.mkdir()
    with open(bad, "wb") as f:
        f.truncate(sidecar.MAX_SIDECAR_BYTES + 1)  # sparse: costs no disk
    tracemalloc.start()
    try:
        with pytest.raises(SidecarError, match="limit 64 MB"):
            load_document(image, (h, w))
        assert tracemalloc.get_traced_memory()[1] < 4 * 2**20
    finally:
        tracemalloc.stop()
    window.open_path(image)
    assert "limit 64 MB" in one_message(dialogs, RESTORE_TITLE)
    (kept,) = bad.parent.glob(f"{bad.name}.bad-*")
    assert kept.stat().st_size == sidecar.MAX_SIDECAR_BYTES + 1


# ---------------------------------------------------------------------------- .petseg that is not a plain folder
def test_petseg_as_a_file_falls_back_to_user_data_and_is_found_again(qtbot, window, photo, dialogs, isolated):
    image, w, h = photo
    (image.parent / ".petseg").write_bytes(b"someone's file")
    window.open_path(image)
    brush_and_accept(window)
    assert window.editor.flush()
    assert not [d for d in dialogs if d[1] == "Autosave failed"]
    saved = sidecar.find_sidecar(image)
    assert saved is not None and str(saved).startswith(str(isolated / "xdg"))
    assert (image.parent / ".petseg").read_bytes() == b"someone's file"
    window.editor.close_image()
    window.open_path(image)
    assert len(window.editor.doc.objects) == 1


def test_a_symlinked_petseg_is_never_followed(qtbot, window, photo, dialogs, isolated, tmp_path):
    image, w, h = photo
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / f"{image.name}.json").write_bytes(edit("objects", [])(w, h))
    (image.parent / ".petseg").symlink_to(elsewhere, target_is_directory=True)
    window.open_path(image)
    brush_and_accept(window)
    assert window.editor.flush()
    assert sorted(p.name for p in elsewhere.iterdir()) == [f"{image.name}.json"]  # nothing written there
    assert str(sidecar.find_sidecar(image)).startswith(str(isolated / "xdg"))
    assert not dialogs


def test_a_symlinked_sidecar_is_set_aside_not_written_through(qtbot, window, photo, dialogs, tmp_path):
    image, w, h = photo
    target = tmp_path / "target.json"
    target.write_bytes(json.dumps(valid(w, h)).encode())
    before = target.read_bytes()
    link = sidecar_of(image)
    link.parent.mkdir()
    link.symlink_to(target)
    window.open_path(image)
    assert "symbolic link" in one_message(dialogs, RESTORE_TITLE)
    (kept,) = link.parent.glob(f"{link.name}.bad-*")
    assert kept.is_symlink() and window.editor.doc.objects == []
    brush_and_accept(window)
    assert window.editor.flush()
    assert target.read_bytes() == before and not link.is_symlink()


# ---------------------------------------------------------------------------- a replaced photo
def test_a_photo_replaced_by_another_of_the_same_size_does_not_get_the_old_objects(qtbot, window, photo, dialogs):
    image, w, h = photo
    window.open_path(image)
    brush_and_accept(window)
    assert window.editor.flush()
    window.editor.close_image()
    saved = sidecar_of(image).read_bytes()
    assert json.loads(saved)["photo"]["bytes"] == image.stat().st_size
    with Image.open(image) as im:
        im.convert("L").convert("RGB").save(image, quality=60)  # another photo, same size
    window.open_path(image)
    message = one_message(dialogs, RESTORE_TITLE)
    assert "photo changed" in message
    assert window.editor.doc.objects == []
    (kept,) = sidecar_of(image).parent.glob("*.bad-*")
    assert kept.read_bytes() == saved and kept.name in message


def test_a_copied_folder_and_an_old_sidecar_without_fingerprint_still_load(qtbot, window, photo, tmp_path):
    image, w, h = photo
    sidecar_of(image).parent.mkdir()
    sidecar_of(image).write_bytes(json.dumps(valid(w, h)).encode())  # no "photo": written before fingerprints
    assert len(load_document(image, (h, w)).objects) == 1
    window.open_path(image)
    window.editor.flush(force=True)  # now with the fingerprint
    window.close()
    copy = tmp_path / "copy"
    os.makedirs(copy / ".petseg")
    (copy / image.name).write_bytes(image.read_bytes())
    (copy / ".petseg" / sidecar_of(image).name).write_bytes(sidecar_of(image).read_bytes())
    assert "photo" in json.loads(sidecar_of(image).read_text())
    assert len(load_document(copy / image.name, (h, w)).objects) == 1


# ---------------------------------------------------------------------------- the exception hook
def open_with_a_brushed_mask(qtbot, window: MainWindow, image: Path) -> None:
    window.open_path(image)
    window.editor.brush([(5, 5), (40, 30)], 6, erase=False)
    assert not sidecar_of(image).exists()  # the debounced autosave has not run yet


def check_reported(qtbot, handler: crash.CrashHandler, window: MainWindow, image: Path, what: str) -> None:
    qtbot.waitUntil(lambda: handler.dialog is not None and handler.dialog.isVisible(), timeout=5000)
    text = handler.dialog.text()
    assert "\n" not in text and what in text and "autosaved" in text
    assert "Traceback" in handler.dialog.detailedText()
    assert json.loads(sidecar_of(image).read_text())["current"]["mask"] is not None  # autosaved
    assert window.isVisible()
    handler.dialog.done(QMessageBox.Ok)


@pytest.mark.qt_no_exception_capture
def test_an_exception_in_a_slot_autosaves_shows_one_line_and_the_app_goes_on(qtbot, window, photo):
    image, w, h = photo
    open_with_a_brushed_mask(qtbot, window, image)

    def broken(class_id=None):
        raise RuntimeError("accept broke\nwith a second line")

    window.editor.accept = broken
    with crash.installed(window) as handler:
        QTimer.singleShot(0, window.accept_object)  # a slot called by Qt, as a key press would
        check_reported(qtbot, handler, window, image, "RuntimeError: accept broke with a second line")
        del window.editor.accept
        window.accept_object()  # the app still works
        assert len(window.editor.doc.objects) == 1


@pytest.mark.qt_no_exception_capture
def test_an_exception_in_another_thread_is_reported_in_the_gui_thread(qtbot, window, photo):
    image, w, h = photo
    open_with_a_brushed_mask(qtbot, window, image)

    def worker_callback() -> None:
        raise ValueError("worker broke")

    with crash.installed(window) as handler:
        thread = threading.Thread(target=worker_callback)
        thread.start()
        thread.join()
        check_reported(qtbot, handler, window, image, "ValueError: worker broke")
