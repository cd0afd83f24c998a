"""The files of Model > Improve on this folder: the annotated photos copied into a work folder in the
"folders" layout training reads, and a fine-tuned checkpoint copied into the user's checkpoint folder.

Nothing here touches the annotated folder itself: training reads copies, so the user may go on
annotating (or close the folder) while it runs.
"""

from __future__ import annotations

import re
import shutil
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

from models.errors import one_line
from models.files import atomic_path
from models.formats.core import FormatError, photo_size
from models.formats.png import load_mask_checked, objects_from_maps
from petseg_desktop.folder import mask_path
from petseg_desktop.mask_files import SAVED, mask_state

MIN_PHOTOS = 20  # fewer photos make a validation fifth too small to judge a model by


class CopyCancelled(Exception):
    """The copy was asked to stop (Cancel)."""


def saved_photos(photos: Sequence[Path], output_dir: Path | None) -> list[Path]:
    """The photos whose mask file is written and current (:data:`SAVED`), one per file stem."""
    chosen: dict[str, Path] = {}
    for photo in photos:
        if photo.stem not in chosen and mask_state(photo, output_dir) == SAVED:
            chosen[photo.stem] = photo  # a.jpg and a.png share one a_mask.png: train on it once
    return list(chosen.values())


def safe_name(name: str) -> str:
    """``name`` with anything but letters, digits, ``.``, ``_`` and ``-`` turned into ``-``."""
    return re.sub(r"[^\w.-]+", "-", name).strip("-.") or "photos"


def work_folder(folder: Path, when: datetime) -> Path:
    """Where a fine-tune of ``folder`` keeps its data copy and its training runs (outside the
    checkpoint search folders: only a model that beats the current one reaches the Model menu)."""
    from models.discovery import user_data_dir  # loads torch: not when the window's modules are imported

    return user_data_dir() / "finetune" / f"{safe_name(Path(folder).name)}-{when:%Y%m%d-%H%M%S}"


def copy_training_data(
    photos: Sequence[Path],
    output_dir: Path | None,
    data: Path,
    progress: Callable[[int, int, str], None],
    cancel: threading.Event,
) -> list[str]:
    """Copy each photo to ``data/images/`` and its mask to ``data/masks/<stem>_mask.png``, leaving out
    the photos whose mask cannot be trained on (:func:`mask_problem`); returns one line per photo left out.

    Raises :class:`CopyCancelled` when ``cancel`` is set, OSError when a copy fails.
    """
    images, masks = data / "images", data / "masks"
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(exist_ok=True)
    left_out = []
    for done, photo in enumerate(photos):
        if cancel.is_set():
            raise CopyCancelled("cancelled")
        progress(done, len(photos), photo.name)
        mask = mask_path(photo, output_dir)
        problem = mask_problem(photo, mask)
        if problem is not None:
            left_out.append(problem)
            continue
        shutil.copyfile(photo, images / photo.name)
        shutil.copyfile(mask, masks / f"{photo.stem}_mask.png")
    progress(len(photos), len(photos), "")
    return left_out


def mask_problem(photo: Path, mask: Path) -> str | None:
    """Why ``mask`` cannot be trained on as ``photo``'s (not its size, values that are not classes,
    unreadable), in one line; None when it can. The file list reads only headers; this decodes it."""
    try:
        objects_from_maps(load_mask_checked(mask, photo_size(photo), beside="photo"), None, mask)
    except (FormatError, OSError) as error:
        return one_line(error)
    return None


def install_checkpoint(best: Path, arch: str, folder: Path, when: datetime) -> Path:
    """Copy ``best`` atomically into the user's checkpoint folder as
    ``petseg-<arch>-<folder>-<YYYYmmdd-HHMM>.safetensors`` (``-2``, ``-3``… when taken); returns the new path."""
    from models.checkpoint import SUFFIX
    from models.discovery import user_data_dir

    target_dir = user_data_dir() / "checkpoints"
    stem = f"petseg-{arch}-{safe_name(Path(folder).name)}-{when:%Y%m%d-%H%M}"
    target, n = target_dir / f"{stem}{SUFFIX}", 1
    while target.exists():
        n += 1
        target = target_dir / f"{stem}-{n}{SUFFIX}"
    with atomic_path(target) as tmp:
        shutil.copyfile(best, tmp)
    return target
