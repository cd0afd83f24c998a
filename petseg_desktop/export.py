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
  drawn in another tool) makes that photo fail with a one-line reason unless ``overwrite``. A
  mask the app wrote for an annotation (output = input) is the user's work: it is skipped, even
  with ``overwrite``. With ``skip_existing`` a readable mask is kept (an empty or undecodable one
  counts as missing).
* An existing ``annotations.json`` is extended with ``skip_existing``, replaced with
  ``overwrite``, and otherwise refused.
* The output folder is created and proved writable (a probe file) before any photo is segmented;
  every file is written to a hidden temp file and renamed, so a failure, a cancel, Ctrl-C or
  SIGTERM never leaves a half-written one, and temp files a killed run left (older than
  STALE_TEMP_AGE_S) are removed from the output folder at the next run.

Setup problems raise :class:`ExportSetupError` (one line); photos that fail are listed with a
one-line reason while the export goes on.

Under ``torchrun --nproc_per_node N`` every process checks and plans the same export, segments its
share of the photos (:meth:`ExportPlan.share`: every N-th from its rank on) on its own device and
writes those masks; rank 0 gathers the summaries and COCO entries (:mod:`petseg_desktop.export_ranks`),
numbers the entries in the order of the whole photo list and reports for all, so the files are
those a single process writes.
"""

from __future__ import annotations

import argparse
import os
import re
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

from PIL import Image

from models.classes import MASK_PALETTE, SEMANTIC
from models.errors import one_line
from models.images import load_rgb, save_png_atomic
from petseg_desktop import annotation_export
from petseg_desktop.coco import COCO_FILE, CocoDocument, CocoEntries, CocoEntry
from petseg_desktop.export_files import (
    EXPORT_MARK,
    ExportSetupError,
    annotated_in_app,
    collect_inputs,
    mask_suffix,
    prepare_output,
    readable_image,
    remove_stale_temp_files,
    replace_refusal,
)
from petseg_desktop.export_ranks import RANK_TIMEOUT_S, RankGroup, Ranks, ReportedByRankZero, fingerprint

FORMATS = ("png", "color", "coco")
PREFETCH = 2  # photos decoded ahead of the model, in a background thread
DEVICE_NAME = re.compile(r"^(cpu|cuda(:\d+)?|mps)$")

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
    stopped: list[str] = field(default_factory=list)  # under torchrun: processes that stopped early, and why

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
        lines += [f"  STOPPED {reason}" for reason in self.stopped]
        return "\n".join(lines)


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
    coco: CocoDocument | CocoEntries | None = None

    def share(self, rank: int, world: int) -> ExportPlan:
        """Process ``rank`` of ``world``'s part: every ``world``-th photo to segment from the ``rank``-th
        on. COCO entries are kept for rank 0 to number; the skipped and failed files are left to rank 0's
        report of the whole plan (:func:`merge_shares`)."""
        todo = self.todo[rank::world]
        coco = CocoEntries() if self.coco is not None else None
        return ExportPlan(self.fmt, self.output_dir, len(todo), self.overwrite, todo=todo, coco=coco)

    def digest(self) -> str:
        """Equal on processes that planned the same export (photos, output names, counts)."""
        return fingerprint((self.fmt, str(self.output_dir), self.total, self.skipped, [(str(p), n) for p, n in self.todo]))


@dataclass
class ShareResult:
    """What one process did with its share, for rank 0: its summary, its COCO entries, its exit
    status if a signal stopped it, and why it stopped early if it did."""

    summary: ExportSummary
    coco: list[CocoEntry]
    exit_code: int
    error: str | None = None


def merge_shares(plan: ExportPlan, results: Sequence[ShareResult], seconds: float) -> ExportSummary:
    """The summary of ``plan`` from its shares' ``results``, as one process would report it (failures
    in photo order), with COCO entries added to ``plan.coco`` in photo order and the file saved."""
    order = {photo: index for index, (photo, _) in enumerate(plan.todo)}
    failed = sorted((f for r in results for f in r.summary.failed), key=lambda f: order.get(f[0], -1))
    summary = ExportSummary(
        total=plan.total,
        written=sum(r.summary.written for r in results),
        skipped=plan.skipped,
        failed=plan.failed + failed,
        cancelled=any(r.summary.cancelled for r in results),
        seconds=seconds,
        stopped=[f"rank {rank}: {r.error}" for rank, r in enumerate(results) if r.error],
    )
    if isinstance(plan.coco, CocoDocument):
        names = {name: index for index, (_, name) in enumerate(plan.todo)}
        for entry in sorted((e for r in results for e in r.coco), key=lambda e: names[e[0]["file_name"]]):
            plan.coco.append(entry)
        if summary.written:
            _save_coco(plan.coco, summary)
    return summary


def _save_coco(coco: CocoDocument | CocoEntries, summary: ExportSummary) -> None:
    """Write the COCO file; when that fails (a full disk, say), report it as the one failure that loses
    every photo segmented for it, rather than as an error without a summary."""
    try:
        coco.save()
    except OSError as error:
        reason = error.strerror or one_line(error)
        summary.failed.append((coco.path, f"not written ({reason}); the {summary.written} photos segmented "
                                          "for it are in no file"))
        summary.written = 0


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
        plan.coco = CocoDocument.open(output_dir / COCO_FILE, skip_existing, overwrite)
    suffix = mask_suffix(photos, output_dir, fmt)
    producers: dict[str, Path] = {}
    for photo in photos:
        name = photo.name if plan.coco else f"{photo.stem}{suffix}.png"
        if name in producers:
            plan.failed.append((photo, f"same output name {name} as {producers[name]}"))
        elif not plan.coco and annotated_in_app(output_dir / name):  # the user's own work: never replaced
            plan.skipped += 1
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
        _save_coco(plan.coco, summary)
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
    parser.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: CUDA when available; cuda:LOCAL_RANK under torchrun)")
    parser.add_argument(
        "--rank-timeout", type=_seconds, default=RANK_TIMEOUT_S, metavar="S",
        help=f"under torchrun: how long a process waits for the others, before the first photo and at the end "
        f"(default {RANK_TIMEOUT_S:.0f})",
    )
    return parser


def _seconds(text: str) -> float:
    """argparse type: a positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"not a positive number of seconds: {text!r}")
    return value


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


def _set_up(args: argparse.Namespace, group: RankGroup) -> tuple[ExportPlan, Any, Path]:
    """Check the device, plan and load the model before any photo, on every process; a problem on any
    stops them all (ExportSetupError on rank 0, ReportedByRankZero on the others)."""
    try:
        device = group.ranks.device(args.device)
        check_device(device)
        plan = plan_export(args.input, args.output, args.format, args.skip_existing, args.overwrite)
        segmenter, checkpoint = _load_segmenter(args.checkpoint, device)
    except (ExportSetupError, FileNotFoundError) as error:
        group.agree_on_setup(one_line(error), None)
        raise  # a single process
    group.agree_on_setup(None, plan.digest())
    return plan, segmenter, checkpoint


def _run_share(share: ExportPlan, segmenter: Any, handled: int, cancel: threading.Event, stop: _StopRequest,
               group: RankGroup) -> ShareResult:
    """Segment this process's ``share`` (a progress bar on rank 0 only, counting ``handled`` photos
    the plan settled); under torchrun an error that stops it is reported, not raised."""
    from tqdm import tqdm

    world = group.ranks.world
    desc = "Exporting" if world == 1 else f"Exporting (rank 0 of {world})"
    total = handled + len(share.todo)
    with tqdm(total=total, initial=handled, unit="img", desc=desc, dynamic_ncols=True, disable=not group.ranks.main) as bar:
        try:
            summary = run_export(share, segmenter, lambda done, _, path: bar.update(handled + done - bar.n), cancel)
        except Exception as error:  # noqa: BLE001 - rank 0 reports it with everybody's results
            if not group.distributed:
                raise
            return ShareResult(ExportSummary(total=share.total), [], 1, f"{type(error).__name__}: {one_line(error)}")
    entries = share.coco.entries if isinstance(share.coco, CocoEntries) else []
    return ShareResult(summary, entries, stop.exit_code)


def _export_cli(args: argparse.Namespace, cancel: threading.Event, stop: _StopRequest) -> int:
    """Check, load the model, export with a progress bar, report; returns the exit status. Under
    torchrun each process does this for its share, and rank 0 reports for all."""
    ranks = Ranks.from_env()
    with RankGroup(ranks, args.rank_timeout) as group:
        try:
            plan, segmenter, checkpoint = _set_up(args, group)
        except ReportedByRankZero as reported:
            return reported.code
        processes = f" over {ranks.world} processes" if group.distributed else ""
        if ranks.main:
            print(f"petseg-export: {plan.total} photos{processes}, model {checkpoint} on {segmenter.device}", file=sys.stderr)
        start = time.perf_counter()
        share = plan.share(ranks.rank, ranks.world)
        results = group.gather(_run_share(share, segmenter, plan.total - len(plan.todo), cancel, stop, group))
        if results is None:
            return group.share_outcome(None)
        code = 1  # what the other processes exit with should the merge fail
        try:
            summary = merge_shares(plan, results, time.perf_counter() - start)
            troubled = bool(summary.failed or summary.stopped)
            print(summary.describe(), file=sys.stderr if troubled or summary.cancelled else sys.stdout)
            cancelled = [r.exit_code for r in results if r.summary.cancelled]
            code = cancelled[0] if cancelled else int(troubled)
        finally:
            group.share_outcome(code)
        return code


def main(argv: Sequence[str] | None = None) -> int:
    """``petseg-export``: 0 all written, 1 some failed, 2 usage or setup error, 130 Ctrl-C, 143 SIGTERM."""
    if (argv := list(sys.argv[1:] if argv is None else argv))[:1] == ["annotations"]:  # accepted annotations
        return annotation_export.main(argv[1:])
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
