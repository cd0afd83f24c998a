"""What is on disk follows what the app shows: automatic mask writing, the file list's three states,
the Save all / Discard / Cancel question when masks are not saved, and masks PetSeg did not write."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from PyQt5.QtWidgets import QMessageBox

from petseg_desktop.folder import mask_path
from petseg_desktop.mask_files import APP_MARK, SAVED, TODO, UNSAVED, mask_state, objects_digest, state_of
from app_driver import WAIT, drag, key, make_window, open_and_wait


def paint_object(qtbot, w) -> None:
    """Brush a stroke and accept it as an object."""
    key(qtbot, w, "B")
    drag(w, (30, 30), (120, 90))
    key(qtbot, w, "Return")
    key(qtbot, w, "B")


def answer(monkeypatch, button) -> list[str]:
    """QMessageBox.question answers ``button``; returns the texts asked."""
    asked: list[str] = []

    def question(parent, title, text, *args, **kwargs):
        asked.append(text)
        return button

    monkeypatch.setattr(QMessageBox, "question", staticmethod(question))
    return asked


def test_masks_follow_the_objects_when_written_automatically(qtbot, window, photos):
    w = window
    image = sorted(photos.iterdir())[0]
    target = mask_path(image)
    open_and_wait(qtbot, w, image)
    assert w.auto_write_action.isChecked() and w.files.state(0) == TODO
    paint_object(qtbot, w)
    qtbot.waitUntil(lambda: target.is_file() and w.files.state(0) == SAVED, timeout=WAIT)
    assert "current" in w.files.item(0).toolTip()
    with Image.open(target) as saved:
        assert saved.info.get("Software") == APP_MARK["Software"]
        before = np.array(saved)
    cid = w.editor.doc.objects[0].class_id
    assert before[60, 75] == cid

    key(qtbot, w, "C")  # the other class: the file's pixels follow
    qtbot.waitUntil(lambda: np.array(Image.open(target))[60, 75] not in (0, cid), timeout=WAIT)
    assert w.files.state(0) == SAVED and mask_state(image) == SAVED

    key(qtbot, w, "Ctrl+Z")  # undo too
    qtbot.waitUntil(lambda: np.array(Image.open(target))[60, 75] == cid, timeout=WAIT)
    key(qtbot, w, "Del")  # no objects: PetSeg's own mask is removed, not left as a finished all-background one
    qtbot.waitUntil(lambda: not target.exists(), timeout=WAIT)
    assert w.files.state(0) == TODO and mask_state(image) == TODO
    key(qtbot, w, "Ctrl+Z")  # the object back: its mask written again
    qtbot.waitUntil(lambda: target.is_file() and w.files.state(0) == SAVED, timeout=WAIT)
    assert np.array(Image.open(target))[60, 75] == cid


def test_an_all_background_mask_recorded_for_no_objects_is_nothing_yet():
    """Earlier versions wrote an all-background mask when the last object went; such a photo reads
    as not annotated, while a mask written for objects that are gone since is a stale one."""
    none, some = objects_digest([]), "0" * 40
    assert state_of(none, False, none, True) == TODO
    assert state_of(none, False, some, True) == UNSAVED and state_of(none, False, None, True) == SAVED


def test_saving_without_an_accepted_object_writes_nothing(qtbot, with_models, photos):
    """Ctrl+S with only the current (not accepted) mask: no file, the photo still to do, and the
    status bar says why; once accepted, Ctrl+S writes it."""
    w = make_window(qtbot, with_models)
    w.auto_write_action.trigger()  # off: only Ctrl+S writes
    image = sorted(photos.iterdir())[0]
    open_and_wait(qtbot, w, image)
    key(qtbot, w, "B")
    drag(w, (30, 30), (120, 90))  # a brushed mask, not yet accepted
    assert w.editor.current_mask().any()
    key(qtbot, w, "Ctrl+S")
    assert not mask_path(image).exists() and w.files.state(0) == TODO
    assert w.statusBar().currentMessage() == "Nothing saved: press Enter to accept the object first"
    key(qtbot, w, "Return")
    key(qtbot, w, "Ctrl+S")
    assert np.array(Image.open(mask_path(image)))[60, 75] == w.editor.doc.objects[0].class_id
    assert w.files.state(0) == SAVED and w.statusBar().currentMessage().startswith("Saved ")


def test_without_automatic_writing_the_list_and_closing_tell(qtbot, with_models, dialogs, photos, monkeypatch):
    w = make_window(qtbot, with_models)
    w.auto_write_action.trigger()  # off, remembered
    assert not w.editor.auto_write and w.settings.value("output/autoWrite") in (False, "false")
    image = sorted(photos.iterdir())[0]
    target = mask_path(image)
    open_and_wait(qtbot, w, image)
    paint_object(qtbot, w)
    key(qtbot, w, "Ctrl+S")
    assert w.files.state(0) == SAVED
    key(qtbot, w, "C")
    qtbot.waitUntil(lambda: w.files.state(0) == UNSAVED, timeout=WAIT)
    assert "older" in w.files.item(0).toolTip() and mask_state(image) == UNSAVED
    old = np.array(Image.open(target))

    asked = answer(monkeypatch, QMessageBox.Cancel)
    w.close()
    assert w.isVisible() and asked[0].startswith("1 photo in photos has objects")  # Cancel: the window stays
    assert np.array_equal(np.array(Image.open(target)), old)

    answer(monkeypatch, QMessageBox.SaveAll)
    w.close()
    assert not w.isVisible()
    assert np.array(Image.open(target))[60, 75] == w.editor.doc.objects[0].class_id != old[60, 75]
    assert mask_state(image) == SAVED


def mask_made_elsewhere(image, label: int) -> tuple:
    """Write ``image``'s mask file (its bottom fifth ``label``, away from where :func:`paint_object`
    paints) as another tool would: no PetSeg mark. Returns the mask's path and its pixels."""
    target = mask_path(image)
    with Image.open(image) as photo:
        theirs = np.zeros((photo.height, photo.width), dtype=np.uint8)
    theirs[theirs.shape[0] * 4 // 5:] = label
    Image.fromarray(theirs).save(target)
    return target, theirs


def test_a_mask_petseg_did_not_write_is_not_overwritten_silently(qtbot, window, photos, dialogs):
    w = window
    image = sorted(photos.iterdir())[0]
    target, theirs = mask_made_elsewhere(image, 2)
    open_and_wait(qtbot, w, image)
    assert w.files.state(0) == SAVED  # a mask made elsewhere, no annotation to disagree with
    paint_object(qtbot, w)
    qtbot.waitUntil(lambda: any("not written by PetSeg" in text for _, _, text in dialogs), timeout=WAIT)
    assert np.array_equal(np.array(Image.open(target)), theirs)  # answered No (not Yes): kept
    assert w.files.state(0) == UNSAVED
    key(qtbot, w, "Ctrl+S")  # asked again for an explicit save, still kept
    assert np.array_equal(np.array(Image.open(target)), theirs)


def test_a_stray_click_undone_on_a_mask_made_elsewhere_leaves_it_saved(qtbot, window, photos, dialogs):
    """An object started on a photo whose mask came from elsewhere, then undone:
    the annotation is empty again and the photo counts as saved, as before the click."""
    w = window
    image = sorted(photos.iterdir())[0]
    target, theirs = mask_made_elsewhere(image, 1)
    open_and_wait(qtbot, w, image)
    assert w.files.state(0) == SAVED
    paint_object(qtbot, w)
    qtbot.waitUntil(lambda: w.files.state(0) == UNSAVED, timeout=WAIT)
    key(qtbot, w, "Ctrl+Z")
    qtbot.waitUntil(lambda: len(w.editor.doc.objects) == 1, timeout=WAIT)  # the mask file's object again
    w.editor.flush()
    qtbot.waitUntil(lambda: w.files.state(0) == SAVED, timeout=WAIT)
    assert mask_state(image) == SAVED  # what Improve on this folder and the Files list read from disk
    assert np.array_equal(np.array(Image.open(target)), theirs)


def test_a_mask_made_elsewhere_is_shown_as_its_objects_and_kept(qtbot, window, photos, dialogs):
    """Opened with no annotation, a mask file from another tool shows as one object per class (the
    file list and the canvas agree); nothing is written until an edit, and then the file is still
    not replaced without asking. A mask that does not fit its photo is said once, in one line, and
    the photo counts as not annotated."""
    w = window
    first, second, third = sorted(photos.iterdir())[:3]
    target = mask_path(first)
    with Image.open(first) as photo:
        theirs = np.zeros((photo.height, photo.width), dtype=np.uint8)
    theirs[10:60, 10:70], theirs[70:110, 80:150], theirs[60:62] = 1, 2, 255
    Image.fromarray(theirs).save(target)
    before = target.read_bytes()
    open_and_wait(qtbot, w, first)
    objects = w.editor.doc.objects
    assert [o.class_id for o in objects] == [1, 2] and w.objects.list.count() == 2
    shown = w.editor.doc.label_map()
    assert np.array_equal(shown[theirs != 255], theirs[theirs != 255])
    assert "mask file" in w.objects.list.item(0).text()
    assert w.files.state(0) == SAVED

    w.objects.list.setCurrentRow(0)
    w.objects.deleteRequested.emit(w.objects.selected())  # the panel's Delete button
    qtbot.waitUntil(lambda: w.files.state(0) == UNSAVED, timeout=WAIT)
    qtbot.waitUntil(lambda: any("not written by PetSeg" in text for _, _, text in dialogs), timeout=WAIT)
    assert target.read_bytes() == before
    key(qtbot, w, "Ctrl+Z")
    qtbot.waitUntil(lambda: w.files.state(0) == SAVED, timeout=WAIT)

    Image.fromarray(theirs[:50, :50]).save(mask_path(second))  # not this photo's size
    assert mask_state(second) == TODO  # no annotation of this photo: not counted as saved (nor by Improve)
    asked = len(dialogs)
    open_and_wait(qtbot, w, second)
    assert w.editor.doc.objects == [] and len(dialogs) == asked + 1
    assert w.files.state(1) == TODO
    assert dialogs[-1][1:] == ("Mask not shown", f"The mask of {second.name} is not shown: {second.stem}_mask.png: "
                               "50x50 mask beside a {}x{} photo".format(*Image.open(second).size))
    open_and_wait(qtbot, w, first)
    open_and_wait(qtbot, w, second)
    assert len(dialogs) == asked + 1  # once per file
    w.editor.flush()
    assert mask_state(first) == SAVED and target.read_bytes() == before

    with Image.open(third) as photo:  # a mask of the right size whose values are not classes
        Image.fromarray(np.full((photo.height, photo.width), 7, dtype=np.uint8)).save(mask_path(third))
    w.open_path(photos)  # the folder listed again: from the headers alone, that mask looks usable
    assert w.files.state(w.files.row_of(third)) == SAVED
    open_and_wait(qtbot, w, third)
    assert "value 7 is not a class" in dialogs[-1][2] and w.editor.doc.objects == []
    assert w.files.state(w.files.row_of(w.image_path)) == TODO


def test_read_only_folders_write_no_masks_but_show_states(qtbot, with_models, dialogs, photos):
    first = make_window(qtbot, with_models)
    image = sorted(photos.iterdir())[0]
    open_and_wait(qtbot, first, image)
    paint_object(qtbot, first)
    qtbot.waitUntil(lambda: first.files.state(0) == SAVED, timeout=WAIT)
    mask_path(image).unlink()
    second = make_window(qtbot, with_models, wait_models=False)
    second.open_path(photos)
    assert second.editor.read_only and second.files.state(0) == UNSAVED
    second.close()
    assert not mask_path(image).exists() and not second.isVisible()
    first.close()


def test_the_sidecar_field_is_optional_and_checked(tmp_path):
    from petseg_desktop.sidecar import SidecarError, check_document

    data = {"format": "petseg-annotation", "version": 1, "width": 4, "height": 3, "objects": []}
    check_document(data, (3, 4))
    check_document({**data, "mask_written": {"objects_sha1": "0" * 40}}, (3, 4))
    for bad in ({"objects_sha1": "xyz"}, [], {"objects_sha1": 5}):
        with pytest.raises(SidecarError, match="mask_written"):
            check_document({**data, "mask_written": bad}, (3, 4))


def test_a_batch_export_into_the_photo_folder_keeps_annotations_and_updates_the_list(qtbot, window, photos):
    """File > Batch export with the photo folder as output, even with Replace checked: the mask the
    app wrote for an annotation is skipped byte for byte, the other photos get the model's masks,
    and the file list reads their new state without reopening the folder."""
    w = window
    annotated = sorted(photos.iterdir())[0]
    open_and_wait(qtbot, w, annotated)
    paint_object(qtbot, w)
    qtbot.waitUntil(lambda: mask_path(annotated).is_file(), timeout=WAIT)
    before = mask_path(annotated).read_bytes()
    others = [p for p in w.files.paths() if p != w.image_path]
    assert all(w.files.state(w.files.row_of(p)) == TODO for p in others)

    dialog = w.open_export_dialog()
    dialog.input_edit.setText(str(photos))
    dialog.output_edit.setText(str(photos))
    dialog.overwrite_check.setChecked(True)
    assert dialog.start()
    qtbot.waitUntil(lambda: dialog.summary is not None, timeout=60000)
    assert (dialog.summary.written, dialog.summary.skipped, dialog.summary.failed) == (len(others), 1, [])
    assert mask_path(annotated).read_bytes() == before
    assert all(mask_path(p).is_file() and w.files.state(w.files.row_of(p)) == SAVED for p in others)
    dialog.close()
