"""The real main window, offscreen, with the tiny random-init checkpoints and real pet photos
(driven through tests/app_driver.py: real mouse events on the canvas, waits on the worker)."""

from __future__ import annotations

import configparser
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from PyQt5.QtCore import QEvent, QPoint, QPointF, QSettings, Qt
from PyQt5.QtGui import QMouseEvent
from PyQt5.QtTest import QTest
from PyQt5.QtWidgets import QApplication

from models.classes import CAT, DOG, PROMPT, SEMANTIC
from models.version import __version__
from petseg_desktop.crash import CrashHandler
from petseg_desktop.main_window import MainWindow
from petseg_desktop.sidecar import find_sidecar

from app_driver import WAIT, click, drag, key, make_window, open_and_wait, shown_alpha, usable_threshold, view_pos, wait_mask


# ---------------------------------------------------------------------------- the main workflow
def test_prompt_accept_undo_save_reopen(qtbot, window, photos, dialogs, tmp_path):
    w = window
    image = sorted(photos.iterdir())[0]
    open_and_wait(qtbot, w, image)
    w.overlap_action.trigger()  # objects overlap on purpose here (paint order)
    h, w_px = w.editor.doc.shape
    assert w.canvas._image_item.pixmap().width() == w_px  # full resolution
    assert str(w_px) in w.size_label.text() and "cpu" in w.device_label.text()
    runs = w.worker.runs["predict"]

    click(w, w_px // 2, h // 2)  # positive
    wait_mask(qtbot, w)
    assert w.worker.runs["predict"] == runs + 1
    assert w.editor.doc.prompts.points == [(w_px // 2, h // 2, True)]
    assert w.editor.doc.probabilities.shape == (h, w_px)
    assert "ms" in w.latency_label.text()

    click(w, 5, 5, Qt.RightButton)  # negative
    wait_mask(qtbot, w)
    click(w, w_px - 6, 5, Qt.LeftButton, Qt.ShiftModifier)  # negative too
    wait_mask(qtbot, w)
    points = w.editor.doc.prompts.points
    assert [p[2] for p in points] == [True, False, False]
    assert points[1] == (5, 5, False)
    dots = [i for i in w.canvas._prompt_items if i.rect().width() < 20]
    assert len(dots) == 3

    drag(w, (w_px // 6, h // 6), (5 * w_px // 6, 5 * h // 6))
    wait_mask(qtbot, w)
    x0, y0, x1, y1 = w.editor.doc.prompts.box
    assert abs(x0 - w_px // 6) <= 1 and abs(y1 - 5 * h // 6) <= 2
    assert w.worker.runs["predict"] == runs + 4

    # the threshold re-thresholds the last probabilities; no model run
    probs = w.editor.doc.probabilities
    assert not shown_alpha(w).any()  # random-init model: everything below 0.5
    value = usable_threshold(w)
    w.controls.threshold.setValue(value)
    expected = probs >= value / 100
    assert 0 < expected.sum() < expected.size
    assert np.array_equal(w.editor.current_mask(), expected)
    assert np.array_equal(shown_alpha(w), expected)
    assert w.worker.runs["predict"] == runs + 4

    # accept: the semantic model (random init: all dog here) suggests the class
    key(qtbot, w, "Return")
    doc = w.editor.doc
    assert len(doc.objects) == 1 and doc.prompts.is_empty() and doc.probabilities is None
    obj = doc.objects[0]
    assert np.array_equal(obj.mask, expected)
    assert obj.class_id == DOG
    assert len(obj.prompts.points) == 3 and obj.prompts.box is not None
    assert w.objects.list.count() == 1

    key(qtbot, w, "C")
    assert w.editor.doc.objects[0].class_id == CAT
    key(qtbot, w, "Ctrl+Z")  # class change undone
    assert w.editor.doc.objects[0].class_id == DOG
    key(qtbot, w, "Ctrl+Z")  # acceptance undone: prompts and mask are back
    assert not w.editor.doc.objects and len(w.editor.doc.prompts.points) == 3
    assert np.array_equal(w.editor.current_mask(), expected)
    key(qtbot, w, "Ctrl+Z")  # the box undone: earlier mask, no model run needed for it?
    assert w.editor.doc.prompts.box is None
    wait_mask(qtbot, w)
    key(qtbot, w, "Ctrl+Shift+Z")  # box again, from the stored result
    assert w.editor.doc.prompts.box is not None and not w.editor.busy()
    key(qtbot, w, "Ctrl+Y")  # acceptance again
    key(qtbot, w, "Ctrl+Shift+Z")  # class change again
    assert w.editor.doc.objects[0].class_id == CAT
    key(qtbot, w, "C")
    assert w.editor.doc.objects[0].class_id == DOG

    written = w.save_mask()
    saved = np.array(Image.open(image.with_name(f"{image.stem}_mask.png")))
    assert written[0] == image.with_name(f"{image.stem}_mask.png")
    assert saved.shape == (h, w_px) and saved.dtype == np.uint8
    assert set(np.unique(saved)) <= {0, 1, 2}
    assert np.all(saved[expected] == DOG) and np.all(saved[~expected] == 0)
    assert not [p for p in photos.iterdir() if p.name.endswith(".tmp")]
    assert w.files.state(w.files.row_of(image)) == "annotated"

    # a few more prompts (not accepted) are kept across close/reopen too
    click(w, w_px // 3, h // 3)
    wait_mask(qtbot, w)
    w.close()
    sidecar = find_sidecar(image)
    assert sidecar == photos / ".petseg" / f"{image.name}.json"
    data = json.loads(sidecar.read_text())
    assert data["objects"][0]["class"] == "dog"

    w2 = make_window(qtbot, tmp_path)
    open_and_wait(qtbot, w2, image)
    doc2 = w2.editor.doc
    assert len(doc2.objects) == 1 and doc2.objects[0].class_id == DOG
    assert np.array_equal(doc2.objects[0].mask, expected)
    assert doc2.objects[0].prompts == obj.prompts
    assert doc2.prompts.points == [(w_px // 3, h // 3, True)]
    assert w2.files.state(w2.files.row_of(image)) == "annotated"
    assert not dialogs
    w2.close()


def test_coalescing_shows_only_the_latest(qtbot, window, photos, tiny_prompt_checkpoint):
    from models.predictor import load_predictor
    from models.images import load_rgb

    w = window
    image = sorted(photos.iterdir())[1]
    open_and_wait(qtbot, w, image)
    h, w_px = w.editor.doc.shape
    runs = w.worker.runs["predict"]
    clicks = [(int(20 + i * (w_px - 40) / 24), int(h / 2 + (i % 5) * 7), i % 3 != 1) for i in range(25)]
    for x, y, positive in clicks:  # no event processing in between: a burst of requests
        w.editor.add_point(x, y, positive)
    wait_mask(qtbot, w)
    ran = w.worker.runs["predict"] - runs
    assert 1 <= ran < len(clicks)
    assert w.editor.stack.count() == len(clicks)

    predictor = load_predictor(tiny_prompt_checkpoint, "cpu")
    predictor.set_image(load_rgb(image))
    expected = predictor.predict(points=clicks, box=None, prev_mask=None)
    np.testing.assert_allclose(w.editor.doc.probabilities, expected, atol=1e-5)


def test_folder_navigation_and_annotated_state(qtbot, window, photos):
    w = window
    w.open_path(photos)
    names = sorted((p.name for p in photos.iterdir() if p.is_file()), key=str.lower)  # as file managers sort
    assert (photos / ".petseg" / ".lock").is_file()  # this window writes the folder's annotations
    assert [p.name for p in w.files.paths()] == names
    assert w.image_path.name == names[0]
    assert all(w.files.state(r) == "todo" for r in range(w.files.count()))
    qtbot.waitUntil(lambda: w.editor.semantic_labels is not None, timeout=WAIT)

    key(qtbot, w, "B")  # annotate the first image with the brush
    assert w.canvas.brush_mode == "brush"
    drag(w, (30, 30), (120, 90))
    assert w.editor.current_mask()[60, 75]
    key(qtbot, w, "Return")
    key(qtbot, w, "B")
    assert w.canvas.brush_mode is None
    assert w.editor.doc.objects[0].source == "brush"

    key(qtbot, w, "D")
    qtbot.waitUntil(lambda: w.files.state(0) == "annotated", timeout=WAIT)  # autosaved on leaving
    assert w.image_path.name == names[1]
    key(qtbot, w, "A")
    assert w.image_path.name == names[0] and len(w.editor.doc.objects) == 1
    key(qtbot, w, "Shift+D")
    assert w.image_path.name == names[1]
    key(qtbot, w, "D")
    key(qtbot, w, "D")
    key(qtbot, w, "D")  # stays on the last
    assert w.image_path.name == names[-1]
    key(qtbot, w, "Shift+D")  # wraps round, skipping the annotated first image
    assert w.image_path.name == names[1]
    recent = w.settings.value("recentFolders")
    assert str(photos) in ([recent] if isinstance(recent, str) else recent)


def test_reedit_delete_auto_segment_and_escape(qtbot, window, photos):
    w = window
    open_and_wait(qtbot, w, sorted(photos.iterdir())[2])
    h, w_px = w.editor.doc.shape
    # A small object, boxed in a corner: the random-init models' pets are not mostly taken by it.
    drag(w, (w_px // 20, h // 20), (w_px // 4, h // 4))
    wait_mask(qtbot, w)
    w.controls.threshold.setValue(usable_threshold(w))
    key(qtbot, w, "Return")
    first = w.editor.doc.objects[0]

    item = w.objects.list.item(0)
    rect = w.objects.list.visualItemRect(item)
    QTest.mouseClick(w.objects.list.viewport(), Qt.LeftButton, Qt.NoModifier, rect.center())
    QTest.mouseDClick(w.objects.list.viewport(), Qt.LeftButton, Qt.NoModifier, rect.center())
    doc = w.editor.doc
    assert doc.editing == 0 and doc.prompts == first.prompts
    assert np.array_equal(w.editor.current_mask(), first.mask)
    assert not w.editor.shown_labels().any()  # shown as the current mask, not as an object
    key(qtbot, w, "Esc")  # cancel the re-edit: the object is unchanged
    assert doc.editing is None and len(doc.objects) == 1 and doc.prompts.is_empty()

    key(qtbot, w, "Ctrl+Shift+A")  # one object per pet, refined by the prompt model, below the existing one
    qtbot.waitUntil(lambda: not w.editor.auto_busy(), timeout=WAIT)
    added = len(doc.objects) - 1
    assert added >= 1 and w.editor.stack.undoText() == "Auto-segment"
    assert doc.objects[-1] is first and all(o.source == "auto" for o in doc.objects[:-1])
    for i, obj in enumerate(doc.objects[:-1]):  # no auto object takes pixels of another object
        assert not any((obj.mask & other.mask).any() for other in doc.objects[i + 1 :])
    w.objects.select(0)
    key(qtbot, w, "Del")
    assert len(doc.objects) == added and doc.objects[-1] is first
    key(qtbot, w, "Ctrl+Z")
    key(qtbot, w, "Ctrl+Z")  # the whole auto-segment is one undo step
    assert doc.objects == [first]

    # Esc during a box drag cancels the box only
    click(w, 10, 10)
    wait_mask(qtbot, w)
    viewport = w.canvas.viewport()
    a, b = view_pos(w, 20, 20), view_pos(w, 200, 150)
    QApplication.sendEvent(viewport, QMouseEvent(QEvent.MouseButtonPress, a, Qt.LeftButton, Qt.LeftButton, Qt.NoModifier))
    QApplication.sendEvent(viewport, QMouseEvent(QEvent.MouseMove, b, Qt.NoButton, Qt.LeftButton, Qt.NoModifier))
    assert w.canvas._rubber.isVisible()  # a box is being dragged
    key(qtbot, w, "Esc")
    QApplication.sendEvent(viewport, QMouseEvent(QEvent.MouseButtonRelease, b, Qt.LeftButton, Qt.NoButton, Qt.NoModifier))
    assert doc.prompts.box is None and len(doc.prompts.points) == 1
    key(qtbot, w, "Esc")  # no box: clears the prompts
    assert doc.prompts.is_empty()


def test_new_object_leaves_accepted_ones_unless_overlap_allowed(qtbot, window, photos):
    w = window
    open_and_wait(qtbot, w, sorted(photos.iterdir())[1])
    h, w_px = w.editor.doc.shape
    messages = []
    w.editor.message.connect(messages.append)
    click(w, w_px // 2, h // 2)
    wait_mask(qtbot, w)
    w.controls.threshold.setValue(usable_threshold(w))
    key(qtbot, w, "Return")
    first = w.editor.doc.objects[0].mask
    assert first.any() and not first.all()

    click(w, w_px // 2, h // 2)  # object 2 over object 1: the model's mask stops at object 1
    wait_mask(qtbot, w)
    assert (w.editor.doc.probabilities >= w.editor.threshold)[first].any()  # the model did take them
    assert not (w.editor.current_mask() & first).any()
    assert not (shown_alpha(w) & first).any()
    assert sum("accepted objects left out" in m for m in messages) == 1

    assert not w.overlap_action.isChecked()
    w.overlap_action.trigger()  # Edit > New objects may overlap accepted ones
    assert w.settings.value("edit/allowOverlap") in (True, "true")
    assert (w.editor.current_mask() & first).any()
    w.overlap_action.trigger()
    assert not (w.editor.current_mask() & first).any()

    ys, xs = np.nonzero(first)  # a brush stroke over object 1 takes its pixels: an explicit choice
    y, x = int(np.median(ys)), int(xs[ys == int(np.median(ys))].mean())
    key(qtbot, w, "B")
    w.controls.brush.setValue(4)
    drag(w, (x - 3, y), (x + 3, y))
    key(qtbot, w, "B")
    assert w.editor.current_mask()[y, x] and first[y, x]
    key(qtbot, w, "Return")
    second = w.editor.doc.objects[1].mask
    assert second[y, x] and (second & first).sum() == (w.editor.doc.objects[1].strokes.painted & first).sum()


def test_view_controls(qtbot, window, photos):
    w = window
    open_and_wait(qtbot, w, sorted(photos.iterdir())[0])
    fitted = w.canvas.zoom()
    from PyQt5.QtGui import QWheelEvent

    h, w_px = w.editor.doc.shape
    pos = view_pos(w, w_px // 3, h // 3)
    for step in range(2):  # the first notch makes the image overflow the view both ways
        under = w.canvas.mapToScene(pos)
        event = QWheelEvent(QPointF(pos), QPointF(w.canvas.viewport().mapToGlobal(pos)), QPoint(0, 0),
                            QPoint(0, 360), Qt.NoButton, Qt.NoModifier, Qt.NoScrollPhase, False)
        QApplication.sendEvent(w.canvas.viewport(), event)
    assert w.canvas.zoom() > fitted * 2.5
    after = w.canvas.mapToScene(pos)
    assert abs(after.x() - under.x()) < 3 and abs(after.y() - under.y()) < 3  # zoomed around the cursor
    key(qtbot, w, "F")
    assert abs(w.canvas.zoom() - fitted) < 1e-6
    key(qtbot, w, "O")
    assert not w.canvas._current_item.isVisible()
    key(qtbot, w, "O")
    assert w.canvas._current_item.isVisible()
    w.controls.opacity.setValue(80)
    assert abs(w.canvas._objects_item.opacity() - 0.8) < 1e-6
    dialog = w.show_shortcuts()
    texts = [dialog.table.item(r, 1).text() for r in range(dialog.table.rowCount())]
    assert "Accept object" in texts and "Next unannotated image" in texts
    dialog.close()
    about = w.show_about()
    assert "tiny-prompt" in about.browser.toPlainText() and "0." in about.browser.toPlainText()
    about.close()


# ---------------------------------------------------------------------------- errors
def test_corrupt_image_gives_a_dialog_and_the_app_goes_on(qtbot, window, photos, dialogs):
    w = window
    (photos / "0000_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    w.open_path(photos)
    assert dialogs and dialogs[-1][1] == "Cannot open image" and "0000_broken.jpg" in dialogs[-1][2]
    assert w.files.state(0) == "failed" and w.editor.doc is None
    assert w.canvas.hint().startswith("This photo cannot be read")  # not "Open a folder": one is open
    key(qtbot, w, "D")
    qtbot.waitUntil(lambda: w.editor.doc is not None, timeout=WAIT)
    assert w.image_path == sorted(photos.glob("*.jpg"), key=lambda p: p.name.lower())[1]
    click(w, 30, 30)
    wait_mask(qtbot, w)
    assert len(dialogs) == 1


def test_a_folder_listed_again_keeps_what_it_knew(qtbot, window, photos, dialogs):
    """A photo added while the folder is open (the watcher lists it again): it appears as todo, a
    photo that could not be opened still says so, and the open photo stays selected."""
    w = window
    (photos / "0000_broken.jpg").write_bytes(b"not a jpeg")
    w.open_path(photos)
    key(qtbot, w, "D")
    qtbot.waitUntil(lambda: w.editor.doc is not None, timeout=WAIT)
    opened = w.image_path
    added = photos / "zzzz_new.jpg"
    shutil.copy(opened, added)
    w.rescan_folder()
    assert w.files.state(w.files.row_of(photos / "0000_broken.jpg")) == "failed"
    assert w.files.state(w.files.row_of(added)) == "todo"
    assert w.files.currentRow() == w.files.row_of(opened) and "1 photo(s) added" in w.statusBar().currentMessage()


def test_missing_model_gives_a_dialog(qtbot, isolated, dialogs, photos):
    w = make_window(qtbot, isolated, wait_models=False)
    open_and_wait_no_model = sorted(photos.iterdir())[0]
    w.open_path(open_and_wait_no_model)
    click(w, 40, 40)
    assert dialogs and dialogs[-1][1] == "No prompt model"
    assert w.editor.doc.prompts.is_empty()
    key(qtbot, w, "Ctrl+Shift+A")
    assert dialogs[-1][1] == "Auto-segment"
    actions = w.models.menus[PROMPT].actions()
    assert actions and not actions[0].isEnabled()
    w.close()


def test_model_menu_lists_unusable_checkpoints(qtbot, with_models, dialogs, tiny_prompt_checkpoint):
    (tiny_prompt_checkpoint.parent / "broken.safetensors").write_bytes(b"junk")
    w = make_window(qtbot, with_models)
    try:
        texts = {a.text(): a for a in w.models.menus[PROMPT].actions()}
        broken = [a for t, a in texts.items() if t.startswith("broken.safetensors")]
        assert broken and not broken[0].isEnabled() and broken[0].toolTip()
        usable = [a for t, a in texts.items() if t.startswith("tiny-prompt")]
        assert usable[0].isEnabled() and usable[0].isChecked()
    finally:
        w.close()
        (tiny_prompt_checkpoint.parent / "broken.safetensors").unlink()


def test_training_runs_get_a_submenu_with_names_that_tell_them_apart(qtbot, with_models, dialogs,
                                                                    tiny_semantic_checkpoint):
    """Studies nest runs of the same name: each is named by its path under the runs folder, and
    the runs sit in their own submenu below the kept models, where choosing one loads it."""
    for study in ("study-a", "study-b"):
        run = with_models / "runs" / study / "finetune-Persian"
        run.mkdir(parents=True)
        shutil.copy(tiny_semantic_checkpoint, run / "best.safetensors")
    w = make_window(qtbot, with_models)
    try:
        menu = w.models.menus[SEMANTIC]
        top = [a for a in menu.actions() if a.menu() is None]
        assert top and all("[training]" not in a.text() for a in top)
        runs = [a.menu() for a in menu.actions() if a.menu() is not None]
        assert len(runs) == 1 and runs[0].title() == "Training runs (2)"
        names = [a.text().split(" [")[0] for a in runs[0].actions()]
        assert names == ["study-a/finetune-Persian/best.safetensors", "study-b/finetune-Persian/best.safetensors"]
        runs[0].actions()[1].trigger()
        wanted = str(with_models / "runs" / "study-b" / "finetune-Persian" / "best.safetensors")
        qtbot.waitUntil(lambda: w.models.loaded_info(SEMANTIC)[0] == wanted, timeout=WAIT)
        assert runs[0].actions()[1].isChecked() and not top[0].isChecked()
    finally:
        w.close()


# ---------------------------------------------------------------------------- batch export
def test_batch_export_dialog_with_cancel(qtbot, window, tmp_path, pets_root):
    source = tmp_path / "many"
    source.mkdir()
    for path in sorted((pets_root / "Test" / "color").glob("*.jpg"))[:40]:
        os.symlink(path, source / path.name)
    out = tmp_path / "out"
    dialog = window.open_export_dialog()
    dialog.input_edit.setText(str(source))
    dialog.output_edit.setText(str(out))
    cancelled = []

    def cancel_on_first(done, total, path):
        if not cancelled:
            cancelled.append(done)
            dialog.cancel()

    dialog.progressed.connect(cancel_on_first)
    assert dialog.start()
    qtbot.waitUntil(lambda: dialog.summary is not None, timeout=60000)
    summary = dialog.summary
    assert summary.cancelled and 1 <= summary.written < 40
    written = sorted(out.iterdir())
    assert len(written) == summary.written
    assert not [p for p in written if p.suffix != ".png" or p.name.startswith(".")]
    first = written[0]
    mask = np.array(Image.open(first))
    photo = Image.open(source / f"{first.stem}.jpg")
    assert mask.shape == (photo.height, photo.width) and set(np.unique(mask)) <= {0, 1, 2}
    assert "cancelled" in dialog.log.toPlainText()

    # a second run to the end, with a corrupt photo listed among the failures
    small = tmp_path / "small"
    small.mkdir()
    for path in sorted(source.iterdir())[:3]:
        os.symlink(os.readlink(path), small / path.name)
    (small / "zz_corrupt.jpg").write_bytes(b"broken")
    dialog.input_edit.setText(str(small))
    dialog.output_edit.setText(str(tmp_path / "out2"))
    dialog.format_combo.setCurrentText("color")
    assert dialog.start()
    qtbot.waitUntil(lambda: dialog.summary is not None, timeout=60000)
    summary = dialog.summary
    assert summary.written == 3 and len(summary.failed) == 1 and not summary.cancelled
    assert "zz_corrupt.jpg" in dialog.log.toPlainText()
    assert "images/s" in dialog.rate_label.text()
    assert sorted(p.name for p in (tmp_path / "out2").iterdir()) == sorted(f"{p.stem}.png" for p in sorted(source.iterdir())[:3])
    dialog.close()


# ---------------------------------------------------------------------------- tools, view, persistence
def test_brush_eraser_pan_and_undo(qtbot, window, photos):
    w = window
    open_and_wait(qtbot, w, sorted(photos.iterdir())[3])
    assert w.tool_label.isHidden()
    key(qtbot, w, "B")
    assert w.tool_label.isVisible() and w.tool_label.text() == "Brush on (B: back to prompts)"  # says so for as long as it is on
    w.controls.brush.setValue(6)
    drag(w, (40, 40), (140, 40))
    mask = w.editor.current_mask()
    assert mask[40, 90] and mask[45, 40] and not mask[60, 90]
    key(qtbot, w, "E")  # the eraser replaces the brush
    assert w.canvas.brush_mode == "eraser" and not w.brush_action.isChecked()
    assert w.tool_label.text() == "Eraser on (E: back to prompts)"
    drag(w, (90, 30), (90, 50))
    assert not w.editor.current_mask()[40, 90] and w.editor.current_mask()[40, 50]
    key(qtbot, w, "Ctrl+Z")
    assert w.editor.current_mask()[40, 90]
    key(qtbot, w, "Ctrl+Z")
    assert w.editor.current_mask() is None
    key(qtbot, w, "E")
    assert w.canvas.brush_mode is None and w.tool_label.isHidden()

    w.canvas.zoom_by(4)  # middle-drag pans; it never adds a prompt
    before = w.canvas.mapToScene(w.canvas.viewport().rect().center())
    drag(w, (200, 200), (150, 150), Qt.MiddleButton)
    after = w.canvas.mapToScene(w.canvas.viewport().rect().center())
    assert after.x() > before.x() + 20 and after.y() > before.y() + 20
    assert w.editor.doc.prompts.is_empty()


def test_a_folder_reopens_at_the_photo_last_open(qtbot, with_models, photos):
    w = make_window(qtbot, with_models)
    w.open_path(photos)
    assert w._row == 0
    w.open_row(2)
    third = w.image_path
    w.close()
    w2 = make_window(qtbot, with_models)  # the same settings file: a restart
    w2.open_path(photos)
    assert w2.image_path == third and w2.files.currentRow() == 2
    w2.close()


def test_window_state_and_models_persist(qtbot, with_models, dialogs, tmp_path, tiny_prompt_checkpoint):
    w = make_window(qtbot, tmp_path)
    w.resize(900, 650)
    w.colour_action.trigger()
    w.close()
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.IniFormat)
    assert settings.value("model/prompt") == str(tiny_prompt_checkpoint)
    w2 = make_window(qtbot, tmp_path, size=None)  # geometry restored from the settings
    assert (w2.width(), w2.height()) == (900, 650) and w2.colour_action.isChecked()
    w2.close()


def test_colour_png_and_output_folder(qtbot, window, photos, tmp_path):
    w = window
    image = sorted(photos.iterdir())[0]
    open_and_wait(qtbot, w, image)
    key(qtbot, w, "B")
    drag(w, (10, 10), (60, 10))
    key(qtbot, w, "Return")
    w.settings.setValue("output/folder", str(tmp_path / "masks"))
    w.colour_action.setChecked(True)
    index_png, colour_png = w.save_mask()
    assert index_png == tmp_path / "masks" / f"{image.stem}_mask.png"
    saved = np.array(Image.open(index_png))
    assert saved[10, 30] == w.editor.doc.objects[0].class_id and saved[100, 100] == 0
    colour = Image.open(colour_png)
    assert colour.mode == "P" and np.array_equal(np.array(colour), saved)
    assert not image.with_name(f"{image.stem}_mask.png").exists()


def test_petseg_entry_point_opens_a_photo(qtbot, with_models, dialogs, photos, tmp_path):
    from PyQt5.QtCore import QTimer

    from petseg_desktop.app import main

    QSettings.setPath(QSettings.IniFormat, QSettings.UserScope, str(tmp_path / "user-settings"))
    image = sorted(photos.iterdir())[0]
    seen = {}

    def check():
        for widget in QApplication.topLevelWidgets():
            if isinstance(widget, MainWindow) and widget.editor.doc is not None:
                seen["path"] = widget.image_path
                seen["hook"] = sys.excepthook
                widget.close()
                return
        QTimer.singleShot(50, check)

    QTimer.singleShot(0, check)
    assert main([str(image), "--device", "cpu"]) == 0
    assert seen["path"] == image
    assert isinstance(seen["hook"], CrashHandler)  # an exception in a slot no longer aborts the app
    assert (tmp_path / "user-settings" / "PetSeg" / "petseg.ini").is_file()


def test_unwritable_output_folder_gives_a_dialog(qtbot, window, photos, tmp_path, dialogs):
    w = window
    open_and_wait(qtbot, w, sorted(photos.iterdir())[0])
    key(qtbot, w, "B")
    drag(w, (10, 10), (60, 10))
    key(qtbot, w, "Return")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    w.settings.setValue("output/folder", str(blocker / "masks"))
    assert w.save_mask() == []
    assert dialogs[-1][1] == "Cannot save the mask"
    w.settings.setValue("output/folder", "")
    assert len(w.save_mask()) == 1  # and the app goes on


def test_undo_after_a_late_result_needs_no_model_run(qtbot, window, photos):
    import time

    w = window
    open_and_wait(qtbot, w, sorted(photos.iterdir())[0])
    runs = w.worker.runs["predict"]
    w.editor.add_point(50, 60, True)
    deadline = time.monotonic() + 30
    while w.worker.runs["predict"] == runs and time.monotonic() < deadline:  # the worker ran it, but
        pass  # its result is still queued for the GUI thread: push the next prompt before it lands
    w.editor.add_point(80, 90, False)
    wait_mask(qtbot, w)
    assert w.worker.runs["predict"] == runs + 2
    key(qtbot, w, "Ctrl+Z")
    assert not w.editor.busy() and w.editor.doc.prompts.points == [(50, 60, True)]
    assert w.worker.runs["predict"] == runs + 2


def test_startup_check_opens_the_window_with_the_bundled_models_and_exits(tmp_path) -> None:
    """`petseg --startup-check` (what the packaging smoke test runs) in a fresh user profile."""
    import subprocess
    import sys

    env = {**os.environ, "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "config"),
           "XDG_DATA_HOME": str(tmp_path / "data"), "QT_QPA_PLATFORM": "offscreen"}
    env.pop("PETSEG_CHECKPOINTS", None)
    run = subprocess.run([sys.executable, "-m", "petseg_desktop.app", "--startup-check"], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr[-2000:]
    assert "petseg-prompt-effnet256.safetensors" in run.stdout and "petseg-unet-effnet256.safetensors" in run.stdout
    assert run.stdout.rstrip().endswith("ok")
    setup = configparser.ConfigParser()
    setup.read(Path(__file__).resolve().parent.parent / "setup.cfg")
    assert __version__ == setup["metadata"]["version"]  # read from the installed distribution
    assert f"petseg {__version__} startup check" in run.stdout


def test_a_tiny_saved_window_size_is_not_restored(qtbot, isolated, dialogs) -> None:
    first = make_window(qtbot, isolated, wait_models=False, size=(420, 300))
    first.close()  # saves its geometry
    second = make_window(qtbot, isolated, wait_models=False, size=None)
    assert second.width() >= 800 and second.height() >= 560
    second.close()


def list_row_click(qtbot, w: MainWindow, index: int, double: bool = False) -> None:
    """Click (or double-click) object ``index``'s row in the Objects list, as the mouse would."""
    rect = w.objects.list.visualItemRect(w.objects.list.item(w.objects.index_of(index)))
    QTest.mouseClick(w.objects.list.viewport(), Qt.LeftButton, Qt.NoModifier, rect.center())
    if double:
        QTest.mouseDClick(w.objects.list.viewport(), Qt.LeftButton, Qt.NoModifier, rect.center())


def accept_click(qtbot, w: MainWindow, x: int, y: int) -> None:
    """Click the pet at (x, y), wait for the mask, and press Enter."""
    click(w, x, y)
    wait_mask(qtbot, w)
    QTest.keyClick(w.canvas.viewport(), Qt.Key_Return)


def test_strokes_survive_clicks_and_reorder_is_saved(qtbot, window, photos, dialogs, tmp_path):
    w = window
    image = sorted(photos.iterdir())[0]
    open_and_wait(qtbot, w, image)
    w.overlap_action.trigger()  # objects overlap on purpose here (paint order)
    doc = w.editor.doc
    h, w_px = doc.shape
    click(w, w_px // 3, h // 2)
    wait_mask(qtbot, w)
    w.controls.threshold.setValue(usable_threshold(w))
    QTest.keyClick(w.canvas.viewport(), Qt.Key_Return)
    accept_click(qtbot, w, 2 * w_px // 3, h // 2)
    assert len(doc.objects) == 2
    if doc.objects[1].class_id == doc.objects[0].class_id:
        QTest.keyClick(w.canvas.viewport(), Qt.Key_C)  # two classes: the paint order shows in the mask
    assert doc.objects[1].class_id != doc.objects[0].class_id
    assert w.objects.list.item(0).text().startswith("2.")  # top row = front = painted last

    list_row_click(qtbot, w, 1, double=True)  # re-edit object 2
    assert doc.editing == 1
    QTest.keyClick(w.canvas.viewport(), Qt.Key_E)
    w.controls.brush.setValue(10)
    drag(w, (w_px // 4, h // 3), (3 * w_px // 4, h // 3))
    erased = doc.strokes.erased
    assert erased is not None and erased[h // 3, w_px // 2] and not w.editor.current_mask()[erased].any()
    QTest.keyClick(w.canvas.viewport(), Qt.Key_E)  # back to prompts
    click(w, w_px // 2, 2 * h // 3)  # the model re-runs: the erased pixels stay erased
    wait_mask(qtbot, w)
    assert len(doc.prompts.points) == 2 and not w.editor.current_mask()[erased].any()
    assert (doc.probabilities[erased] >= w.editor.threshold).any()  # the model alone would bring them back
    key(qtbot, w, "Ctrl+Z")  # undo steps through the click, then the stroke
    assert len(doc.prompts.points) == 1 and not w.editor.current_mask()[erased].any()
    key(qtbot, w, "Ctrl+Z")
    assert doc.strokes.is_empty()
    key(qtbot, w, "Ctrl+Shift+Z")
    key(qtbot, w, "Ctrl+Shift+Z")
    wait_mask(qtbot, w)
    assert len(doc.prompts.points) == 2 and not w.editor.current_mask()[erased].any()
    QTest.keyClick(w.canvas.viewport(), Qt.Key_Return)
    assert doc.editing is None and not doc.objects[1].mask[erased].any()
    assert np.array_equal(doc.objects[1].strokes.erased, erased)

    first, second = doc.objects
    list_row_click(qtbot, w, 0)  # object 1 to the front
    QTest.keyClick(w.objects.list, Qt.Key_Up, Qt.ControlModifier)
    assert doc.objects == [second, first] and w.objects.selected() == 1
    key(qtbot, w, "Ctrl+Z")
    assert doc.objects == [first, second]
    key(qtbot, w, "Ctrl+Shift+Z")
    assert doc.objects == [second, first]
    shown = w.editor.shown_labels()  # what refresh hands the canvas
    overlap = first.mask & second.mask
    assert overlap.any() and np.all(shown[overlap] == first.class_id)

    key(qtbot, w, "Ctrl+S")
    saved = np.array(Image.open(image.with_name(f"{image.stem}_mask.png")))
    assert np.array_equal(saved, shown)
    w.close()

    w2 = make_window(qtbot, tmp_path)
    open_and_wait(qtbot, w2, image)
    doc2 = w2.editor.doc
    assert [o.class_id for o in doc2.objects] == [second.class_id, first.class_id]
    assert all(np.array_equal(a.mask, b.mask) for a, b in zip(doc2.objects, [second, first]))
    assert np.array_equal(doc2.objects[0].strokes.erased, erased) and doc2.objects[0].prompts == second.prompts
    assert np.array_equal(w2.editor.shown_labels(), saved)
    list_row_click(qtbot, w2, 0, double=True)  # re-edit brings the strokes back
    assert np.array_equal(w2.editor.doc.strokes.erased, erased)
    assert not dialogs
    w2.close()


def test_brush_on_an_accepted_object_re_edits_it(qtbot, window, photos):
    w = window
    open_and_wait(qtbot, w, sorted(photos.iterdir())[1])
    doc = w.editor.doc
    key(qtbot, w, "B")
    drag(w, (20, 20), (80, 20))
    QTest.keyClick(w.canvas.viewport(), Qt.Key_Return)
    key(qtbot, w, "B")  # brush off
    assert doc.editing is None and len(doc.objects) == 1 and not doc.objects[0].mask[60, 50]
    list_row_click(qtbot, w, 0)
    QTest.keyClick(w.canvas.viewport(), Qt.Key_B)  # B on the selected object: it is re-edited
    assert w.canvas.brush_mode == "brush" and doc.editing == 0
    drag(w, (50, 30), (50, 90))
    assert w.editor.current_mask()[60, 50] and w.editor.current_mask()[20, 30]
    QTest.keyClick(w.canvas.viewport(), Qt.Key_Return)
    assert len(doc.objects) == 1 and doc.objects[0].mask[60, 50] and doc.editing is None

    key(qtbot, w, "B")  # off, then the eraser: the same for E
    list_row_click(qtbot, w, 0)
    QTest.keyClick(w.canvas.viewport(), Qt.Key_E)
    assert w.canvas.brush_mode == "eraser" and doc.editing == 0
    drag(w, (40, 60), (60, 60))
    QTest.keyClick(w.canvas.viewport(), Qt.Key_Return)
    assert not doc.objects[0].mask[60, 50] and doc.objects[0].mask[20, 30]
    assert doc.objects[0].strokes.erased[60, 50] and doc.objects[0].strokes.painted[20, 30]
