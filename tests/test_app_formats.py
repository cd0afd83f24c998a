"""File > Export annotations… and File > Import annotations… in the real window (offscreen, tiny models)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from pycocotools import mask as coco_mask

import petseg_desktop.annotation_dialogs as annotation_dialogs
from models.classes import CAT, DOG
from models.formats import LabelledMask, PhotoObjects
from models.formats.core import photo_size
from models.formats.labelme import export_labelme
from petseg_desktop.sidecar import find_sidecar, load_document
from app_driver import WAIT, click, key, open_and_wait, usable_threshold, wait_mask


def annotate(qtbot, w, photo: Path) -> np.ndarray:
    """Open ``photo``, click its centre, accept with Enter; the accepted mask."""
    open_and_wait(qtbot, w, photo)
    h, width = w.editor.doc.shape
    click(w, width // 2, h // 2)
    wait_mask(qtbot, w)
    w.controls.threshold.setValue(usable_threshold(w))
    key(qtbot, w, "Return")
    return w.editor.doc.objects[-1].mask.copy()


def run_dialog(qtbot, dialog) -> None:
    assert dialog.start()
    qtbot.waitUntil(lambda: not dialog.running() and dialog.start_button.isEnabled(), timeout=WAIT)


def test_export_annotations_as_coco_and_cancel(qtbot, window, photos, tmp_path, monkeypatch):
    w = window
    names = sorted(photos.iterdir())
    masks = {names[0].name: annotate(qtbot, w, names[0]), names[1].name: annotate(qtbot, w, names[1])}
    assert all(m.any() and not m.all() for m in masks.values())

    key(qtbot, w, "Ctrl+Shift+E")  # right after Enter: the dialog flushes the pending autosave
    dialog = w.annotation_dialog
    out = tmp_path / "coco"
    dialog.output_edit.setText(str(out))
    dialog.set_format("coco")
    run_dialog(qtbot, dialog)
    assert dialog.summary is not None and not dialog.summary.failed
    doc = json.loads((out / "annotations.json").read_text())
    by_id = {image["id"]: image["file_name"] for image in doc["images"]}
    decoded = {by_id[a["image_id"]]: coco_mask.decode(a["segmentation"]).astype(bool) for a in doc["annotations"]}
    assert sorted(decoded) == sorted(masks)
    for name, mask in masks.items():
        assert np.array_equal(decoded[name], mask)
    log = dialog.log.toPlainText()
    assert "2 photos, 2 objects" in log
    assert all(f"no annotation: {p.name}" in log for p in names[2:])

    # a file PetSeg did not write is not replaced without Overwrite
    (out / "annotations.json").write_text("{}")
    run_dialog(qtbot, dialog)
    assert dialog.summary is None and "PetSeg did not write it: kept" in dialog.log.toPlainText()
    assert (out / "annotations.json").read_text() == "{}"

    # cancel after the first file is written to its temp name: nothing is left in the output
    real = annotation_dialogs.export_annotations

    def cancelled_midway(folder, output, fmt, overwrite, progress, cancel):
        def then_cancel(stage, done, total, name):
            progress(stage, done, total, name)
            if stage == "writing":
                w.annotation_dialog.cancel()  # as the button does (an Event: safe from this thread)

        return real(folder, output, fmt, overwrite, progress=then_cancel, cancel=cancel)

    monkeypatch.setattr(annotation_dialogs, "export_annotations", cancelled_midway)
    cut = tmp_path / "cutouts"
    dialog.output_edit.setText(str(cut))
    dialog.set_format("cutout")
    run_dialog(qtbot, dialog)
    assert dialog.summary is None and "cancelled" in dialog.log.toPlainText()
    assert list(cut.iterdir()) == []
    dialog.close()


def test_import_labelme_adds_undoable_objects_and_writes_sidecars(qtbot, window, photos, tmp_path):
    w = window
    names = sorted(photos.iterdir())
    own = annotate(qtbot, w, names[0])  # the open photo already has an object

    def known(photo: Path, class_id: int, box: tuple[int, int, int, int]) -> PhotoObjects:
        h, width = photo_size(photo)
        mask = np.zeros((h, width), bool)
        x0, y0, x1, y1 = box
        mask[y0:y1, x0:x1] = True
        return PhotoObjects(photo, h, width, [LabelledMask(class_id, mask)])

    items = [known(names[0], CAT, (10, 20, 60, 90)), known(names[2], DOG, (30, 5, 80, 50))]
    elsewhere = tmp_path / "other"  # a photo of another folder: reported, not matched
    elsewhere.mkdir()
    (elsewhere / "stranger.jpg").write_bytes(names[3].read_bytes())
    items.append(known(elsewhere / "stranger.jpg", CAT, (0, 0, 5, 5)))
    labelme = tmp_path / "labelme"
    labelme.mkdir()
    for file in export_labelme(items, labelme):
        file.write(labelme / file.path)

    key(qtbot, w, "Ctrl+Shift+I")
    dialog = w.annotation_dialog
    dialog.set_format("labelme")
    dialog.path_edit.setText(str(labelme))
    run_dialog(qtbot, dialog)
    summary = dialog.summary
    assert summary is not None and summary.photos == 2 and summary.objects == 2 and summary.added_to == 1
    assert summary.unmatched == ["stranger.jpg"] and "stranger.jpg" in dialog.log.toPlainText()

    doc = w.editor.doc  # the open photo: its object, then the imported one, in the Objects panel
    assert w.objects.list.count() == 2 and "cat" in w.objects.list.item(0).text().lower()  # top row = front = last
    assert np.array_equal(doc.objects[0].mask, own) and np.array_equal(doc.objects[1].mask, items[0].objects[0].mask)
    assert doc.objects[1].source == "import"
    saved = load_document(names[0], doc.shape)
    assert len(saved.objects) == 2 and np.array_equal(saved.objects[1].mask, items[0].objects[0].mask)
    key(qtbot, w, "Ctrl+Z")
    assert w.objects.list.count() == 1
    key(qtbot, w, "Ctrl+Shift+Z")
    assert w.objects.list.count() == 2

    other = load_document(names[2], items[1].shape)  # a photo not open: straight to its sidecar
    assert find_sidecar(names[2]) is not None and len(other.objects) == 1
    assert other.objects[0].class_id == DOG and other.objects[0].source == "import"
    assert np.array_equal(other.objects[0].mask, items[1].objects[0].mask)
    assert w.files.state(w.files.row_of(names[2])) == "annotated"
    open_and_wait(qtbot, w, names[2])
    assert w.objects.list.count() == 1

    # replace: the open photo's objects become the imported ones only
    dialog.existing_combo.setCurrentIndex(1)
    run_dialog(qtbot, dialog)
    assert dialog.summary.replaced == 2 and len(w.editor.doc.objects) == 1
    assert len(load_document(names[0], items[0].shape).objects) == 1
    dialog.close()


def test_import_is_refused_in_a_read_only_folder(qtbot, window, photos):
    w = window
    open_and_wait(qtbot, w, sorted(photos.iterdir())[0])
    w._set_read_only("another PetSeg (test) is annotating it")
    assert not w.import_action.isEnabled()
    assert w.open_annotation_import() is None
    assert w.open_annotation_export() is not None  # reading the sidecars is fine
    w.annotation_dialog.close()
