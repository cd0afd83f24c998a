"""Batch export: segment every photo with a semantic model and write masks or one COCO file.

:func:`export_images` is the engine behind the app's export dialog and the ``petseg-export``
command (:func:`plan_export` checks everything up front, :func:`run_export` segments). Formats:
``png`` (index masks 0 background, 1 cat, 2 dog), ``color`` (palette PNGs: black background,
(128, 0, 0) cat, (0, 128, 0) dog) and ``coco`` (one ``annotations.json`` with an RLE mask per
class present in each photo).

Nothing is lost:

* Mask names: ``<stem>.png`` in an output folder of their own; when the output folder holds
  photos being exported (output = input) they are ``<stem>_mask.png`` / ``<stem>_mask_colour.png``,
  the app's own mask names, so a mask never lands on a photo.
* Photos are regular image files only: hidden files, anything in ``.petseg/``, ``*_mask.png`` /
  ``*_mask_colour.png`` and PNGs written by petseg-export are never read as photos (in a folder
  they are passed over; named explicitly, like a FIFO, a broken link or a folder named like a
  photo, they are a listed failure and never opened).
* Exported PNGs carry the text chunk ``Software: petseg-export``. An existing file at a mask's
  name is replaced only when it carries that mark or is empty; any other file (a photo, a mask
  drawn in the app) makes that photo fail with a one-line reason unless ``overwrite``. With
  ``skip_existing`` a readable mask is kept (an empty or undecodable one counts as missing).
* An existing ``annotations.json`` is extended with ``skip_existing``, replaced with
  ``overwrite``, and otherwise refused.
* The output folder is created and proved writable (a probe file) before any photo is segmented;
  every file is written to a hidden temp file and renamed, so a failure, a cancel, Ctrl-C or
  SIGTERM never leaves a half-written one, and temp files a killed run left (older than
  STALE_TEMP_AGE_S) are removed from the output folder at the next run.

Setup problems raise :class:`ExportSetupError` (one line); photos that fail are listed with a
one-line reason while the export goes on.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from models.classes import CLASS_NAMES, MASK_PALETTE, PET_CLASSES, SEMANTIC
from models.errors import one_line
from models.files import atomic_path
from models.images import IMAGE_SUFFIXES, load_rgb, save_png_atomic

FORMATS = ("png", "color", "coco")
COCO_FILE = "annotations.json"
COCO_CATEGORIES = [{"id": cid, "name": CLASS_NAMES[cid], "supercategory": "pet"} for cid in PET_CLASSES]
PREFETCH = 2  # photos decoded ahead of the model, in a background thread
EXPORT_MARK = {"Software": "petseg-export"}  # PNG text chunk on every exported mask
MASK_SUFFIXES = {"png": "_mask", "color": "_mask_colour"}  # mask names beside the photos (output = input)
SIDECAR_FOLDER = ".petseg"
TEMP_NAME = re.compile(r"^\..+-[0-9a-f]{16}\.tmp$")  # models.files.atomic_path's temp files
STALE_TEMP_AGE_S = 30.0  # a temp file untouched this long belongs to a killed run
DEVICE_NAME = re.compile(r"^(cpu|cuda(:\d+)?|mps)$")

Progress = Callable[[int, int, Path], None]


class ExportSetupError(ValueError):
    """The export cannot start (unusable output, existing COCO file, bad device); one-line message."""


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


def written_by_export(path: Path) -> bool:
    """Whether ``path`` is a PNG carrying petseg-export's mark (read from its header only)."""
    if not path.is_file():
        return False  # never open a FIFO
    try:
        with Image.open(path) as image:
            return image.format == "PNG" and all(image.info.get(k) == v for k, v in EXPORT_MARK.items())
    except Exception:  # noqa: BLE001 - unreadable: not ours
        return False


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


def check_device(name: str | None) -> None:
    """Raise ExportSetupError unless ``name`` (None: automatic) is a device this machine has."""
    if name is None:
        return
    if not DEVICE_NAME.match(name):
        raise ExportSetupError(f"unknown device {name!r} (use cpu, cuda, cuda:N or mps)")
    if name == "cpu":
        return
    import torch

    if name.startswith("cuda"):
        index = int(name.partition(":")[2] or 0)
        if not torch.cuda.is_available():
            raise ExportSetupError(f"device {name}: no CUDA GPU is available here (use --device cpu)")
        if index >= torch.cuda.device_count():
            raise ExportSetupError(f"device {name}: only {torch.cuda.device_count()} CUDA GPU(s) here")
    elif name == "mps" and not torch.backends.mps.is_available():
        raise ExportSetupError("device mps: Apple MPS is not available here (use --device cpu)")


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
    return f"{target.name} exists and was not written by petseg-export (pass --overwrite to replace it)"


def mask_suffix(photos: Sequence[Path], output_dir: Path, fmt: str) -> str:
    """The suffix after a mask's stem: MASK_SUFFIXES[fmt] when ``output_dir`` holds any of
    ``photos`` (output = input), else none (``<stem>.png`` in a folder of masks)."""
    if fmt not in MASK_SUFFIXES or not output_dir.is_dir():
        return ""
    folders = {photo.parent for photo in photos}
    return MASK_SUFFIXES[fmt] if any(output_dir.samefile(f) for f in folders if f.is_dir()) else ""


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


def _is_coco(doc: Any) -> bool:
    """Whether ``doc`` has the COCO lists this module adds to, with ids and file names."""
    if not isinstance(doc, dict) or not all(isinstance(doc.get(key), list) for key in ("images", "annotations")):
        return False
    images_ok = all(
        isinstance(i, dict) and isinstance(i.get("id"), int) and isinstance(i.get("file_name"), str)
        for i in doc["images"]
    )
    return images_ok and all(isinstance(a, dict) and isinstance(a.get("id"), int) for a in doc["annotations"])


def _read_coco(path: Path) -> dict[str, Any]:
    """The COCO document at ``path``; ExportSetupError (one line) when it cannot be added to."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError, RecursionError) as error:
        raise ExportSetupError(f"{path}: cannot add to this file ({one_line(error)})") from None
    if not _is_coco(doc):
        raise ExportSetupError(f"{path}: cannot add to this file, it is not a COCO JSON with images and annotations")
    return doc


class _Coco:
    """The COCO document being built; with ``resume`` it starts from the existing file's photos."""

    def __init__(self, path: Path, resume: bool) -> None:
        self.path = path
        self.doc: dict[str, Any] = {"images": [], "annotations": [], "categories": COCO_CATEGORIES}
        if resume and path.is_file() and path.stat().st_size > 0:  # an empty file counts as missing
            self.doc = _read_coco(path)
        self.names = {image["file_name"] for image in self.doc["images"]}
        self._next_image_id = max((image["id"] for image in self.doc["images"]), default=0) + 1
        self._next_annotation_id = max((a["id"] for a in self.doc["annotations"]), default=0) + 1

    @classmethod
    def open(cls, path: Path, skip_existing: bool, overwrite: bool) -> _Coco:
        """The document for ``path``: an existing file is added to with ``skip_existing``, replaced
        with ``overwrite`` and otherwise refused (ExportSetupError)."""
        if os.path.lexists(path) and not path.is_file():
            raise ExportSetupError(f"{path} exists and is not a file")
        if path.is_file() and not (skip_existing or overwrite):
            raise ExportSetupError(f"{path} already exists: pass --skip-existing to add to it or --overwrite to replace it")
        return cls(path, resume=skip_existing)

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


@dataclass
class ExportPlan:
    """What :func:`run_export` will do: photos to segment with their output names, and what is settled."""

    fmt: str
    output_dir: Path
    total: int
    overwrite: bool
    todo: list[tuple[Path, str]] = field(default_factory=list)  # photo, mask file name (COCO: photo name)
    skipped: int = 0
    failed: list[tuple[Path, str]] = field(default_factory=list)
    coco: _Coco | None = None


def _quiet_bomb_warnings() -> None:
    """Photos up to models.images.MAX_PIXELS are decoded; Pillow's warning above 89 MP is noise here."""
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def plan_export(
    inputs: Iterable[str | Path],
    output_dir: str | Path,
    fmt: str = "png",
    skip_existing: bool = False,
    overwrite: bool = False,
) -> ExportPlan:
    """Check everything an export needs before any photo is segmented, and decide each photo's output.

    Raises ExportSetupError (unknown format, unusable output folder, an ``annotations.json`` that may
    not be replaced or cannot be added to) or FileNotFoundError (an input that does not exist).
    """
    if fmt not in FORMATS:
        raise ExportSetupError(f"unknown export format {fmt!r} (choose from {', '.join(FORMATS)})")
    _quiet_bomb_warnings()
    photos, rejected = collect_inputs(inputs)
    output_dir = Path(output_dir)
    prepare_output(output_dir)
    remove_stale_temp_files(output_dir)
    plan = ExportPlan(fmt, output_dir, total=len(photos) + len(rejected), overwrite=overwrite, failed=rejected)
    if fmt == "coco":
        plan.coco = _Coco.open(output_dir / COCO_FILE, skip_existing, overwrite)
    suffix = mask_suffix(photos, output_dir, fmt)
    producers: dict[str, Path] = {}
    for photo in photos:
        name = photo.name if plan.coco else f"{photo.stem}{suffix}.png"
        if name in producers:
            plan.failed.append((photo, f"same output name {name} as {producers[name]}"))
        elif skip_existing and (name in plan.coco.names if plan.coco else readable_image(output_dir / name)):
            plan.skipped += 1
        else:
            producers[name] = photo
            plan.todo.append((photo, name))
    return plan


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


def _export_one(plan: ExportPlan, photo: Path, name: str, rgb: Future, segmenter: Any) -> None:
    """Segment one photo (``rgb``: its decoded pixels) and write its mask or COCO entry."""
    target = plan.output_dir / name
    refusal = None if plan.coco else replace_refusal(target, plan.overwrite)
    if refusal:
        raise ValueError(refusal)
    labels = segmenter.segment(rgb.result())
    if plan.coco is not None:
        plan.coco.add(name, labels)
    else:
        save_png_atomic(target, labels, palette=MASK_PALETTE if plan.fmt == "color" else None, text=EXPORT_MARK)


def run_export(
    plan: ExportPlan, segmenter: Any, progress: Progress | None = None, cancel: threading.Event | None = None
) -> ExportSummary:
    """Carry out ``plan`` with ``segmenter`` (``segment(rgb) -> HxW uint8``).

    ``progress(done, total, path)`` is called after each photo; setting ``cancel`` stops before the
    next photo (finished files are kept, and a COCO file holds the photos done so far). A photo that
    fails is listed with its reason; the export goes on.
    """
    _quiet_bomb_warnings()
    summary = ExportSummary(total=plan.total, skipped=plan.skipped, failed=list(plan.failed))
    start = time.perf_counter()
    handled = plan.total - len(plan.todo)
    if handled and progress is not None:
        progress(handled, plan.total, (plan.failed[-1][0] if plan.failed else plan.output_dir))
    photos = [photo for photo, _ in plan.todo]
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="petseg-load") as executor:
        try:
            for index, ((photo, name), rgb) in enumerate(zip(plan.todo, _prefetch(photos, load_rgb, executor)), handled):
                if cancel is not None and cancel.is_set():
                    summary.cancelled = True
                    break
                try:
                    _export_one(plan, photo, name, rgb, segmenter)
                    summary.written += 1
                except Exception as error:  # one bad photo must not stop the export
                    summary.failed.append((photo, _reason(error)))
                summary.seconds = time.perf_counter() - start
                if progress is not None:
                    progress(index + 1, plan.total, photo)
        finally:
            executor.shutdown(wait=True, cancel_futures=True)
    if plan.coco is not None and summary.written:
        plan.coco.save()
    summary.seconds = time.perf_counter() - start
    return summary


def export_images(
    inputs: Iterable[str | Path],
    output_dir: str | Path,
    segmenter: Any,
    fmt: str = "png",
    skip_existing: bool = False,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    overwrite: bool = False,
) -> ExportSummary:
    """Segment every photo in ``inputs`` (files or folders) into ``output_dir``: :func:`plan_export`
    then :func:`run_export`. With ``skip_existing`` photos whose mask (or COCO entry) exists are
    skipped; ``overwrite`` replaces files petseg-export did not write (see the module docstring)."""
    plan = plan_export(inputs, output_dir, fmt, skip_existing, overwrite)
    return run_export(plan, segmenter, progress, cancel)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="petseg-export",
        description="Segment photos into background / cat / dog and write masks or a COCO file.",
        epilog=(
            "Masks are named <stem>.png; when --output is a folder of the input photos (output = input) "
            "they are <stem>_mask.png (png) or <stem>_mask_colour.png (color), so no photo is written over. "
            "Hidden files, .petseg/, *_mask*.png and masks written by petseg-export are never read as photos. "
            "An existing file is replaced only if petseg-export wrote it (or with --overwrite). "
            "Exit status: 0 all written, 1 some photos failed, 2 usage or setup error "
            "(bad arguments, unusable output, bad device, no model), 130 Ctrl-C, 143 SIGTERM."
        ),
    )
    parser.add_argument("--input", nargs="+", required=True, metavar="DIR_OR_FILE", help="photos or folders of photos")
    parser.add_argument("--output", required=True, metavar="DIR", help="folder for the masks (created if needed)")
    parser.add_argument("--checkpoint", help="semantic checkpoint (.safetensors); default: the best one found")
    parser.add_argument("--format", choices=FORMATS, default="png", help="index PNG, colour PNG or one COCO JSON")
    parser.add_argument(
        "--skip-existing", action="store_true", help="leave photos whose readable mask exists; add to annotations.json"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace existing files petseg-export did not write (annotations.json too)"
    )
    parser.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: CUDA when available)")
    return parser


class _StopRequest:
    """SIGINT/SIGTERM handler: the first signal stops the export after the current photo, a second at once."""

    def __init__(self, cancel: threading.Event) -> None:
        self.cancel = cancel
        self.signum = int(signal.SIGINT)

    def __call__(self, signum: int, frame: Any) -> None:
        if self.cancel.is_set():
            raise KeyboardInterrupt
        self.signum = signum
        self.cancel.set()
        os.write(2, b"\nStopping after the current photo (signal again to stop at once)\n")  # print could re-enter

    @property
    def exit_code(self) -> int:
        """128 + the signal's number: 130 for Ctrl-C, 143 for SIGTERM."""
        return 128 + self.signum


@contextmanager
def _signals_handled_by(handler: Callable[[int, Any], None]) -> Iterator[None]:
    """Route SIGINT and SIGTERM to ``handler`` while the block runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, handler) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def _load_segmenter(checkpoint: str | None, device: str | None) -> tuple[Any, Path]:
    """The segmenter and its checkpoint path; ExportSetupError (one line) when there is no usable model."""
    from models.predictor import find_checkpoint, load_segmenter

    try:
        path = Path(checkpoint) if checkpoint else find_checkpoint(SEMANTIC)
        return load_segmenter(path, device), path
    except RuntimeError as error:  # NoModelError, or the device failing to start
        raise ExportSetupError(one_line(error)) from None


def _export_cli(args: argparse.Namespace, cancel: threading.Event, stop: _StopRequest) -> int:
    """Check, load the model, export with a progress bar, report; returns the exit status."""
    from tqdm import tqdm

    check_device(args.device)
    plan = plan_export(args.input, args.output, args.format, args.skip_existing, args.overwrite)
    segmenter, checkpoint = _load_segmenter(args.checkpoint, args.device)
    print(f"petseg-export: {plan.total} photos, model {checkpoint} on {segmenter.device}", file=sys.stderr)
    with tqdm(total=plan.total, unit="img", desc="Exporting", dynamic_ncols=True) as bar:
        summary = run_export(plan, segmenter, lambda done, total, path: bar.update(done - bar.n), cancel)
    print(summary.describe(), file=sys.stderr if summary.failed or summary.cancelled else sys.stdout)
    if summary.cancelled:
        return stop.exit_code
    return 1 if summary.failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """``petseg-export``: 0 all written, 1 some failed, 2 usage or setup error, 130 Ctrl-C, 143 SIGTERM."""
    cancel = threading.Event()
    stop = _StopRequest(cancel)
    with _signals_handled_by(stop):
        args = build_parser().parse_args(argv)
        try:
            return _export_cli(args, cancel, stop)
        except (ExportSetupError, FileNotFoundError) as error:
            print(f"petseg-export: {one_line(error)}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("petseg-export: interrupted", file=sys.stderr)
            return stop.exit_code
        except Exception as error:  # noqa: BLE001 - never a traceback (e.g. a full disk saving annotations.json)
            print(f"petseg-export: {type(error).__name__}: {one_line(error)}", file=sys.stderr)
            return 1


if __name__ == "__main__":
    sys.exit(main())
