"""The Qt-free annotation document (composition, class suggestion), its sidecar file (RLE, JSON) and folder paths."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models.classes import CAT, DOG
from petseg_desktop import annotation as ann
from petseg_desktop import folder, sidecar
from petseg_desktop.annotation import AnnotationObject, ImageAnnotation, Prompts
from petseg_desktop.sidecar import SidecarError, load_document, save_document


@pytest.fixture(autouse=True)
def user_data(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))


def test_document_model_is_qt_free_and_gui_never_imports_training_loop():
    code = (
        "import sys, petseg_desktop.annotation, petseg_desktop.sidecar, petseg_desktop.folder; "
        "assert 'PyQt5' not in sys.modules, 'Qt imported'; "
        "import petseg_desktop.app, petseg_desktop.main_window, petseg_desktop.export_dialog, models.predictor; "
        "bad = [m for m in sys.modules if m in ('training.fit', 'training.prompt_training')]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parent.parent)


@pytest.mark.parametrize("seed", range(6))
def test_rle_round_trip(seed):
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(1, 40)), int(rng.integers(1, 40)))
    mask = rng.random(shape) < [0.0, 0.3, 0.5, 0.9, 1.0, 0.05][seed]
    rle = sidecar.rle_encode(mask)
    assert sum(rle["counts"]) == mask.size
    assert np.array_equal(sidecar.rle_decode(json.loads(json.dumps(rle))), mask)


def test_rle_rejects_bad_counts():
    with pytest.raises(SidecarError):
        sidecar.rle_decode({"size": [2, 2], "counts": [1, 1]})
    with pytest.raises(SidecarError):
        sidecar.rle_decode({"size": "x"})


def test_composition_later_objects_on_top():
    a = np.zeros((4, 5), bool)
    a[:, :3] = True
    b = np.zeros((4, 5), bool)
    b[:, 2:] = True
    labels = ann.compose_labels([AnnotationObject(CAT, a), AnnotationObject(DOG, b)], (4, 5))
    assert labels.tolist() == [[1, 1, 2, 2, 2]] * 4
    labels = ann.compose_labels([AnnotationObject(DOG, b), AnnotationObject(CAT, a)], (4, 5))
    assert labels.tolist() == [[1, 1, 1, 2, 2]] * 4


def test_suggest_class_from_labels_probabilities_and_evidence():
    mask = np.zeros((4, 4), bool)
    mask[:2] = True
    labels = np.zeros((4, 4), np.uint8)
    labels[0, :2] = DOG
    labels[1, :3] = CAT  # 3 cat pixels against 2 dog pixels inside the mask
    assert ann.suggest_class(mask, labels) == CAT
    assert ann.suggest_class(mask, None) is None
    assert ann.suggest_class(np.zeros((4, 4), bool), labels) is None
    probs = np.zeros((4, 4, 3), np.float32)
    probs[..., DOG] = 0.6
    probs[..., CAT] = 0.4
    assert ann.suggest_class(mask, probs) == DOG
    evidence = (probs[..., CAT] - probs[..., DOG]).astype(np.float16)
    assert ann.suggest_class(mask, evidence) == DOG


def test_objects_from_labels():
    labels = np.zeros((10, 10), np.uint8)
    labels[:4, 5:] = CAT
    labels[6:, :] = DOG
    objs = ann.objects_from_labels(labels, min_pixels=1)
    assert [o.class_id for o in objs] == [DOG, CAT] and all(o.source == "auto" for o in objs)
    assert np.array_equal(objs[0].mask, labels == DOG)
    assert ann.objects_from_labels(np.zeros((2, 2), np.uint8)) == []


def test_pet_instances_split_components_and_drop_specks():
    labels = np.zeros((200, 300), np.uint8)
    labels[20:80, 20:80] = CAT  # 3600 px
    labels[100:180, 180:260] = CAT  # a second cat, 6400 px
    labels[150:170, 40:60] = CAT  # a 400-px speck: under the 500-px floor
    labels[5, 290] = DOG  # a stray pixel, gone with the opening
    assert ann.min_instance_pixels(labels.shape) == 500
    pets = ann.pet_instances(labels)
    assert [(cid, int(m.sum())) for cid, m in pets] == [(CAT, 6400), (CAT, 3600)]
    assert pets[0][1][120, 200] and not pets[0][1][50, 50]
    assert ann.tight_box(pets[1][1]) == (20, 20, 79, 79)
    assert ann.min_instance_pixels((2000, 1000)) == 4000  # 0.2% of a large photo


def test_object_class_from_the_labels_inside_each_object():
    labels = np.zeros((10, 20), np.uint8)
    labels[:, :8] = CAT
    labels[:, 14:] = DOG
    a, b, bg = (np.zeros((10, 20), bool) for _ in range(3))
    a[2:8, 1:10] = True  # mostly cat pixels
    b[2:8, 12:20] = True  # mostly dog pixels
    bg[0:3, 9:13] = True  # no pet pixel: the photo's majority (cat, 80 px vs 60)
    assert ann.object_class(a, labels) == CAT
    assert ann.object_class(b, labels) == DOG
    assert ann.object_class(bg, labels) == CAT
    assert ann.object_class(a, None) is None


def test_exclusion_takes_the_model_part_only():
    model = np.zeros((4, 4), bool)
    model[:, :3] = True
    others = np.zeros((4, 4), bool)
    others[:, 2:] = True
    painted = np.zeros((4, 4), bool)
    painted[0, 3] = True
    mask = ann.Strokes(painted=painted).apply(model, (4, 4), exclude=others)
    assert mask[:, :2].all() and not mask[1:, 2:].any() and mask[0, 3]


def _doc(tmp_path):
    image = tmp_path / "Abyssinian_1.jpg"
    image.write_bytes(b"")
    doc = ImageAnnotation(image, 6, 8)
    mask = np.zeros((6, 8), bool)
    mask[1:4, 2:6] = True
    doc.objects.append(AnnotationObject(DOG, mask, Prompts([(3, 2, True), (0, 0, False)], (1, 1, 7, 5))))
    doc.prompts = Prompts([(5, 5, True)])
    doc.probabilities = np.linspace(0, 1, 48, dtype=np.float32).reshape(6, 8)
    doc.editing = None
    return image, doc


def test_sidecar_round_trip(tmp_path):
    image, doc = _doc(tmp_path)
    path = save_document(doc, threshold=0.5)
    assert path == tmp_path / ".petseg" / "Abyssinian_1.jpg.json"
    assert not [p for p in path.parent.iterdir() if p.suffix == ".tmp"]
    back = load_document(image, (6, 8))
    assert len(back.objects) == 1
    assert back.objects[0].class_id == DOG and np.array_equal(back.objects[0].mask, doc.objects[0].mask)
    assert back.objects[0].prompts == doc.objects[0].prompts
    assert back.prompts == doc.prompts
    assert np.array_equal(back.probabilities >= 0.5, doc.probabilities >= 0.5)
    assert np.array_equal(back.label_map(), doc.label_map())
    assert sidecar.has_objects(image)


def test_sidecar_of_another_size_or_corrupt_is_refused(tmp_path):
    image, doc = _doc(tmp_path)
    save_document(doc)
    with pytest.raises(SidecarError):
        load_document(image, (7, 8))
    sidecar.sidecar_path(image).write_text("{not json")
    with pytest.raises(SidecarError):
        load_document(image, (6, 8))
    assert not sidecar.has_objects(image)


def test_read_only_folder_falls_back_to_user_data(tmp_path, monkeypatch):
    image, doc = _doc(tmp_path)
    monkeypatch.setattr(sidecar, "_folder_writable", lambda folder: False)
    path = save_document(doc)
    assert str(path).startswith(str(tmp_path / "xdg" / "petseg" / "annotations"))
    assert sidecar.find_sidecar(image) == path
    assert len(load_document(image, (6, 8)).objects) == 1


def test_paths_and_listing(tmp_path):
    for name in ("b.jpg", "A.png", "a_mask.png", "a_mask_colour.png", ".hidden.jpg", "notes.txt", "C.JPEG"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub.jpg").mkdir()
    assert [p.name for p in folder.list_images(tmp_path)] == ["A.png", "b.jpg", "C.JPEG"]
    assert folder.mask_path(tmp_path / "b.jpg") == tmp_path / "b_mask.png"
    assert folder.mask_path(tmp_path / "b.jpg", tmp_path / "out") == tmp_path / "out" / "b_mask.png"
    assert folder.colour_path(tmp_path / "b.jpg") == tmp_path / "b_mask_colour.png"


def test_prompts_value_semantics():
    p = Prompts().with_point(1.7, 2, True).with_box((0, 0, 5, 5))
    q = p.with_point(3, 3, False)
    assert p.points == [(1, 2, True)] and len(q.points) == 2 and q.box == (0, 0, 5, 5)
    assert sidecar.prompts_from_json(sidecar.prompts_to_json(q)) == q
    assert not p.is_empty() and Prompts().is_empty()


def test_version_1_sidecar_still_loads(tmp_path):
    """A sidecar as PetSeg has written it since format version 1 (the bytes must keep loading)."""
    image = tmp_path / "pug_1.jpg"
    image.write_bytes(b"")
    (tmp_path / ".petseg").mkdir()
    (tmp_path / ".petseg" / "pug_1.jpg.json").write_text(
        '{"format":"petseg-annotation","version":1,"image":"pug_1.jpg","width":3,"height":2,'
        '"modified":"2024-05-01T10:00:00+00:00","objects":[{"class":"dog","class_id":2,"source":"prompt",'
        '"prompts":{"points":[[1,0,1],[2,1,0]],"box":[0,0,3,2]},"mask":{"size":[2,3],"counts":[1,2,3]}}],'
        '"current":{"prompts":{"points":[[0,1,1]],"box":null},"mask":{"size":[2,3],"counts":[3,3]},"editing":null}}'
    )
    doc = load_document(image, (2, 3))
    assert [(o.class_id, o.class_name, o.source) for o in doc.objects] == [(DOG, "dog", "prompt")]
    assert doc.objects[0].mask.tolist() == [[False, True, True], [False, False, False]]
    assert doc.objects[0].prompts == Prompts([(1, 0, True), (2, 1, False)], (0, 0, 3, 2))
    assert doc.prompts == Prompts([(0, 1, True)]) and doc.editing is None
    assert doc.current_mask().tolist() == [[False] * 3, [True] * 3]
    saved = sidecar.document_to_json(doc)
    assert saved["objects"] == [
        {"class": "dog", "class_id": 2, "source": "prompt",
         "prompts": {"points": [[1, 0, 1], [2, 1, 0]], "box": [0, 0, 3, 2]}, "mask": {"size": [2, 3], "counts": [1, 2, 3]}}
    ]


@pytest.mark.parametrize("editing", [None, 0, 1])
def test_object_being_re_edited_is_saved_and_restored(tmp_path, editing):
    image, doc = _doc(tmp_path)
    doc.objects.append(AnnotationObject(CAT, np.ones((6, 8), bool)))
    doc.editing = editing
    save_document(doc)
    assert load_document(image, (6, 8)).editing == editing


def test_stale_re_edit_is_dropped_and_a_malformed_one_refused(tmp_path):
    image, doc = _doc(tmp_path)
    data = sidecar.document_to_json(doc)
    for stale in ([0, CAT], [5, DOG]):  # wrong class, no such object
        data["current"]["editing"] = stale
        assert sidecar.document_from_json(data, image, (6, 8)).editing is None
    for malformed in ("x", [1], ["a", 1]):
        data["current"]["editing"] = malformed
        with pytest.raises(SidecarError, match="current.editing"):
            sidecar.document_from_json(data, image, (6, 8))
    data["current"]["editing"] = [0, DOG]
    assert sidecar.document_from_json(data, image, (6, 8)).editing == 0


def test_strokes_layer_over_the_model_mask():
    model = np.zeros((4, 6), bool)
    model[:, :3] = True
    left, col4 = np.zeros_like(model), np.zeros_like(model)
    left[:, 0] = True
    col4[:, 4] = True
    strokes = ann.Strokes().with_stroke(left, erase=True).with_stroke(col4, erase=False)
    shown = strokes.apply(model, model.shape)
    assert not shown[:, 0].any() and shown[:, 1:3].all() and shown[:, 4].all() and not shown[:, 5].any()
    assert strokes.with_stroke(left, erase=False).erased is None  # painting over erased pixels un-erases them
    assert ann.Strokes().apply(None, model.shape) is None and strokes.apply(None, model.shape)[:, 4].all()
    objects, order = ann.moved(["a", "b", "c"], 0, 2)
    assert objects == ["b", "c", "a"] and order == [1, 2, 0]


def test_strokes_are_saved_with_objects_and_current_and_checked(tmp_path):
    image, doc = _doc(tmp_path)
    erased = np.zeros((6, 8), bool)
    erased[2, 3] = True
    strokes = ann.Strokes(None, erased)
    doc.objects[0] = AnnotationObject(DOG, doc.objects[0].mask & ~erased, Prompts(), "prompt", strokes)
    doc.strokes = ann.Strokes(erased.copy(), None)
    data = sidecar.document_to_json(doc)
    assert data["objects"][0]["strokes"]["painted"] is None and data["current"]["strokes"]["erased"] is None
    back = sidecar.document_from_json(data, image, (6, 8))
    assert np.array_equal(back.objects[0].strokes.erased, erased) and back.objects[0].strokes.painted is None
    assert np.array_equal(back.strokes.painted, erased) and back.current_mask()[2, 3]
    for bad, where in (("x", "objects[0].strokes"), ({"erased": {"size": [6, 8], "counts": [1]}}, "objects[0].strokes.erased")):
        broken = json.loads(json.dumps(data))
        broken["objects"][0]["strokes"] = bad
        with pytest.raises(SidecarError, match=where.replace("[", r"\[").replace("]", r"\]")):
            sidecar.document_from_json(broken, image, (6, 8))
    plain = sidecar.document_to_json(_doc(tmp_path)[1])  # no strokes: no key, as older sidecars
    assert "strokes" not in plain["objects"][0] and "strokes" not in plain["current"]
    assert sidecar.document_from_json(plain, image, (6, 8)).objects[0].strokes.is_empty()


def test_a_pet_mostly_annotated_already_is_not_found_again():
    pet = np.zeros((200, 300), bool)
    pet[40:160, 40:160] = True  # 14,400 px
    accepted = np.zeros_like(pet)
    accepted[44:156, 44:156] = True  # the user's object: all but a 4-px fringe
    assert ann.unclaimed_part(pet, accepted, 500) is None  # the fringe is no pet
    half = np.zeros_like(pet)
    half[40:160, 40:100] = True
    assert ann.unclaimed_part(pet, half, 500) is None  # half of it taken: the same pet
    corner = np.zeros_like(pet)
    corner[40:70, 40:70] = True
    rest = ann.unclaimed_part(pet, corner, 500)
    assert rest is not None and rest.sum() == 14400 - 900 and not (rest & corner).any()
    assert ann.unclaimed_part(pet, np.zeros_like(pet), 20000) is None  # too small a pet
