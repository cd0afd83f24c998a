"""``petseg-export annotations``: the accepted annotations of a folder, or another tool's data set,
written as index/instance PNGs, COCO (RLE or polygons), YOLO segmentation, labelme or cut-outs.

The objects come from the photos' sidecars (what was accepted in the app; no model runs) or, with
``--from FORMAT:PATH``, from another tool's files. Every file is written atomically. A file that
is in the way is replaced only when this command wrote it (PNGs carry petseg-export's mark, other
files are recorded with their SHA-1 in ``.petseg-export-files.json``) or with ``--overwrite``;
otherwise nothing is written and the command says which file, exit 2.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import secrets
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from models.errors import one_line
from models.formats import FormatError, LabelledMask, OutputFile, PhotoObjects
from models.formats.coco import export_coco, import_coco
from models.formats.core import photo_size
from models.formats.cutout import export_cutouts
from models.formats.labelme import export_labelme, import_labelme
from models.formats.png import export_png, import_mask_folder
from models.formats.yolo import export_yolo, import_yolo
from petseg_desktop.export_files import (
    EXPORT_MARK,
    ExportSetupError,
    collect_inputs,
    mask_suffix,
    prepare_output,
    remove_stale_temp_files,
    replace_refusal,
)
from petseg_desktop.sidecar import SidecarError, load_document

FORMATS = ("png", "instance", "coco", "coco-polygons", "yolo", "labelme", "cutout")
IMPORTERS: dict[str, Callable[[Path], list[PhotoObjects]]] = {
    "png": import_mask_folder,
    "coco": import_coco,
    "yolo": import_yolo,
    "labelme": import_labelme,
}
MANIFEST = ".petseg-export-files.json"  # SHA-1 of each non-PNG file this command wrote


class ExportCancelled(Exception):
    """The export was cancelled; nothing was written (staged files are removed)."""


Progress = Callable[[str, int, int, str], None]  # stage ("reading"/"writing"), done, total, name


@dataclass
class AnnotationExportSummary:
    """What :func:`export_annotations` did: counts, the photos without objects, failures."""

    photos: int
    objects: int
    files: int
    output: Path
    empty: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)

    def lines(self) -> list[str]:
        """The result in short lines: counts first, then one line per empty or failed photo."""
        head = f"{count(self.photos, 'photo')}, {count(self.objects, 'object')}: {count(self.files, 'file')} in {self.output}"
        return [head, *(f"no annotation: {p.name}" for p in self.empty),
                *(f"failed: {p.name}: {reason.removeprefix(f'{p.name}: ')}" for p, reason in self.failed)]


def count(n: int, noun: str) -> str:
    """``n`` and ``noun``, plural unless n is 1: "1 photo", "3 photos"."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _check_cancel(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise ExportCancelled("cancelled")


def exporter(fmt: str, output: Path, suffix: str) -> Callable[[list[PhotoObjects]], list[OutputFile]]:
    """The function that makes the files of ``fmt``."""
    return {
        "png": lambda items: export_png(items, suffix=suffix, text=EXPORT_MARK),
        "instance": lambda items: export_png(items, instances=True, suffix=suffix, text=EXPORT_MARK),
        "coco": lambda items: export_coco(items),
        "coco-polygons": lambda items: export_coco(items, polygons=True),
        "yolo": export_yolo,
        "labelme": lambda items: export_labelme(items, output),
        "cutout": lambda items: export_cutouts(items, text=EXPORT_MARK),
    }[fmt]


def accepted_annotations(
    folder: Path, progress: Progress | None = None, cancel: threading.Event | None = None
) -> tuple[list[PhotoObjects], list[Path], list[tuple[Path, str]]]:
    """The photos of ``folder`` with accepted objects, those without, and failures (one line each)."""
    photos, rejected = collect_inputs([folder])
    items, empty, failed = [], [], list(rejected)
    for done, photo in enumerate(photos):
        _check_cancel(cancel)
        try:
            shape = photo_size(photo)
            doc = load_document(photo, shape)
        except (FormatError, SidecarError) as error:
            failed.append((photo, one_line(error)))
            continue
        finally:
            if progress is not None:
                progress("reading", done + 1, len(photos), photo.name)
        if doc.objects:
            objects = [LabelledMask(obj.class_id, obj.mask) for obj in doc.objects]
            items.append(PhotoObjects(photo, doc.height, doc.width, objects))
        else:
            empty.append(photo)
    return items, empty, failed


def _sha1(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def _read_manifest(output: Path) -> dict[str, str]:
    try:
        data = json.loads((output / MANIFEST).read_text(encoding="utf-8"))
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _staged_name(target: Path) -> Path:
    """A hidden temp name beside ``target`` that remove_stale_temp_files recognises."""
    return target.with_name(f".{target.name}-{secrets.token_hex(8)}.tmp")


def write_files(
    files: list[OutputFile],
    output: Path,
    overwrite: bool,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> int:
    """Write ``files`` under ``output`` after checking that none replaces a file we may not touch.

    Every file is first written to a hidden temp file; only when all are written (and ``cancel``
    is not set) are they renamed into place, so a cancelled or failed run leaves no partial output.
    """
    manifest = _read_manifest(output)
    for file in files:
        target = output / file.path
        refusal = replace_refusal(target, overwrite)
        if refusal and not (target.is_file() and manifest.get(file.path.as_posix()) == _sha1(target)):
            raise ExportSetupError(f"{file.path.as_posix()}: {refusal.split(' ', 1)[1]}")
    staged: list[tuple[Path, Path]] = []
    made: list[Path] = []  # folders this run created, removed again when it does not finish
    try:
        for done, file in enumerate(files):
            _check_cancel(cancel)
            target = output / file.path
            for parent in reversed(target.relative_to(output).parents[:-1]):
                if not (output / parent).exists():
                    (output / parent).mkdir()
                    made.append(output / parent)
            staged.append((_staged_name(target), target))
            file.write(staged[-1][0])
            if progress is not None:
                progress("writing", done + 1, len(files), file.path.as_posix())
        _check_cancel(cancel)
    except BaseException:
        for temp, _ in staged:
            temp.unlink(missing_ok=True)
        for folder in reversed(made):
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    for temp, target in staged:
        os.replace(temp, target)
        if target.suffix.lower() != ".png":
            manifest[target.relative_to(output).as_posix()] = _sha1(target)
    (output / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True), encoding="utf-8")
    return len(files)


def export_annotations(
    folder: Path,
    output: Path,
    fmt: str,
    overwrite: bool = False,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> AnnotationExportSummary:
    """Write the accepted objects of ``folder``'s photos to ``output`` in ``fmt`` (see FORMATS).

    Raises ExportSetupError (bad folder, unusable output, a file that may not be replaced) and
    ExportCancelled when ``cancel`` is set before the files are in place (then nothing is written).
    """
    if not folder.is_dir():
        raise ExportSetupError(f"{folder} is not a folder")
    items, empty, failed = accepted_annotations(folder, progress, cancel)
    return _export_items(items, output, fmt, overwrite, progress, cancel, empty, failed)


def _export_items(
    items: list[PhotoObjects],
    output: Path,
    fmt: str,
    overwrite: bool,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    empty: list[Path] | None = None,
    failed: list[tuple[Path, str]] | None = None,
) -> AnnotationExportSummary:
    prepare_output(output)
    remove_stale_temp_files(output)
    photos = [item.photo for item in items]
    files = exporter(fmt, output, mask_suffix(photos, output, "png"))(items)
    written = write_files(files, output, overwrite, progress, cancel)
    objects = sum(len(i.objects) for i in items)
    return AnnotationExportSummary(len(items), objects, written, output, empty or [], failed or [])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="petseg-export annotations",
        description="Write a folder's accepted annotations (or another tool's data set) in another format.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", type=Path, help="photo folder whose accepted annotations are exported")
    source.add_argument("--from", dest="source", metavar="FORMAT:PATH",
                        help=f"convert another tool's data set; FORMAT one of {', '.join(IMPORTERS)}")
    parser.add_argument("--output", type=Path, required=True, help="output folder (created if missing)")
    parser.add_argument("--format", choices=FORMATS, required=True)
    parser.add_argument("--overwrite", action="store_true", help="replace files petseg-export did not write")
    return parser


def _imported(source: str) -> list[PhotoObjects]:
    fmt, _, where = source.partition(":")
    if fmt not in IMPORTERS or not where:
        raise ExportSetupError(f"--from {source}: expected FORMAT:PATH with FORMAT one of {', '.join(IMPORTERS)}")
    if not Path(where).exists():
        raise ExportSetupError(f"--from {source}: {where} does not exist")
    return IMPORTERS[fmt](Path(where))


def run(args: argparse.Namespace) -> int:
    """Export as ``args`` say; 0 done, 1 some photos failed."""
    if args.source:
        summary = _export_items(_imported(args.source), args.output, args.format, args.overwrite)
    else:
        if not args.input.is_dir():
            raise ExportSetupError(f"--input {args.input} is not a folder")
        summary = export_annotations(args.input, args.output, args.format, args.overwrite)
    head, *rest = summary.lines()
    print(head)
    for line in rest:
        print(line, file=sys.stderr if line.startswith("failed:") else sys.stdout)
    return 1 if summary.failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """``petseg-export annotations ...``: 0 written, 1 some photos failed, 2 bad input or output."""
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (ExportSetupError, FormatError) as error:
        print(f"petseg-export: {one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("petseg-export: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - never a traceback (a full disk, a photo gone)
        print(f"petseg-export: {type(error).__name__}: {one_line(error)}", file=sys.stderr)
        return 1
