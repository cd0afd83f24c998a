"""First-time-user rough edges, in the real window: hint, class box, status, elision, refit,
folder watching, model info table, overlay colours (and the outline drawn around the masks)."""

from __future__ import annotations

import shutil

from PyQt5.QtCore import Qt
from PyQt5.QtGui import QColor
from PyQt5.QtWidgets import QApplication

from models.checkpoint import read_metadata
from models.classes import DOG, PROMPT, SEMANTIC
from models.checkpoint import parameter_count
from petseg_desktop.dialogs import ModelInfoDialog
from petseg_desktop.main_window import OPEN_HINT, PROMPT_HINT
from petseg_desktop.overlay_colours import OUTLINE
from app_driver import WAIT, click, key, make_window, open_and_wait, usable_threshold, wait_mask


def fits(w) -> bool:
    """The whole photo is inside the canvas, touching two opposite sides (fit zoom)."""
    rect = w.canvas.mapFromScene(w.canvas.sceneRect()).boundingRect()
    view = w.canvas.viewport().rect()
    inside = view.adjusted(-2, -2, 2, 2).contains(rect)
    return inside and (abs(rect.width() - view.width()) <= 3 or abs(rect.height() - view.height()) <= 3)


def accept_one(qtbot, w) -> None:
    h, w_px = w.editor.doc.shape
    click(w, w_px // 2, h // 2)
    wait_mask(qtbot, w)
    w.controls.threshold.setValue(usable_threshold(w))
    wait_mask(qtbot, w)
    key(qtbot, w, "Return")
    assert w.editor.doc.objects


def test_hint_then_gone_after_a_click(qtbot, window, photos):
    w = window
    assert w.canvas.hint() == OPEN_HINT
    assert w.canvas._hint.testAttribute(Qt.WA_TransparentForMouseEvents)
    open_and_wait(qtbot, w, sorted(photos.iterdir())[0])
    assert w.canvas.hint() == PROMPT_HINT
    h, w_px = w.editor.doc.shape
    click(w, w_px // 2, h // 2)  # the click goes through the caption to the canvas
    wait_mask(qtbot, w)
    assert w.editor.doc.prompts.points and w.canvas.hint() is None
    w.step(1)
    assert w.canvas.hint() is None  # a first-run hint: not again once the user knows


def test_class_box_empty_without_objects_and_timing_reset(qtbot, window, photos):
    w = window
    open_and_wait(qtbot, w, sorted(photos.iterdir())[0])
    combo = w.objects.combo
    assert combo.currentIndex() == -1 and not combo.isEnabled()
    accept_one(qtbot, w)
    assert combo.isEnabled() and combo.currentData() == w.editor.doc.objects[-1].class_id
    assert "mask" in w.latency_label.text()
    w.step(1)  # a photo without objects
    assert w.latency_label.text() == ""  # not the previous photo's timing
    assert combo.currentIndex() == -1 and combo.currentText() == "" and not combo.isEnabled()


def test_elided_texts_have_full_tooltips(qtbot, window, photos):
    w = window
    w.resize(800, 560)
    open_and_wait(qtbot, w, sorted(photos.iterdir())[0])
    long_name = "petseg-prompt-" + "very-long-run-name-" * 8 + "256.safetensors"
    w.model_label.setText(long_name)
    QApplication.processEvents()
    assert w.model_label.is_elided() and "…" in w.model_label.shown_text()
    assert long_name in w.model_label.toolTip()
    assert w.statusBar().width() <= w.width()
    accept_one(qtbot, w)
    item = w.objects.list.item(0)
    assert item.toolTip() == item.text()
    assert w.objects.list.horizontalScrollBarPolicy() == Qt.ScrollBarAlwaysOff  # elided, not scrolled
    dialog = w.open_export_dialog()
    combo = dialog.model_combo
    assert combo.toolTip() == combo.currentText() and combo.itemData(0, Qt.ToolTipRole) == combo.itemText(0)
    dialog.close()


def test_resize_refits_unless_zoomed(qtbot, window, photos):
    w = window
    open_and_wait(qtbot, w, sorted(photos.iterdir())[0])
    assert fits(w)
    before = w.canvas.zoom()
    w.resize(800, 560)
    qtbot.waitUntil(lambda: w.canvas.zoom() < before and fits(w), timeout=WAIT)
    w.canvas.zoom_by(2.0)
    zoomed = w.canvas.zoom()
    w.resize(1100, 800)
    qtbot.waitUntil(lambda: w.canvas.width() > 500, timeout=WAIT)
    QApplication.processEvents()
    assert w.canvas.zoom() == zoomed  # the user's zoom is kept
    key(qtbot, w, "F")  # fit again: resizing refits again
    w.resize(900, 640)
    qtbot.waitUntil(lambda: fits(w), timeout=WAIT)


def test_small_window_leaves_the_canvas_most_of_the_width(qtbot, with_models, dialogs):
    w = make_window(qtbot, with_models, wait_models=False, size=None)
    w.resize(800, 560)
    qtbot.waitUntil(lambda: w.width() == 800, timeout=WAIT)
    QApplication.processEvents()
    assert w.canvas.width() >= 400, w.canvas.width()
    w.view_title.set_expanded(False)
    assert not w.controls.isVisible()
    w.close()


def test_photos_copied_into_the_open_folder_appear(qtbot, window, photos, pet_photos):
    w = window
    names = sorted(photos.iterdir())
    open_and_wait(qtbot, w, names[1])
    new = photos / "Aaa_new_photo.jpg"  # sorts first: the selection must follow its photo, not its row
    shutil.copy(pet_photos[0], new)
    qtbot.waitUntil(lambda: w.files.row_of(new) >= 0, timeout=5000)
    assert w.files.row_of(new) == 0
    assert w.files.currentRow() == w.files.row_of(names[1]) and w.image_path == names[1]
    names[2].unlink()
    qtbot.waitUntil(lambda: w.files.row_of(names[2]) < 0, timeout=5000)
    assert w.files.currentRow() == w.files.row_of(names[1])
    before = w.files.paths()[w.files.currentRow() - 1]
    w.step(-1)  # navigation goes on from the open photo's new row
    assert w.image_path == before


def test_model_info_is_a_table_with_details(qtbot, window, tiny_prompt_checkpoint):
    w = window
    dialog = w.show_model_info()
    meta = read_metadata(tiny_prompt_checkpoint)
    assert dialog.value(PROMPT, "Architecture").startswith(meta["arch"])
    assert dialog.value(PROMPT, "Parameters") == f"{parameter_count(tiny_prompt_checkpoint):,}"
    assert dialog.value(SEMANTIC, "Task") == SEMANTIC
    raw = dialog.details[PROMPT]
    assert not raw.isVisible()
    dialog.expanders[PROMPT].click()
    assert raw.isVisible() and '"arch"' in raw.toPlainText()
    dialog.close()


def test_model_info_shows_validation_metrics_and_training_data(qtbot):
    from models.discovery import resources_dir

    path = resources_dir() / "checkpoints" / "petseg-unet-effnet256.safetensors"
    meta = read_metadata(path)
    dialog = ModelInfoDialog([(SEMANTIC, str(path), meta, "cpu")])
    qtbot.addWidget(dialog)
    assert dialog.value(SEMANTIC, "Architecture") == "unet effnet_lite0"
    assert f"miou {meta['metrics']['miou']:.3f}" in dialog.value(SEMANTIC, "Validation")
    assert f"{meta['training']['train_images']:,} train" in dialog.value(SEMANTIC, "Trained on")
    assert dialog.value(SEMANTIC, "Epochs").startswith(str(meta["training"]["epochs"]))


def test_overlay_colours_are_applied_and_persist(qtbot, with_models, dialogs, photos):
    w = make_window(qtbot, with_models)
    open_and_wait(qtbot, w, sorted(photos.iterdir())[0])
    accept_one(qtbot, w)
    assert not w.canvas._objects_edge.path().isEmpty()  # an outline around the accepted object
    dialog = w.choose_overlay_colours()
    dialog.set_colour(DOG, QColor("#00ff40"))
    dialog.set_colour(OUTLINE, QColor("#000000"))
    dialog.accept()
    assert w.canvas.class_colours[DOG] == (0, 255, 64)
    assert w.canvas._objects_edge.pen().color() == QColor("#000000")
    w.close()
    again = make_window(qtbot, with_models, wait_models=False)
    assert again.canvas.class_colours[DOG] == (0, 255, 64) and again.canvas.outline_colour == (0, 0, 0)
    again.close()


def test_object_rows_of_a_large_photo_keep_their_size_readable(qtbot):
    import numpy as np

    from petseg_desktop.annotation import AnnotationObject, Prompts
    from petseg_desktop.panels import ObjectPanel

    panel = ObjectPanel()
    qtbot.addWidget(panel)
    panel.resize(210, 300)  # the dock's default width
    mask = np.zeros((1958, 4000), bool)
    sizes = [(1372, 1000), (760, 1000), (60, 150)]  # 1,372,000 / 760,000 / 9,000 px
    objects = []
    for h, w in sizes:
        part = mask.copy()
        part[:h, :w] = True
        objects.append(AnnotationObject(DOG, part, Prompts(), "auto"))
    panel.set_objects(objects, editing=None)
    texts = [panel.list.item(row).text() for row in range(panel.list.count())]
    assert texts == ["3. dog  (9,000 px, auto)", "2. dog  (760k px, auto)", "1. dog  (1.4M px, auto)"]
    width = panel.list.viewport().width()
    metrics = panel.list.fontMetrics()
    assert all(metrics.horizontalAdvance(t) + 24 <= width for t in texts), (texts, width)  # 24: the colour dot
