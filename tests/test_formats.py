"""Annotation formats (models/formats) and `petseg-export annotations`, checked with the reference
readers: pycocotools for COCO, labelme's LabelFile + shapes_to_label for labelme, an Ultralytics-style
parser (class + normalised polygon per line, rasterised with cv2.fillPoly) for YOLO."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from models.classes import CAT, DOG
from models.formats import FormatError, LabelledMask, PhotoObjects
from models.formats.coco import import_coco
from models.formats.labelme import import_labelme_file
from models.formats.png import import_mask_folder
from models.formats.polygons import iou
from models.formats.yolo import import_yolo
from models.images import load_mask
from petseg_desktop.annotation import AnnotationObject, ImageAnnotation
from petseg_desktop.annotation_export import main as annotations_main
from petseg_desktop.export import main as export_main
from petseg_desktop.sidecar import photo_fingerprint, save_document


def _with_hole_and_parts(mask: np.ndarray) -> np.ndarray:
    """``mask`` with a 12x12 hole in its middle and a separate 10x10 island in a free corner."""
    out = mask.copy()
    ys, xs = np.nonzero(mask)
    cy, cx = int(np.median(ys)), int(np.median(xs))
    out[cy - 6 : cy + 6, cx - 6 : cx + 6] = False
    assert mask[cy - 7 : cy + 7, cx - 7 : cx + 7].all()
    out[:12, :12] = False
    out[1:11, 1:11] = True
    return out


@pytest.fixture(scope="module")
def annotated(tmp_path_factory, pets_root, pet_photos) -> Path:
    """A folder of the first three pet photos with sidecars written by PetSeg's writer (real masks;
    the first photo's object has a hole and two parts); the fourth photo has no annotation."""
    folder = tmp_path_factory.mktemp("annotated") / "photos"
    folder.mkdir()
    for i, source in enumerate(pet_photos):
        photo = folder / source.name
        shutil.copy(source, photo)
        if i == 3:
            continue
        labels = load_mask(pets_root / "Test" / "label" / f"{source.stem}.png")
        cid = CAT if source.name[0].isupper() else DOG
        mask = labels == cid
        if i == 0:
            mask = _with_hole_and_parts(mask)
        objects = [AnnotationObject(cid, mask)]
        h, w = labels.shape
        save_document(ImageAnnotation(photo, h, w, objects, photo=photo_fingerprint(photo)))
    return folder


def _export(folder: Path, out: Path, fmt: str, *extra: str) -> int:
    return export_main(["annotations", "--input", str(folder), "--output", str(out), "--format", fmt, *extra])


def _truth(folder: Path) -> dict[str, PhotoObjects]:
    from petseg_desktop.annotation_export import accepted_annotations

    items, empty, failed = accepted_annotations(folder)
    assert len(items) == 3 and len(empty) == 1 and not failed
    return {item.photo.stem: item for item in items}


def test_coco_rle_loads_in_pycocotools_exactly_and_round_trips(annotated, tmp_path, capsys):
    from pycocotools.coco import COCO

    assert _export(annotated, tmp_path / "coco", "coco") == 0
    assert "no annotation:" in capsys.readouterr().out
    coco = COCO(str(tmp_path / "coco" / "annotations.json"))
    truth = _truth(annotated)
    for image in coco.dataset["images"]:
        (ann,) = coco.loadAnns(coco.getAnnIds(imgIds=image["id"]))
        obj = truth[Path(image["file_name"]).stem].objects[0]
        assert np.array_equal(coco.annToMask(ann).astype(bool), obj.mask)
        assert ann["bbox"] == obj.bbox() and ann["area"] == obj.mask.sum() and ann["iscrowd"] == 0
    assert [c["name"] for c in coco.dataset["categories"]] == ["cat", "dog"]
    # export -> import -> export is byte-identical
    first = (tmp_path / "coco" / "annotations.json").read_text()
    assert annotations_main(["--from", f"coco:{tmp_path / 'coco' / 'annotations.json'}", "--output",
                             str(tmp_path / "again"), "--format", "coco"]) == 0
    assert (tmp_path / "again" / "annotations.json").read_text() == first


def test_coco_polygons_iou_and_holes(annotated, tmp_path):
    from pycocotools.coco import COCO

    assert _export(annotated, tmp_path, "coco-polygons") == 0
    coco = COCO(str(tmp_path / "annotations.json"))
    truth = _truth(annotated)
    for image in coco.dataset["images"]:
        (ann,) = coco.loadAnns(coco.getAnnIds(imgIds=image["id"]))
        obj = truth[Path(image["file_name"]).stem].objects[0]
        theirs = coco.annToMask(ann).astype(bool)
        assert iou(theirs, obj.mask) >= 0.99
        ours = import_coco(tmp_path / "annotations.json", photos=annotated)
        mine = {i.photo.stem: i for i in ours}[Path(image["file_name"]).stem].objects[0].mask
        assert np.array_equal(mine, theirs)  # our rasteriser is pycocotools'
    first = next(a for a in coco.dataset["annotations"] if a["image_id"] == 1)
    assert len(first["segmentation"]) >= 2  # one polygon per part; the hole comes back filled (documented)


def _ultralytics_masks(label_file: Path, h: int, w: int) -> list[tuple[int, np.ndarray]]:
    """Ultralytics' reading: class, then x y pairs normalised by width/height; polygons2mask."""
    out = []
    for line in label_file.read_text().splitlines():
        values = line.split()
        points = np.array(values[1:], dtype=np.float32).reshape(-1, 2) * (w, h)
        canvas = np.zeros((h, w), dtype=np.uint8)
        cv2.fillPoly(canvas, [points.astype(np.int32)], color=1)
        out.append((int(values[0]), canvas.astype(bool)))
    return out


def test_yolo_like_ultralytics_with_hole_and_parts(annotated, tmp_path):
    assert _export(annotated, tmp_path, "yolo") == 0
    yaml = (tmp_path / "dataset.yaml").read_text()
    assert "train: images" in yaml and "val: images" in yaml and "0: cat" in yaml and "1: dog" in yaml
    for stem, item in _truth(annotated).items():
        (cls, mask), = _ultralytics_masks(tmp_path / "labels" / f"{stem}.txt", item.height, item.width)
        assert cls == item.objects[0].class_id - 1
        assert iou(mask, item.objects[0].mask) >= 0.99
        assert (tmp_path / "images" / item.photo.name).is_file()
    back = {i.photo.stem: i for i in import_yolo(tmp_path)}
    for stem, item in _truth(annotated).items():
        assert iou(back[stem].objects[0].mask, item.objects[0].mask) >= 0.99


def test_hole_and_parts_survive_yolo(annotated, tmp_path):
    truth = _truth(annotated)
    holed = next(i for i in truth.values() if (i.objects[0].mask[1:11, 1:11]).all() and not i.objects[0].mask[0, 0])
    assert _export(annotated, tmp_path, "yolo") == 0
    back = {i.photo.stem: i for i in import_yolo(tmp_path)}[holed.photo.stem].objects[0].mask
    original = holed.objects[0].mask
    ys, xs = np.nonzero(~original[20:-20, 20:-20] & ndimage_fill(original)[20:-20, 20:-20])
    assert ys.size >= 100 and not back[20:-20, 20:-20][ys, xs].mean() > 0.2  # the hole stays open
    assert back[1:11, 1:11].all()  # the island is kept


def ndimage_fill(mask: np.ndarray) -> np.ndarray:
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    canvas = np.zeros(mask.shape, dtype=np.uint8)
    cv2.drawContours(canvas, contours, -1, 1, thickness=cv2.FILLED)
    return canvas.astype(bool)


def test_labelme_read_by_labelme(annotated, tmp_path):
    from labelme import LabelFile
    from labelme.utils import shapes_to_label

    assert _export(annotated, tmp_path, "labelme") == 0
    for stem, item in _truth(annotated).items():
        label_file = LabelFile(str(tmp_path / f"{stem}.json"))
        assert label_file.imageData is not None  # labelme found the photo through imagePath
        data = json.loads((tmp_path / f"{stem}.json").read_text())
        assert data["imageData"] is None and not Path(data["imagePath"]).is_absolute()
        cls, _ = shapes_to_label((item.height, item.width), label_file.shapes, {"cat": 1, "dog": 2})
        filled = ndimage_fill(item.objects[0].mask)
        assert iou(cls == item.objects[0].class_id, filled) >= 0.99
        (back,) = import_labelme_file(tmp_path / f"{stem}.json").objects
        assert iou(back.mask, filled) >= 0.99


def test_png_and_instance_round_trip_exact(annotated, tmp_path):
    assert _export(annotated, tmp_path / "a", "instance") == 0
    back = import_mask_folder(tmp_path / "a", photos=annotated)
    truth = _truth(annotated)
    for item in back:
        assert np.array_equal(item.label_map(), truth[item.photo.stem].label_map())
    assert annotations_main(["--from", f"png:{tmp_path / 'a'}", "--output", str(tmp_path / "b"), "--format", "instance"]) == 0
    for path in sorted((tmp_path / "a").glob("*.png")):
        assert np.array_equal(load_mask(path), load_mask(tmp_path / "b" / path.name))


def test_cutout_rgba(annotated, tmp_path):
    assert _export(annotated, tmp_path, "cutout") == 0
    from PIL import Image

    cutouts = sorted(tmp_path.glob("*.png"))
    assert len(cutouts) == 3
    with Image.open(cutouts[0]) as image:
        assert image.mode == "RGBA"


def test_refuses_foreign_files_and_reruns(annotated, tmp_path, capsys):
    assert _export(annotated, tmp_path, "labelme") == 0
    assert _export(annotated, tmp_path, "labelme") == 0  # our own files are replaced
    stem = sorted(_truth(annotated))[0]
    (tmp_path / f"{stem}.json").write_text("{}")  # edited by someone else
    assert _export(annotated, tmp_path, "labelme") == 2
    assert "--overwrite" in capsys.readouterr().err
    assert _export(annotated, tmp_path, "labelme", "--overwrite") == 0


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("annotations.json", "{not json", "not valid JSON"),
        ("annotations.json", json.dumps({"images": [{"id": 1, "file_name": "a.jpg", "height": 10**6, "width": 10**6}],
                                          "annotations": [], "categories": []}), "over the 150 MP limit"),
        ("annotations.json", json.dumps({"images": [{"id": 1, "file_name": "a.jpg", "height": 4, "width": 4}],
                                          "annotations": [{"image_id": 1, "category_id": 1, "segmentation": {"size": [4, 4], "counts": "99"}}],
                                          "categories": [{"id": 1, "name": "cat"}]}), "RLE runs do not cover"),
        ("annotations.json", json.dumps({"images": [{"id": 1, "file_name": "a.jpg", "height": 4, "width": 4}],
                                          "annotations": [{"image_id": 1, "category_id": 1, "segmentation": [[0, 0, 1, 1]]}],
                                          "categories": [{"id": 1, "name": "horse"}]}), "is not cat or dog"),
    ],
)
def test_malformed_coco_is_one_line(tmp_path, name, content, expected):
    (tmp_path / name).write_text(content)
    with pytest.raises(FormatError) as error:
        import_coco(tmp_path / name)
    assert expected in str(error.value) and "\n" not in str(error.value) and name in str(error.value)


def test_malformed_yolo_and_labelme(tmp_path, pet_photos, capsys):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    shutil.copy(pet_photos[0], tmp_path / "images" / "a.jpg")
    (tmp_path / "labels" / "a.txt").write_text("0 0.1 0.1 0.5 nan 0.3 0.9\n")
    with pytest.raises(FormatError, match="a.txt: line 1: coordinates must be finite"):
        import_yolo(tmp_path)
    (tmp_path / "x.json").write_text(json.dumps({"shapes": [], "imagePath": "a.jpg", "imageHeight": 5, "imageWidth": 5}))
    assert annotations_main(["--from", f"labelme:{tmp_path / 'x.json'}", "--output", str(tmp_path / "o"), "--format", "png"]) == 0
    (tmp_path / "images" / "x.json").write_text(json.dumps({"shapes": [], "imagePath": "a.jpg", "imageHeight": 5, "imageWidth": 5}))
    assert annotations_main(["--from", f"labelme:{tmp_path / 'images' / 'x.json'}", "--output", str(tmp_path / "o"), "--format", "png"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "x.json: annotation is 5x5 but photo a.jpg is" in err


def test_neutral_structure_label_map():
    a = np.zeros((4, 4), bool)
    a[:2] = True
    item = PhotoObjects(Path("p.jpg"), 4, 4, [LabelledMask(CAT, a), LabelledMask(DOG, np.eye(4, dtype=bool))])
    assert item.label_map()[0, 0] == DOG and item.instance_map()[1, 1] == 2 and item.objects[0].bbox() == [0, 0, 4, 2]


def test_a_photo_that_is_no_image_is_one_plain_line_in_the_export(annotated, tmp_path, capsys):
    """A file named like a photo that is no image: its failure names it once and says what it is."""
    folder = tmp_path / "photos"
    shutil.copytree(annotated, folder)
    (folder / "notes.jpg").write_text("not a photo")
    _export(folder, tmp_path / "out", "coco")
    captured = capsys.readouterr()
    lines = [line.strip() for line in (captured.out + captured.err).splitlines() if "notes.jpg" in line]
    assert lines == ["failed: notes.jpg: not an image, or an unsupported format"]
