"""Ultralytics YOLO segmentation: ``labels/<stem>.txt`` per photo, ``classes.txt``, ``dataset.yaml``.

Each label line is ``class x1 y1 x2 y2 ...`` with coordinates divided by the image width and
height (Ultralytics' format; boundary pixel centres, x + 0.5, so that Ultralytics' truncation to
whole pixels gives the same pixels back); classes are 0 cat, 1 dog. Ultralytics reads one line as one
instance, so each object is one line: an object in several parts, or with holes, has its rings
joined by zero-width bridges (as Ultralytics' own COCO converter joins parts), and
``cv2.fillPoly`` (how Ultralytics rasterises masks) gives the holes back open. Photos are copied to
``images/`` so that Ultralytics finds ``labels/`` beside them; ``dataset.yaml`` names the folder
as ``path`` and ``images`` as both ``train`` and ``val``.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from models.classes import CLASS_NAMES, PET_CLASSES
from models.files import atomic_path
from models.formats.core import (
    FormatError,
    LabelledMask,
    OutputFile,
    PhotoObjects,
    check_finite_points,
    class_id_of,
    find_photo,
    photo_size,
    read_text,
    write_text,
)
from models.formats.polygons import join_parts, mask_parts, rings_to_mask

YAML_FILE = "dataset.yaml"
CLASSES_FILE = "classes.txt"
YOLO_NAMES = [CLASS_NAMES[cid] for cid in PET_CLASSES]  # YOLO class i is PET_CLASSES[i]
MAX_LABEL_LINES = 10_000


def label_line(obj: LabelledMask, height: int, width: int) -> str | None:
    """The label line of one object (None when the mask is empty)."""
    parts = mask_parts(obj.mask)
    if not parts:
        return None
    ring = (join_parts(parts) + 0.5) / (width, height)  # pixel centres; Ultralytics truncates back
    coords = " ".join(f"{v:.6f}".rstrip("0").rstrip(".") for v in ring.ravel())
    return f"{PET_CLASSES.index(obj.class_id)} {coords}"


def dataset_yaml() -> str:
    names = "".join(f"  {i}: {name}\n" for i, name in enumerate(YOLO_NAMES))
    return f"path: .\ntrain: images\nval: images\nnames:\n{names}"


def _copier(source: Path):
    def write(target: Path) -> None:
        with atomic_path(target) as tmp:
            shutil.copyfile(source, tmp)

    return write


def export_yolo(items: Sequence[PhotoObjects]) -> list[OutputFile]:
    """Label files, copied photos, the classes file and the dataset YAML of ``items``."""
    files = [
        OutputFile(Path(YAML_FILE), write_text(dataset_yaml())),
        OutputFile(Path(CLASSES_FILE), write_text("".join(f"{n}\n" for n in YOLO_NAMES))),
    ]
    for item in items:
        lines = [line for obj in item.objects if (line := label_line(obj, item.height, item.width))]
        files.append(OutputFile(Path("labels") / f"{item.photo.stem}.txt", write_text("".join(f"{l}\n" for l in lines))))
        files.append(OutputFile(Path("images") / item.photo.name, _copier(item.photo)))
    return files


def read_names(folder: Path) -> list[str]:
    """Class names from ``classes.txt`` or the dataset YAML's ``names`` (a mapping ``0: cat`` or a
    flow list ``[cat, dog]``); PetSeg's own when neither is there."""
    if (folder / CLASSES_FILE).is_file():
        return [line.strip() for line in read_text(folder / CLASSES_FILE).splitlines() if line.strip()]
    for yaml in (folder / YAML_FILE, folder / "data.yaml"):
        if yaml.is_file():
            text = read_text(yaml)
            flow = re.search(r"^names:\s*\[(.*)\]", text, re.M)
            if flow:
                return [n.strip().strip("'\"") for n in flow.group(1).split(",")]
            block = re.search(r"^names:\s*\n((?:[ \t]+\S.*\n?)+)", text, re.M)
            if block:
                return [line.split(":", 1)[1].strip().strip("'\"") for line in block.group(1).splitlines()]
            raise FormatError(yaml, "no names: mapping or [list] found")
    return YOLO_NAMES


def _parse_labels(path: Path, shape: tuple[int, int], names: list[str]) -> list[LabelledMask]:
    h, w = shape
    objects = []
    lines = read_text(path).splitlines()
    if len(lines) > MAX_LABEL_LINES:
        raise FormatError(path, f"more than {MAX_LABEL_LINES} lines")
    for n, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        if not fields[0].isdigit() or int(fields[0]) >= len(names):
            raise FormatError(path, f"line {n}: class {fields[0]!r} is not one of 0..{len(names) - 1}")
        try:
            values = [float(v) for v in fields[1:]]
        except ValueError:
            raise FormatError(path, f"line {n}: coordinates must be numbers") from None
        ring = check_finite_points(values, path, f"line {n}")
        if len(ring) < 3:
            raise FormatError(path, f"line {n}: a polygon needs at least 3 points (boxes are not masks)")
        if (ring < -0.01).any() or (ring > 1.01).any():
            raise FormatError(path, f"line {n}: coordinates must be normalised to 0..1")
        objects.append(LabelledMask(class_id_of(names[int(fields[0])], path), rings_to_mask([np.floor(ring * (w, h))], shape)))
    return objects


def import_yolo(folder: Path) -> list[PhotoObjects]:
    """A YOLO segmentation data set: ``images/`` and ``labels/`` (or both in ``folder``); each
    label file's photo gives the size the normalised coordinates are scaled by."""
    folder = Path(folder)
    names = read_names(folder)
    labels = folder / "labels" if (folder / "labels").is_dir() else folder
    images = folder / "images" if (folder / "images").is_dir() else folder
    items = []
    for path in sorted(labels.glob("*.txt")):
        if path.name == CLASSES_FILE:
            continue
        photo = find_photo(images, path.stem)
        if photo is None:
            raise FormatError(path, f"no photo named {path.stem}.* in {images}")
        shape = photo_size(photo)
        items.append(PhotoObjects(photo, *shape, _parse_labels(path, shape, names)))
    return items

