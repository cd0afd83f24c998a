"""Which files batch export reads as photos, and which it may write over.

Photos are regular image files only: hidden files, anything in ``.petseg/``, ``*_mask.png`` /
``*_mask_colour.png`` and PNGs written by petseg-export are never read as photos. Exported PNGs
carry the text chunk ``Software: petseg-export``; an existing file at a mask's name is replaced
only when it carries that mark or is empty, unless the user asks to overwrite.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from PIL import Image

from models.errors import one_line
from models.images import IMAGE_SUFFIXES
from petseg_desktop.sidecar import SIDECAR_FOLDER

EXPORT_MARK = {"Software": "petseg-export"}  # PNG text chunk on every exported mask
APP_MARK = {"Software": "petseg"}  # PNG text chunk on every mask the app writes for an annotation
MASK_SUFFIXES = {"png": "_mask", "color": "_mask_colour"}  # mask names beside the photos (output = input)
TEMP_NAME = re.compile(r"^\..+-[0-9a-f]{16}\.tmp$")  # models.files.atomic_path's temp files
STALE_TEMP_AGE_S = 30.0  # a temp file untouched this long belongs to a killed run


class ExportSetupError(ValueError):
    """The export cannot start (unusable output, existing COCO file, bad device); one-line message."""


def has_png_mark(path: Path, *marks: dict[str, str]) -> bool:
    """Whether ``path`` is a PNG whose text chunks hold one of ``marks`` (header only; False if unreadable)."""
    if not path.is_file():
        return False  # never open a FIFO
    try:
        with Image.open(path) as image:
            info = image.info if image.format == "PNG" else {}
    except Exception:  # noqa: BLE001 - unreadable: not ours
        return False
    return any(all(info.get(k) == v for k, v in mark.items()) for mark in marks)


def written_by_export(path: Path) -> bool:
    """Whether ``path`` is a PNG carrying petseg-export's mark (read from its header only)."""
    return has_png_mark(path, EXPORT_MARK)


def annotated_in_app(path: Path) -> bool:
    """Whether ``path`` is a mask the app wrote for an annotation (its mark, read from the header only)."""
    return has_png_mark(path, APP_MARK)


def readable_image(path: Path) -> bool:
    """Whether ``path`` is a non-empty image whose data checks out (PNG chunk CRCs and the like)."""
    if not path.is_file():
        return False  # never open a FIFO
    try:
        with Image.open(path) as image:
            image.verify()
        return True
    except Exception:  # noqa: BLE001 - undecodable counts as missing
        return False


def not_a_photo(path: Path) -> str | None:
    """Why ``path`` must not be read as a photo (it is no regular file, or it is PetSeg's), or None."""
    if SIDECAR_FOLDER in path.parts:
        return f"inside PetSeg's {SIDECAR_FOLDER} folder, not a photo"
    if path.is_symlink() and not path.exists():
        return "broken link, not a photo"
    if path.is_dir():
        return "a folder, not a photo"
    if not path.is_file():
        return "not a regular file (a FIFO, socket or device), not opened"
    if path.name.startswith("."):
        return "hidden file, not a photo"
    if any(path.stem.endswith(suffix) for suffix in MASK_SUFFIXES.values()):
        return "named like a PetSeg mask (*_mask.png, *_mask_colour.png), not a photo"
    if path.suffix.lower() == ".png" and written_by_export(path):
        return "a mask written by petseg-export, not a photo"
    return None


def _folder_photos(folder: Path) -> Iterator[Path]:
    """The photos directly in ``folder``: files with an image suffix that :func:`not_a_photo` accepts."""
    for path in folder.iterdir():
        if path.suffix.lower() in IMAGE_SUFFIXES and not_a_photo(path) is None:
            yield path


def collect_inputs(paths: Iterable[str | Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Photos named by ``paths`` (files as given, folders by their photos; sorted, no repeats) and the
    named paths that are not photos, each with a one-line reason (a folder named like a photo,
    ``x.jpg/``, is one: a shell glob such as ``photos/*.jpg`` names it by mistake).

    Raises FileNotFoundError naming the first path that does not exist at all.
    """
    found: set[Path] = set()
    rejected: dict[Path, str] = {}
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir() and path.suffix.lower() not in IMAGE_SUFFIXES and SIDECAR_FOLDER not in path.parts:
            found.update(_folder_photos(path))
        elif not os.path.lexists(path):
            raise FileNotFoundError(f"no such file or folder: {path}")
        elif (reason := not_a_photo(path)) is not None:
            rejected[path] = reason
        else:
            found.add(path)
    return sorted(found), sorted(rejected.items())


def expand_inputs(paths: Iterable[str | Path]) -> list[Path]:
    """The photos of :func:`collect_inputs`, without the rejected files."""
    return collect_inputs(paths)[0]


def prepare_output(output_dir: Path) -> None:
    """Create ``output_dir`` and prove it writable by writing and removing a probe file.

    Raises ExportSetupError with a one-line reason (a file in the way, no permission, read-only).
    """
    if output_dir.exists() and not output_dir.is_dir():
        raise ExportSetupError(f"output {output_dir} is an existing file, not a folder")
    probe = output_dir / f".petseg-probe-{secrets.token_hex(8)}.tmp"
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
    except OSError as error:
        raise ExportSetupError(f"output {output_dir} is not writable: {error.strerror or one_line(error)}") from None
    finally:
        try:
            probe.unlink(missing_ok=True)
        except OSError:
            pass


def remove_stale_temp_files(output_dir: Path, min_age_s: float = STALE_TEMP_AGE_S) -> list[Path]:
    """Remove the temp files a killed run left in ``output_dir`` (untouched for ``min_age_s``)."""
    removed = []
    now = time.time()
    for path in output_dir.iterdir():
        try:
            if TEMP_NAME.match(path.name) and path.is_file() and now - path.stat().st_mtime >= min_age_s:
                path.unlink()
                removed.append(path)
        except OSError:
            continue  # gone meanwhile, or not ours to remove
    return removed


def replace_refusal(target: Path, overwrite: bool) -> str | None:
    """Why the mask ``target`` must not be written over, or None when it is free or may be replaced."""
    if not os.path.lexists(target):
        return None
    if target.is_dir() or (target.exists() and not target.is_file()):
        return f"{target.name} exists and is not a file"
    if overwrite or target.stat().st_size == 0 or written_by_export(target):
        return None
    return f"{target.name} exists and PetSeg did not write it: kept (--overwrite, or the dialog's Replace box, replaces it)"


def mask_suffix(photos: Sequence[Path], output_dir: Path, fmt: str) -> str:
    """The suffix after a mask's stem: MASK_SUFFIXES[fmt] when ``output_dir`` holds any of
    ``photos`` (output = input), else none (``<stem>.png`` in a folder of masks)."""
    if fmt not in MASK_SUFFIXES or not output_dir.is_dir():
        return ""
    folders = {photo.parent for photo in photos}
    return MASK_SUFFIXES[fmt] if any(output_dir.samefile(f) for f in folders if f.is_dir()) else ""
