"""The sidecar file: an :class:`ImageAnnotation` saved as JSON beside its image.

It autosaves as ``<image folder>/.petseg/<image name>.json`` (or, when that folder is read-only or
``.petseg`` is not a real folder, under the user data folder), with masks run-length encoded inside
the JSON so one atomic write saves all. A sidecar is checked as a whole (size, types, run lengths,
the photo's fingerprint) before anything is decoded, so a bad file costs no memory and raises one
:class:`SidecarError` line. Pure Python and NumPy (no Qt, no torch).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from models.classes import CLASS_NAMES, PET_CLASSES
from models.files import atomic_path
from petseg_desktop.annotation import AnnotationObject, ImageAnnotation, Prompts, Strokes

SIDECAR_FOLDER = ".petseg"
FORMAT = "petseg-annotation"
FORMAT_VERSION = 1
CLASS_IDS = {CLASS_NAMES[cid]: cid for cid in PET_CLASSES}
MAX_SIDECAR_BYTES = 64 * 2**20  # far above any real annotation (RLE of a 50 MP photo is a few MB)
FINGERPRINT_CHUNK = 64 * 2**10


class SidecarError(ValueError):
    """A sidecar file that cannot be read or does not fit its image (``path``: the file, if known)."""

    def __init__(self, message: str, path: Path | None = None) -> None:
        super().__init__(" ".join(str(message).split()))  # always one line
        self.path = path
        self.kept: Path | None = None  # where the bad file was set aside (see open_document)


def _fail(where: str, what: str) -> NoReturn:
    raise SidecarError(f"{where}: {what}" if where else what)


# --------------------------------------------------------------------------- photo fingerprint
def photo_fingerprint(image_path: Path) -> dict[str, Any] | None:
    """Byte size and SHA-1 of the first and last 64 KiB: survives copying, changes with the photo."""
    try:
        with open(image_path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            digest = hashlib.sha1(f.read(FINGERPRINT_CHUNK))
            if size > FINGERPRINT_CHUNK:
                f.seek(max(size - FINGERPRINT_CHUNK, FINGERPRINT_CHUNK))
                digest.update(f.read(FINGERPRINT_CHUNK))
    except OSError:
        return None
    return {"bytes": size, "sha1": digest.hexdigest()}


# --------------------------------------------------------------------------- checks (before decoding)
def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def _short(value: Any) -> str:
    """``repr`` cut to a length that fits in a one-line message."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _check_type(value: Any, kind: type | tuple[type, ...], where: str, what: str) -> None:
    if not isinstance(value, kind):
        _fail(where, f"expected {what}, found {type(value).__name__}")


def check_rle(rle: Any, shape: tuple[int, int] | None, where: str = "mask") -> None:
    """Raise SidecarError unless ``rle`` is run-length data of ``shape`` (any size when None)."""
    _check_type(rle, dict, where, "an object with size and counts")
    size, counts = rle.get("size"), rle.get("counts")
    if not (isinstance(size, list) and len(size) == 2 and all(_is_int(v) and v >= 0 for v in size)):
        _fail(f"{where}.size", "expected [height, width]")
    if shape is not None and tuple(size) != tuple(shape):
        _fail(f"{where}.size", f"{size[1]}x{size[0]} mask for a {shape[1]}x{shape[0]} photo")
    _check_type(counts, list, f"{where}.counts", "a list of run lengths")
    if not all(_is_int(c) and c >= 0 for c in counts):
        _fail(f"{where}.counts", "run lengths must be whole numbers >= 0")
    if sum(counts) != size[0] * size[1]:
        _fail(f"{where}.counts", f"runs cover {sum(counts)} pixels, the mask has {size[0] * size[1]}")


def _list_at(data: dict[str, Any], key: str, where: str) -> list[Any]:
    """``data[key]`` checked to be a list (missing or null: empty)."""
    value = data.get(key)
    if value is None:
        return []
    _check_type(value, list, where, "a list")
    return value


def _check_prompts(data: Any, where: str, shape: tuple[int, int]) -> None:
    if data is None:
        return
    _check_type(data, dict, where, "an object with points and box")
    h, w = shape
    box = data.get("box")
    for i, point in enumerate(_list_at(data, "points", f"{where}.points")):
        if not (isinstance(point, list) and len(point) == 3 and all(map(_is_number, point[:2]))
                and point[2] in (0, 1) and not isinstance(point[2], float)):
            _fail(f"{where}.points[{i}]", "expected [x, y, 1 or 0]")
        if not (0 <= point[0] < w and 0 <= point[1] < h):
            _fail(f"{where}.points[{i}]", f"({point[0]}, {point[1]}) is outside the {w}x{h} photo")
    if box is not None:
        if not (isinstance(box, list) and len(box) == 4 and all(map(_is_number, box))):
            _fail(f"{where}.box", "expected [x0, y0, x1, y1] or null")
        if not (0 <= box[0] <= w and 0 <= box[2] <= w and 0 <= box[1] <= h and 0 <= box[3] <= h):
            _fail(f"{where}.box", f"{box} is outside the {w}x{h} photo")


def _check_strokes(data: Any, where: str, shape: tuple[int, int]) -> None:
    """Optional ``strokes``: ``{"painted": rle or null, "erased": rle or null}`` (older files: absent)."""
    if data is None:
        return
    _check_type(data, dict, where, "an object with painted and erased")
    for key in ("painted", "erased"):
        if data.get(key) is not None:
            check_rle(data[key], shape, f"{where}.{key}")


def _check_object(data: Any, where: str, shape: tuple[int, int]) -> None:
    _check_type(data, dict, where, "an object")
    if "class_id" in data:
        if not (_is_int(data["class_id"]) and data["class_id"] in PET_CLASSES):
            _fail(f"{where}.class_id", f"unknown class {_short(data['class_id'])}")
    elif data.get("class") not in CLASS_IDS:
        _fail(f"{where}.class", f"unknown class {_short(data.get('class'))}")
    _check_type(data.get("source", ""), str, f"{where}.source", "text")
    _check_prompts(data.get("prompts"), f"{where}.prompts", shape)
    check_rle(data.get("mask"), shape, f"{where}.mask")
    _check_strokes(data.get("strokes"), f"{where}.strokes", shape)


def _check_current(data: Any, shape: tuple[int, int]) -> None:
    if data is None:
        return
    _check_type(data, dict, "current", "an object")
    _check_prompts(data.get("prompts"), "current.prompts", shape)
    if data.get("mask") is not None:
        check_rle(data["mask"], shape, "current.mask")
    _check_strokes(data.get("strokes"), "current.strokes", shape)
    editing = data.get("editing")
    if editing is not None and not (isinstance(editing, list) and len(editing) == 2 and all(map(_is_int, editing))):
        _fail("current.editing", "expected [object index, class id] or null")


def check_document(data: Any, shape: tuple[int, int], fingerprint: dict[str, Any] | None = None) -> None:
    """Raise SidecarError (``where: what``) unless ``data`` is a PetSeg annotation of this photo.

    The size is checked first and every run length before any mask is decoded, so nothing large is
    allocated for a bad file. A sidecar without a fingerprint (older files) matches any photo.
    """
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        _fail("", "not a PetSeg annotation file")
    version = data.get("version")
    if not (_is_int(version) and 1 <= version <= FORMAT_VERSION):
        _fail("version", f"format version {_short(version)} is not one this PetSeg reads (1..{FORMAT_VERSION})")
    height, width = data.get("height"), data.get("width")
    if not (_is_int(height) and _is_int(width)):
        _fail("width/height", f"expected whole numbers, found {_short(width)}x{_short(height)}")
    if (height, width) != tuple(shape):
        _fail("", f"annotation is for a {width}x{height} image, the photo is {shape[1]}x{shape[0]}")
    saved = data.get("photo")
    if saved is not None:
        if not (isinstance(saved, dict) and _is_int(saved.get("bytes")) and isinstance(saved.get("sha1"), str)):
            _fail("photo", "expected {bytes, sha1}")
        if fingerprint is not None and (saved["bytes"], saved["sha1"]) != (fingerprint["bytes"], fingerprint["sha1"]):
            _fail("", "the photo changed since it was annotated (another photo of the same name and size?)")
    for i, obj in enumerate(_list_at(data, "objects", "objects")):
        _check_object(obj, f"objects[{i}]", shape)
    _check_current(data.get("current"), shape)
    _check_mask_written(data.get("mask_written"))


def _check_mask_written(data: Any) -> None:
    """The optional ``mask_written``: ``{"objects_sha1": 40 hex digits}`` of the objects last written as a mask."""
    if data is None:
        return
    digest = data.get("objects_sha1") if isinstance(data, dict) else None
    if not (isinstance(digest, str) and len(digest) == 40 and all(c in "0123456789abcdef" for c in digest)):
        _fail("mask_written", "expected {objects_sha1: 40 hex digits}")


# --------------------------------------------------------------------------- run-length encoding
def rle_encode(mask: np.ndarray) -> dict[str, Any]:
    """Row-major run lengths of a boolean mask, starting with a (possibly empty) run of False."""
    flat = np.ascontiguousarray(mask, dtype=bool).ravel()
    if flat.size == 0:
        return {"size": list(mask.shape), "counts": []}
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    counts = np.diff(np.concatenate(([0], change, [flat.size])))
    if flat[0]:
        counts = np.concatenate(([0], counts))
    return {"size": [int(s) for s in mask.shape], "counts": [int(c) for c in counts]}


def rle_decode(rle: dict[str, Any]) -> np.ndarray:
    """Inverse of :func:`rle_encode`; raises SidecarError on inconsistent data (before allocating)."""
    check_rle(rle, None)
    h, w = rle["size"]
    values = np.arange(len(rle["counts"])) % 2 == 1
    return np.repeat(values, np.asarray(rle["counts"], dtype=np.int64)).reshape(h, w)


# --------------------------------------------------------------------------- JSON of the document
def prompts_to_json(prompts: Prompts) -> dict[str, Any]:
    return {"points": [[x, y, int(p)] for x, y, p in prompts.points], "box": list(prompts.box) if prompts.box else None}


def prompts_from_json(data: dict[str, Any] | None) -> Prompts:
    """Prompts of checked JSON (see :func:`check_document`)."""
    data = data or {}
    points = [(int(x), int(y), bool(p)) for x, y, p in data.get("points") or []]
    box = data.get("box")
    return Prompts(points, tuple(int(v) for v in box) if box else None)


def strokes_to_json(strokes: Strokes) -> dict[str, Any] | None:
    """The painted and erased pixels run-length encoded (None without strokes: the key is left out)."""
    if strokes.is_empty():
        return None
    return {key: None if mask is None else rle_encode(mask)
            for key, mask in (("painted", strokes.painted), ("erased", strokes.erased))}


def strokes_from_json(data: dict[str, Any] | None) -> Strokes:
    """Strokes of checked JSON (see :func:`check_document`); absent: none."""
    data = data or {}
    painted, erased = (None if data.get(key) is None else rle_decode(data[key]) for key in ("painted", "erased"))
    return Strokes(painted, erased)


def _with_strokes(data: dict[str, Any], strokes: Strokes) -> dict[str, Any]:
    """``data`` with a ``strokes`` key when there are strokes (sidecars without strokes stay as before)."""
    encoded = strokes_to_json(strokes)
    return data if encoded is None else {**data, "strokes": encoded}


def object_to_json(obj: AnnotationObject) -> dict[str, Any]:
    return _with_strokes({
        "class": obj.class_name,
        "class_id": obj.class_id,
        "source": obj.source,
        "prompts": prompts_to_json(obj.prompts),
        "mask": rle_encode(obj.mask),
    }, obj.strokes)


def object_from_json(data: dict[str, Any]) -> AnnotationObject:
    """An object of checked JSON (see :func:`check_document`)."""
    class_id = data["class_id"] if "class_id" in data else CLASS_IDS[data["class"]]
    return AnnotationObject(class_id, rle_decode(data["mask"]), prompts_from_json(data.get("prompts")),
                            data.get("source", "prompt"), strokes_from_json(data.get("strokes")))


def document_to_json(doc: ImageAnnotation, threshold: float = 0.5) -> dict[str, Any]:
    current = doc.current_mask(threshold)
    photo = doc.photo or photo_fingerprint(doc.image_path)
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "image": doc.image_path.name,
        "width": doc.width,
        "height": doc.height,
        **({"photo": photo} if photo else {}),
        "modified": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "objects": [object_to_json(obj) for obj in doc.objects],
        "current": _with_strokes({
            "prompts": prompts_to_json(doc.prompts),
            "mask": rle_encode(current) if current is not None else None,  # as shown: strokes included
            "editing": _editing_to_json(doc),
        }, doc.strokes),
        **({"mask_written": {"objects_sha1": doc.mask_digest}} if doc.mask_digest else {}),
    }


def document_from_json(
    data: Any, image_path: Path, shape: tuple[int, int], photo: dict[str, Any] | None = None
) -> ImageAnnotation:
    """The document in ``data`` after :func:`check_document`; ``photo`` is the photo's fingerprint."""
    check_document(data, shape, photo)
    doc = ImageAnnotation(Path(image_path), shape[0], shape[1], photo=photo)
    doc.objects = [object_from_json(o) for o in data.get("objects") or []]
    current = data.get("current") or {}
    doc.prompts = prompts_from_json(current.get("prompts"))
    if current.get("mask") is not None:
        doc.probabilities = rle_decode(current["mask"]).astype(np.float32)
    doc.strokes = strokes_from_json(current.get("strokes"))
    doc.editing = _editing_from_json(current.get("editing"), doc.objects)
    doc.mask_digest = (data.get("mask_written") or {}).get("objects_sha1")
    return doc


def _editing_to_json(doc: ImageAnnotation) -> list[int] | None:
    """``[index, class id]`` of the object being re-edited (the class guards against a stale index)."""
    if doc.editing is None or not 0 <= doc.editing < len(doc.objects):
        return None
    return [doc.editing, doc.objects[doc.editing].class_id]


def _editing_from_json(data: list[int] | None, objects: list[AnnotationObject]) -> int | None:
    """The checked ``[index, class id]`` as an index, or None when nothing or a stale object is named."""
    if data is None:
        return None
    index, class_id = data
    return index if 0 <= index < len(objects) and objects[index].class_id == class_id else None


# --------------------------------------------------------------------------- files
def save_document(doc: ImageAnnotation, path: Path | None = None, threshold: float = 0.5) -> Path:
    """Write the sidecar atomically; returns where it went (see :func:`sidecar_path`).

    The write replaces the file (a symlink there is replaced, never written through).
    """
    path = path or sidecar_path(doc.image_path)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(document_to_json(doc, threshold), f, separators=(",", ":"))
    return path


def read_sidecar(path: Path) -> Any:
    """The JSON of ``path``; SidecarError for a symlink, a file over MAX_SIDECAR_BYTES or bad JSON."""
    try:
        info = path.lstat()
        if path.is_symlink():
            raise SidecarError(f"{path.name}: a symbolic link, not followed", path)
        if info.st_size > MAX_SIDECAR_BYTES:
            raise SidecarError(f"{path.name}: {info.st_size / 2**20:.0f} MB, more than an annotation can be "
                               f"(limit {MAX_SIDECAR_BYTES // 2**20} MB)", path)
        with open(path, "rb") as f:
            raw = f.read(info.st_size + 1)  # read(n) allocates n bytes up front: never more than the file
        if len(raw) > info.st_size:
            raise SidecarError(f"{path.name}: grew while being read", path)
        return json.loads(raw.decode("utf-8"))
    except (OSError, ValueError, RecursionError) as error:  # ValueError: JSON, UTF-8, huge integers
        if isinstance(error, SidecarError):
            raise
        raise SidecarError(f"{path.name}: unreadable annotation ({error})", path) from None


def load_document(image_path: Path, shape: tuple[int, int]) -> ImageAnnotation:
    """The saved annotation of ``image_path`` if there is one, else an empty document.

    Raises SidecarError (with ``path`` set) when a sidecar exists but is corrupt, malformed, or
    belongs to another size or another photo.
    """
    image_path = Path(image_path)
    photo = photo_fingerprint(image_path)
    found = find_sidecar(image_path)
    if found is None:
        return ImageAnnotation(image_path, shape[0], shape[1], photo=photo)
    data = read_sidecar(found)
    try:
        return document_from_json(data, image_path, shape, photo)
    except SidecarError as problem:
        raise SidecarError(f"{found.name}: {problem}", found) from None


def set_aside(path: Path) -> Path | None:
    """Rename an unusable sidecar to ``<name>.bad-<timestamp>`` so autosave never overwrites it.

    Returns the new path, or None when it cannot be renamed.
    """
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{path.name}.bad-{stamp}")
    n = 1
    while os.path.lexists(target):
        n += 1
        target = path.with_name(f"{path.name}.bad-{stamp}-{n}")
    try:
        os.rename(path, target)
    except OSError:
        return None
    return target


def open_document(
    image_path: Path, shape: tuple[int, int], read_only: bool = False
) -> tuple[ImageAnnotation, SidecarError | None]:
    """:func:`load_document`, or an empty document and the problem when the sidecar is unusable.

    The bad file is set aside first (``problem.kept``) and the problem's text says where it went;
    with ``read_only`` (another instance writes this folder) it is left where it is.
    """
    try:
        return load_document(image_path, shape), None
    except SidecarError as problem:
        doc = ImageAnnotation(Path(image_path), shape[0], shape[1], photo=photo_fingerprint(Path(image_path)))
        kept = set_aside(problem.path) if problem.path is not None and not read_only else None
        if read_only:
            note = "left in place (read-only)"
        else:
            note = f"kept as {kept.name}" if kept else "left in place, not overwritten (renaming it failed)"
        reported = SidecarError(f"{problem}; opened without annotation, the old file is {note}", problem.path)
        reported.kept = kept
        return doc, reported


def has_objects(image_path: Path) -> bool:
    """Whether the sidecar of ``image_path`` exists and lists accepted objects (False if unreadable)."""
    found = find_sidecar(image_path)
    if found is None:
        return False
    try:
        data = read_sidecar(found)
    except SidecarError:
        return False
    return isinstance(data, dict) and isinstance(data.get("objects"), list) and bool(data["objects"])


# --------------------------------------------------------------------------- where sidecars live
def _folder_writable(folder: Path) -> bool:
    """Whether ``folder/.petseg`` can take sidecars: a real, writable folder (never a symlink) or creatable."""
    sidecars = folder / SIDECAR_FOLDER
    if sidecars.is_symlink():
        return False
    if sidecars.is_dir():
        return os.access(sidecars, os.W_OK | os.X_OK)
    return not os.path.lexists(sidecars) and os.access(folder, os.W_OK | os.X_OK)


def fallback_sidecar_dir(image_folder: Path) -> Path:
    """Where sidecars of a read-only folder go: the user data folder, keyed by the folder path."""
    from models.discovery import user_data_dir  # imported when needed: models.discovery imports torch

    key = hashlib.sha1(str(Path(image_folder).resolve()).encode("utf-8")).hexdigest()[:16]
    return user_data_dir() / "annotations" / f"{Path(image_folder).name}-{key}"


def sidecar_dir(image_folder: Path) -> Path:
    """Where the sidecars of the photos in ``image_folder`` are written: its ``.petseg/`` when usable."""
    image_folder = Path(image_folder)
    return image_folder / SIDECAR_FOLDER if _folder_writable(image_folder) else fallback_sidecar_dir(image_folder)


def sidecar_path(image_path: Path) -> Path:
    """Where the sidecar of ``image_path`` is written (see :func:`sidecar_dir`)."""
    image_path = Path(image_path)
    return sidecar_dir(image_path.parent) / f"{image_path.name}.json"


def find_sidecar(image_path: Path) -> Path | None:
    """The existing sidecar of ``image_path`` (beside it, or in the fallback folder), newest first.

    A symlinked ``.petseg`` is never looked into; a sidecar that is itself a symlink is returned
    (so it is reported and set aside, never followed).
    """
    image_path = Path(image_path)
    beside = image_path.parent / SIDECAR_FOLDER
    candidates = [fallback_sidecar_dir(image_path.parent) / f"{image_path.name}.json"]
    if not beside.is_symlink():
        candidates.insert(0, beside / f"{image_path.name}.json")
    existing = [p for p in candidates if p.is_symlink() or p.is_file()]
    if not existing:
        return None
    return max(existing, key=lambda p: p.lstat().st_mtime)
