"""Batch export: segment every photo with a semantic model and write masks or one COCO file.

:func:`export_images` is the engine behind the app's export dialog and the ``petseg-export``
command. Formats: ``png`` (index masks 0 background, 1 cat, 2 dog, named like the photo),
``color`` (palette PNGs: black background, (128, 0, 0) cat, (0, 128, 0) dog) and ``coco`` (one
``annotations.json`` with an RLE mask per class present in each photo). Every file is written
to a temp file and renamed, so neither a failure, a cancel nor Ctrl-C leaves a half-written one.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.errors import one_line
from models.files import atomic_path
from models.classes import CLASS_NAMES, MASK_PALETTE, PET_CLASSES, SEMANTIC
from models.images import IMAGE_SUFFIXES, load_rgb, save_png_atomic

FORMATS = ("png", "color", "coco")
COCO_FILE = "annotations.json"
COCO_CATEGORIES = [{"id": cid, "name": CLASS_NAMES[cid], "supercategory": "pet"} for cid in PET_CLASSES]
PREFETCH = 2  # photos decoded ahead of the model, in a background thread

Progress = Callable[[int, int, Path], None]


@dataclass
class ExportSummary:
    """What an export did: counts, the failed files with one-line reasons, and how long it took."""

    total: int
    written: int = 0
    skipped: int = 0
    failed: list[tuple[Path, str]] = field(default_factory=list)
    cancelled: bool = False
    seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        """Photos handled (written, skipped or failed) per second."""
        done = self.written + self.skipped + len(self.failed)
        return done / self.seconds if self.seconds > 0 else 0.0

    def describe(self) -> str:
        """A multi-line report: the counts, then one line per failed file."""
        state = "cancelled" if self.cancelled else "done"
        lines = [
            f"Export {state}: {self.written} written, {self.skipped} skipped, {len(self.failed)} failed "
            f"of {self.total} in {self.seconds:.1f} s ({self.images_per_second:.1f} images/s)"
        ]
        lines += [f"  FAILED {path}: {reason}" for path, reason in self.failed]
        return "\n".join(lines)


def expand_inputs(paths: Iterable[str | Path]) -> list[Path]:
    """Photos named by ``paths``: files as given, folders by their image files; sorted, no repeats.

    Raises FileNotFoundError naming the first path that does not exist.
    """
    found: set[Path] = set()
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            found.update(
                p
                for p in path.iterdir()
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
            )
        elif path.exists():
            found.add(path)
        else:
            raise FileNotFoundError(f"no such file or folder: {path}")
    return sorted(found)


def rle_encode(mask: np.ndarray) -> dict[str, Any]:
    """COCO compressed RLE of a binary HxW mask (column-major runs, as pycocotools writes it)."""
    h, w = mask.shape
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate(([0], changes, [flat.size])))
    if flat.size and flat[0]:
        runs = np.concatenate(([0], runs))
    counts = runs.tolist()
    chars = []
    for i, run in enumerate(counts):
        x = run - counts[i - 2] if i > 2 else run  # pycocotools' delta coding (from the fourth run on)
        while True:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            chars.append(chr((c | 0x20 if more else c) + 48))
            if not more:
                break
    return {"size": [h, w], "counts": "".join(chars)}


def _write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file in the same folder and a rename."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


class _Coco:
    """The COCO document being built; with ``resume`` it starts from the existing file's photos."""

    def __init__(self, path: Path, resume: bool) -> None:
        self.path = path
        self.doc: dict[str, Any] = {"images": [], "annotations": [], "categories": COCO_CATEGORIES}
        if resume and path.is_file():
            try:
                with open(path, encoding="utf-8") as f:
                    self.doc = json.load(f)
            except (OSError, ValueError) as error:
                raise ValueError(f"{path.name}: cannot add to this file ({error})") from None
            if not isinstance(self.doc, dict) or not all(
                isinstance(self.doc.get(key), list) for key in ("images", "annotations")
            ):
                raise ValueError(f"{path.name}: cannot add to this file, it is not a COCO JSON")
        self.names = {image["file_name"] for image in self.doc["images"]}
        self._next_image_id = max((image["id"] for image in self.doc["images"]), default=0) + 1
        self._next_annotation_id = max((a["id"] for a in self.doc["annotations"]), default=0) + 1

    def add(self, name: str, labels: np.ndarray) -> None:
        images, annotations = self.doc["images"], self.doc["annotations"]
        image_id = self._next_image_id
        self._next_image_id += 1
        h, w = labels.shape
        images.append({"id": image_id, "file_name": name, "height": h, "width": w})
        for category in PET_CLASSES:
            mask = labels == category
            if not mask.any():
                continue
            cols, rows = np.flatnonzero(mask.any(axis=0)), np.flatnonzero(mask.any(axis=1))
            x, y = int(cols[0]), int(rows[0])
            annotations.append(
                {
                    "id": self._next_annotation_id,
                    "image_id": image_id,
                    "category_id": category,
                    "segmentation": rle_encode(mask),
                    "area": int(mask.sum()),
                    "bbox": [x, y, int(cols[-1]) + 1 - x, int(rows[-1]) + 1 - y],
                    "iscrowd": 0,
                }
            )
            self._next_annotation_id += 1
        self.names.add(name)

    def save(self) -> None:
        _write_text_atomic(self.path, json.dumps(self.doc))


def _prefetch(paths: Sequence[Path], load: Callable[[Path], Any], executor: ThreadPoolExecutor) -> Iterator[Future]:
    """Futures of ``load(path)`` in order, keeping PREFETCH loads running ahead."""
    pending: list[Future] = []
    for index in range(len(paths)):
        while len(pending) <= PREFETCH and index + len(pending) < len(paths):
            pending.append(executor.submit(load, paths[index + len(pending)]))
        yield pending.pop(0)


def _reason(error: Exception) -> str:
    """A one-line reason for a failed photo: the message, after its type's name unless it is a
    ValueError (ImageLoadError and the like name the file and the problem themselves)."""
    text = one_line(error)  # the type's name when the message is empty
    if isinstance(error, ValueError) or not str(error).strip():
        return text
    return f"{type(error).__name__}: {text}"


def export_images(
    inputs: Iterable[str | Path],
    output_dir: str | Path,
    segmenter: Any,
    fmt: str = "png",
    skip_existing: bool = False,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> ExportSummary:
    """Segment every photo in ``inputs`` (files or folders) with ``segmenter`` into ``output_dir``.

    ``segmenter`` has ``segment(rgb) -> HxW uint8``; ``progress(done, total, path)`` is called
    after each photo; setting ``cancel`` stops before the next photo (finished files are kept, and
    a COCO file holds the photos done so far). With ``skip_existing`` photos whose mask (or COCO
    entry) exists are skipped. A photo that fails is listed with its reason; the export goes on.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r} (choose from {', '.join(FORMATS)})")
    paths = expand_inputs(inputs)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    summary = ExportSummary(total=len(paths))
    coco = _Coco(output_dir / COCO_FILE, resume=skip_existing) if fmt == "coco" else None
    start = time.perf_counter()

    def done_with(index: int, path: Path) -> None:
        summary.seconds = time.perf_counter() - start
        if progress is not None:
            progress(index + 1, len(paths), path)

    todo: list[Path] = []
    producers: dict[str, Path] = {}
    for index, path in enumerate(paths):
        name = path.name if coco else f"{path.stem}.png"
        if name in producers:
            summary.failed.append((path, f"same output name {name} as {producers[name]}"))
        elif skip_existing and (name in coco.names if coco else (output_dir / name).exists()):
            summary.skipped += 1
        else:
            producers[name] = path
            todo.append(path)
    handled = len(paths) - len(todo)
    if handled and progress is not None:
        progress(handled, len(paths), paths[-1])

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="petseg-load") as executor:
        try:
            for index, (path, future) in enumerate(zip(todo, _prefetch(todo, load_rgb, executor)), handled):
                if cancel is not None and cancel.is_set():
                    summary.cancelled = True
                    break
                try:
                    labels = segmenter.segment(future.result())
                    if coco is not None:
                        coco.add(path.name, labels)
                    elif fmt == "color":
                        save_png_atomic(output_dir / f"{path.stem}.png", labels, palette=MASK_PALETTE)
                    else:
                        save_png_atomic(output_dir / f"{path.stem}.png", labels)
                    summary.written += 1
                except Exception as error:  # one bad photo must not stop the export
                    summary.failed.append((path, _reason(error)))
                done_with(index, path)
        finally:
            executor.shutdown(wait=True, cancel_futures=True)
    if coco is not None and summary.written:
        coco.save()
    summary.seconds = time.perf_counter() - start
    return summary


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="petseg-export",
        description="Segment photos into background / cat / dog and write masks or a COCO file.",
    )
    parser.add_argument("--input", nargs="+", required=True, metavar="DIR_OR_FILE", help="photos or folders of photos")
    parser.add_argument("--output", required=True, metavar="DIR", help="folder for the masks (created if needed)")
    parser.add_argument("--checkpoint", help="semantic checkpoint (.safetensors); default: the best one found")
    parser.add_argument("--format", choices=FORMATS, default="png", help="index PNG, colour PNG or one COCO JSON")
    parser.add_argument("--skip-existing", action="store_true", help="leave photos whose output exists")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: CUDA when available)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``petseg-export``: 0 when every photo succeeded, 1 when any failed, 130 when interrupted."""
    from tqdm import tqdm

    from models.predictor import NoModelError, find_checkpoint, load_segmenter

    args = build_parser().parse_args(argv)
    try:
        paths = expand_inputs(args.input)
        checkpoint = args.checkpoint or find_checkpoint(SEMANTIC)
        segmenter = load_segmenter(checkpoint, args.device)
    except (FileNotFoundError, NoModelError) as error:
        print(f"petseg-export: {error}", file=sys.stderr)
        return 2
    print(f"petseg-export: {len(paths)} photos, model {checkpoint} on {segmenter.device}", file=sys.stderr)

    cancel = threading.Event()

    def on_interrupt(signum: int, frame: Any) -> None:
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.set()
        print("\nStopping after the current photo (Ctrl-C again to stop at once)", file=sys.stderr)

    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, on_interrupt) if in_main_thread else None
    bar = tqdm(total=len(paths), unit="img", desc="Exporting", dynamic_ncols=True)

    def progress(done: int, total: int, path: Path) -> None:
        bar.update(done - bar.n)

    try:
        summary = export_images(paths, args.output, segmenter, args.format, args.skip_existing, progress, cancel)
    except ValueError as error:  # an existing COCO file that cannot be extended
        bar.close()
        print(f"petseg-export: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        bar.close()
        print("petseg-export: interrupted", file=sys.stderr)
        return 130
    finally:
        if in_main_thread:
            signal.signal(signal.SIGINT, previous)
    bar.close()
    print(summary.describe(), file=sys.stderr if summary.failed else sys.stdout)
    if summary.cancelled:
        return 130
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())
