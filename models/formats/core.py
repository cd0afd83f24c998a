"""The neutral structure every format converts to and from, and the checks importers share."""

from __future__ import annotations

import json
import math
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from models.classes import CLASS_NAMES, PET_CLASSES
from models.errors import one_line
from models.files import atomic_path
from models.images import IMAGE_SUFFIXES, MAX_PIXELS

MAX_JSON_BYTES = 1024 * 2**20  # a COCO file of a large data set; larger is refused before reading
MAX_TEXT_BYTES = 64 * 2**20  # one YOLO label file or a dataset YAML
CLASS_IDS = {CLASS_NAMES[cid]: cid for cid in PET_CLASSES}  # "cat" -> 1, "dog" -> 2
EXIF_ORIENTATION = 0x0112
EXIF_TURNED = (5, 6, 7, 8)  # orientations turned by 90 degrees: width and height swap


class FormatError(ValueError):
    """Malformed or unsupported annotation input; ``str(error)`` is one line naming the file."""

    def __init__(self, path: str | Path, what: str) -> None:
        super().__init__(" ".join(f"{Path(path).name}: {what}".split()))
        self.path = Path(path)


@dataclass
class LabelledMask:
    """One object: a pet class id (models.classes CAT or DOG) and its HxW boolean mask."""

    class_id: int
    mask: np.ndarray

    @property
    def class_name(self) -> str:
        return CLASS_NAMES[self.class_id]

    def bbox(self) -> list[int]:
        """``[x, y, width, height]`` of the mask's pixels (COCO's bbox; zeros when empty)."""
        cols, rows = np.flatnonzero(self.mask.any(axis=0)), np.flatnonzero(self.mask.any(axis=1))
        if cols.size == 0:
            return [0, 0, 0, 0]
        x, y = int(cols[0]), int(rows[0])
        return [x, y, int(cols[-1]) + 1 - x, int(rows[-1]) + 1 - y]


@dataclass
class PhotoObjects:
    """One photo (its path or name), its size, and its objects in drawing order (later on top)."""

    photo: Path
    height: int
    width: int
    objects: list[LabelledMask] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    def label_map(self) -> np.ndarray:
        """HxW uint8 class map (0 background); later objects are painted over earlier ones."""
        labels = np.zeros(self.shape, dtype=np.uint8)
        for obj in self.objects:
            labels[obj.mask] = obj.class_id
        return labels

    def instance_map(self) -> np.ndarray:
        """HxW uint8 map of object numbers 1..N in drawing order (0 background)."""
        if len(self.objects) > 255:
            raise ValueError(f"{self.photo.name}: {len(self.objects)} objects, an instance PNG holds 255")
        instances = np.zeros(self.shape, dtype=np.uint8)
        for number, obj in enumerate(self.objects, start=1):
            instances[obj.mask] = number
        return instances


@dataclass
class OutputFile:
    """A file an exporter makes: ``path`` relative to the output folder; ``write(target)`` writes it."""

    path: Path
    write: Callable[[Path], None]


def write_text(text: str) -> Callable[[Path], None]:
    """A writer of ``text`` as UTF-8, atomically (for :class:`OutputFile`)."""

    def write(target: Path) -> None:
        with atomic_path(target) as tmp:
            tmp.write_text(text, encoding="utf-8")

    return write


def write_json(doc: Any) -> Callable[[Path], None]:
    """A writer of ``doc`` as compact JSON, atomically."""
    return write_text(json.dumps(doc))


def find_photo(folder: Path, name: str) -> Path | None:
    """``folder/name`` when it is a file, else a file in ``folder`` with the same stem and an image suffix."""
    direct = folder / name
    if direct.is_file():
        return direct
    stem = Path(name).stem
    for suffix in IMAGE_SUFFIXES:
        for candidate in (folder / f"{stem}{suffix}", folder / f"{stem}{suffix.upper()}"):
            if candidate.is_file():
                return candidate
    return None


# --------------------------------------------------------------------------- checks for importers
def class_id_of(name: Any, path: Path) -> int:
    """The class id of a label name ("cat"/"dog", any case); FormatError otherwise."""
    if isinstance(name, str) and name.strip().lower() in CLASS_IDS:
        return CLASS_IDS[name.strip().lower()]
    text = repr(name) if len(repr(name)) <= 40 else repr(name)[:37] + "..."
    raise FormatError(path, f"label {text} is not cat or dog")


def check_size(height: Any, width: Any, path: Path, where: str = "image size") -> tuple[int, int]:
    """``(height, width)`` when both are whole numbers >= 1 within MAX_PIXELS; FormatError otherwise."""
    ok = all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in (height, width))
    if not ok:
        raise FormatError(path, f"{where}: expected whole numbers >= 1, found {height!r} x {width!r}")
    if height * width > MAX_PIXELS:
        raise FormatError(path, f"{where}: {width}x{height} is over the {MAX_PIXELS // 1_000_000} MP limit")
    return height, width


def check_finite_points(values: Any, path: Path, where: str) -> np.ndarray:
    """A flat list of numbers as an Nx2 float array; FormatError unless all are finite and paired."""
    if not isinstance(values, list) or len(values) % 2 or not values:
        raise FormatError(path, f"{where}: expected a non-empty list of x, y pairs")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
        raise FormatError(path, f"{where}: coordinates must be finite numbers")
    return np.asarray(values, dtype=np.float64).reshape(-1, 2)


def check_regular_file(path: Path) -> None:
    """FormatError unless ``path`` is an existing regular file (never open a pipe or a device)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        raise FormatError(path, "file not found") from None
    if not stat.S_ISREG(mode):
        raise FormatError(path, "not a regular file")


def read_bounded(path: Path, limit: int) -> bytes:
    """The bytes of ``path``, refusing files over ``limit`` bytes (checked before and while reading)."""
    check_regular_file(path)
    try:
        size = path.stat().st_size
        if size > limit:
            raise FormatError(path, f"larger than {limit // 2**20} MB, not read")
        with open(path, "rb") as f:
            data = f.read(size + 1)  # read(n) allocates n bytes up front: the file's size, not the limit
    except OSError as error:
        raise FormatError(path, f"cannot read ({error.strerror or type(error).__name__})") from None
    if len(data) > limit:
        raise FormatError(path, f"larger than {limit // 2**20} MB, not read")
    return data


def read_json(path: Path, limit: int = MAX_JSON_BYTES) -> Any:
    """The JSON document at ``path`` (size-bounded); FormatError for anything unreadable."""
    try:
        return json.loads(read_bounded(path, limit).decode("utf-8"))
    except (ValueError, RecursionError) as error:
        if isinstance(error, FormatError):
            raise
        raise FormatError(path, f"not valid JSON ({' '.join(str(error).split())[:80]})") from None


def read_text(path: Path, limit: int = MAX_TEXT_BYTES) -> str:
    """The UTF-8 text of ``path`` (size-bounded); FormatError for anything unreadable."""
    try:
        return read_bounded(path, limit).decode("utf-8")
    except UnicodeDecodeError:
        raise FormatError(path, "not UTF-8 text") from None


def photo_size(path: Path) -> tuple[int, int]:
    """``(height, width)`` of an image as PetSeg shows it (EXIF orientation applied), from its header."""
    check_regular_file(path)
    try:
        with Image.open(path) as image:
            width, height = image.size
            if image.getexif().get(EXIF_ORIENTATION) in EXIF_TURNED:
                width, height = height, width
    except Image.UnidentifiedImageError:
        raise FormatError(path, "not an image, or an unsupported format") from None
    except Exception as error:  # noqa: BLE001 - any undecodable header is one line
        raise FormatError(path, f"cannot read the image size ({one_line(error)})") from None
    return height, width


def check_photo_size(photo: Path | None, shape: tuple[int, int], path: Path) -> None:
    """FormatError when ``photo`` exists and its size is not ``shape`` (the annotation's)."""
    if photo is None or not photo.is_file():
        return
    actual = photo_size(photo)
    if actual != tuple(shape):
        raise FormatError(
            path, f"annotation is {shape[1]}x{shape[0]} but photo {photo.name} is {actual[1]}x{actual[0]}"
        )
