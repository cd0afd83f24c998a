"""A folder of photos: which images it holds and where their masks go (mask_files.py says whether they are current)."""

from __future__ import annotations

from pathlib import Path

from models.images import IMAGE_SUFFIXES


def mask_path(image_path: Path, output_dir: Path | None = None) -> Path:
    """``<stem>_mask.png`` beside the image, or in ``output_dir``."""
    image_path = Path(image_path)
    return (Path(output_dir) if output_dir else image_path.parent) / f"{image_path.stem}_mask.png"


def colour_path(image_path: Path, output_dir: Path | None = None) -> Path:
    """``<stem>_mask_colour.png`` beside the image, or in ``output_dir``."""
    image_path = Path(image_path)
    return (Path(output_dir) if output_dir else image_path.parent) / f"{image_path.stem}_mask_colour.png"


def list_images(folder: Path) -> list[Path]:
    """The images of ``folder`` (not recursive), sorted by name, skipping our own mask outputs."""
    found = []
    for path in sorted(Path(folder).iterdir(), key=lambda p: p.name.lower()):
        if not path.is_file() or path.name.startswith("."):
            continue
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if path.stem.endswith("_mask") or path.stem.endswith("_mask_colour"):
            continue
        found.append(path)
    return found
