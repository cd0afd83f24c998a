"""``petseg-train fit`` faults end in one line (no traceback) and exit 2, or 130 for Ctrl-C; they are
found before the first epoch where they can be, no input file changes and ``--out`` is never left
half-made. Real processes on five real photos with a tiny model.

The quick faults (options, device, data, output folder) run concurrently, once per module, and
each test checks its own; the full disk and Ctrl-C cases run on their own.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import tmpfs

REPO = Path(__file__).resolve().parent.parent
PROG = "petseg-train"
CLI = [sys.executable, "-m", "training.cli"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
TINY = ["--arch", "unet", "--encoder", "scratch", "--base", "8", "--depth", "3", "--size", "64", "--limit", "4",
        "--workers", "0", "--augment", "none", "--no-progress", "--epochs", "1", "--val-fraction", "0.2"]


def make_pets(pets_root: Path, root: Path) -> Path:
    """Five real TrainVal photos and their masks (copies) in the processed layout under ``root``."""
    stems = sorted(p.stem for p in (pets_root / "TrainVal" / "color").glob("*.jpg"))[::150][:5]
    for kind, suffix in (("color", ".jpg"), ("label", ".png")):
        (root / "pets" / "TrainVal" / kind).mkdir(parents=True)
        for stem in stems:
            name = f"{stem}{suffix}"
            shutil.copyfile(pets_root / "TrainVal" / kind / name, root / "pets" / "TrainVal" / kind / name)
    return root / "pets"


def split(data: Path) -> tuple[list, list]:
    """The training and validation samples ``fit`` uses with TINY's options (all of them)."""
    from training.data import find_samples, train_val_split

    train, val = train_val_split(find_samples(data), 0.2, 0)
    assert len(train) == 4 and len(val) == 1
    return train, val


def snapshot(root: Path) -> dict[str, str]:
    """SHA-1 of every file under ``root`` by relative path."""
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def fit(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """``petseg-train fit`` with TINY's options, then ``args``, in a subprocess."""
    return subprocess.run([*CLI, "fit", *TINY, *map(str, args)], cwd=REPO, env=ENV, capture_output=True,
                          text=True, timeout=timeout)


def assert_one_line_error(result: subprocess.CompletedProcess, says: str, code: int = 2) -> str:
    """Exit ``code``, no traceback, and a last stderr line that is ``fit``'s one-line error saying ``says``.

    130 also accepts -2, killed by SIGINT (the shell's $? is 130 either way): under load, about one
    Ctrl-C in eight ended that way here after ``fit`` had handled it and printed its line (CPython
    re-raises SIGINT at exit when it counts the KeyboardInterrupt as unhandled somewhere inside).
    """
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.returncode in ((130, -signal.SIGINT) if code == 130 else (code,)), result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    prefix = f"{PROG}: interrupted" if code == 130 else f"{PROG}: error: "
    assert last.startswith(prefix) and says in last, last
    return last


# --- quick faults: one-line errors before any training -----------------------------------------------


def _set_mask(sample, change: Callable[[np.ndarray], np.ndarray]) -> None:
    mask = np.array(Image.open(sample.mask_path))
    Image.fromarray(change(mask)).save(sample.mask_path)


def _bad_label(data: Path) -> None:
    train, _ = split(data)
    _set_mask(train[1], lambda m: np.where(m == 0, 7, m).astype(np.uint8))


def _half_width_mask(data: Path) -> None:
    _, val = split(data)
    _set_mask(val[0], lambda m: np.ascontiguousarray(m[:, : m.shape[1] // 2]))


def _no_masks(data: Path) -> None:
    for mask in (data / "TrainVal" / "label").iterdir():
        mask.unlink()


@dataclass(frozen=True)
class Case:
    """A quick fault: options after TINY's (``{data}`` the photos, ``{tmp}`` the case's folder), the
    error line's text, and a change to the photos' copy before the run."""

    args: tuple[str, ...]
    says: str
    prepare: Callable[[Path], None] | None = None


CASES = {
    "lr-nan": Case(("--lr", "nan"), "--lr nan: must be a finite number"),
    "lr-inf": Case(("--lr", "inf"), "--lr inf: must be a finite number"),
    "lr-zero": Case(("--lr", "0"), "--lr 0.0: must be more than 0"),
    "lr-negative": Case(("--lr", "-0.1"), "--lr -0.1: must be more than 0"),
    "weight-decay-nan": Case(("--weight-decay", "nan"), "--weight-decay nan"),
    "grad-clip-nan": Case(("--grad-clip", "nan"), "--grad-clip nan"),
    "epochs-0": Case(("--epochs", "0"), "--epochs 0: must be at least 1"),
    "batch-size-0": Case(("--batch-size", "0"), "--batch-size 0: must be at least 1"),
    "size-100": Case(("--size", "100"), "--size 100: must be a positive multiple of 32"),
    "val-fraction-1.5": Case(("--val-fraction", "1.5"), "--val-fraction 1.5"),
    "workers-negative": Case(("--workers", "-1"), "--workers -1: must be at least 0"),
    "cat-boost-0": Case(("--cat-boost", "0"), "--cat-boost 0.0: must be more than 0"),
    "device-banana": Case(("--device", "banana"), "--device banana: not a device"),
    "device-cuda-7": Case(("--device", "cuda:7"), "--device cuda:7:"),
    "data-missing": Case(("--data", "{tmp}/nowhere"), "no such folder"),
    "data-empty": Case(("--data", "{tmp}/empty"), "no pet data found"),
    "data-no-pets": Case(("--data", "{data}/TrainVal/color"), "no pet data found"),
    "data-no-masks": Case((), "no labelled photos found", _no_masks),
    "training-mask-label": Case((), "mask values [7] are not labels", _bad_label),
    "validation-mask-size": Case((), "validation data: ", _half_width_mask),
    "out-is-file": Case(("--out", "{tmp}/out-file"), "is a file, not a folder"),
    "out-under-file": Case(("--out", "{tmp}/out-file/run"), "cannot write there (Not a directory)"),
    "out-in-proc": Case(("--out", "/proc/petseg-run"), "--out /proc/petseg-run: cannot write there"),
}
if not torch.cuda.is_available():
    CASES["device-cuda"] = Case(("--device", "cuda"), "--device cuda: CUDA is not available here")


@dataclass
class Outcome:
    """A quick case's run: its result, its folder and the folder's files before the run."""

    result: subprocess.CompletedProcess
    folder: Path
    before: dict[str, str]


@pytest.fixture(scope="module")
def outcomes(pets_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    """Every quick case run once, four at a time, each in its own folder with its own photos."""

    def start(name: str) -> Outcome:
        case, folder = CASES[name], tmp_path_factory.mktemp(name)
        data = make_pets(pets_root, folder)
        (folder / "out-file").write_text("not a folder")
        (folder / "empty").mkdir()
        if case.prepare:
            case.prepare(data)
        before = snapshot(folder)
        args = [a.format(data=data, tmp=folder) for a in case.args]
        return Outcome(fit("--data", data, "--out", folder / "run", *args), folder, before)

    with ThreadPoolExecutor(4) as pool:
        return dict(zip(CASES, pool.map(start, CASES)))


@pytest.mark.parametrize("name", CASES)
def test_quick_fault_is_one_line_before_training(name: str, outcomes: dict[str, Outcome]):
    outcome = outcomes[name]
    assert_one_line_error(outcome.result, CASES[name].says)
    assert "writing" not in outcome.result.stderr  # found before the model was built
    assert snapshot(outcome.folder) == outcome.before  # nothing changed, no --out made
    assert not (outcome.folder / "run").exists()


# --- a full disk ------------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2.5 MB tmpfs: room for one epoch's files of the tiny model, not for the next epoch's too."""
    with tmpfs(tmp_path / "disk", "2500k") as disk:
        yield disk


def test_full_disk_is_found_before_training(pets_root: Path, tmp_path: Path, small_disk: Path):
    data = make_pets(pets_root, tmp_path)
    filler = small_disk / "filler"
    with pytest.raises(OSError):
        filler.write_bytes(b"x" * 3_000_000)  # fills the disk
    before = snapshot(tmp_path)
    assert_one_line_error(fit("--data", data, "--out", small_disk / "run"), "cannot write there (No space left")
    assert snapshot(tmp_path) == before and not (small_disk / "run").exists()


def test_disk_full_while_saving_keeps_the_last_epoch(pets_root: Path, tmp_path: Path, small_disk: Path):
    from models.checkpoint import read_metadata

    data, out = make_pets(pets_root, tmp_path), small_disk / "run"
    before = snapshot(data)
    result = fit("--data", data, "--out", out, "--epochs", "2")
    last = assert_one_line_error(result, "No space left on device")
    assert "epoch 1/2" in result.stderr and f"continue with: {PROG} fit " in last
    assert read_metadata(out / "last.safetensors")["training"]["epoch"] == 1  # epoch 1's, intact
    assert sorted(p.name for p in out.iterdir()) == [".last.state.safetensors", "best.safetensors",
                                                    "last.safetensors", "log.csv"]  # no temp files
    assert snapshot(data) == before


# --- Ctrl-C -----------------------------------------------------------------------------------------


def interrupt_after(command: list[str], line: str) -> subprocess.CompletedProcess:
    """Run ``command``, send SIGINT once its stderr shows ``line``, and return how it ended."""
    process = subprocess.Popen(command, cwd=REPO, env=ENV, stderr=subprocess.PIPE, text=True)
    seen = []
    for text in process.stderr:
        seen.append(text)
        if line in text:
            process.send_signal(signal.SIGINT)
            break
    rest = process.communicate(timeout=60)[1]
    return subprocess.CompletedProcess(command, process.returncode, "", "".join(seen) + rest)


def printed_command(result: subprocess.CompletedProcess) -> list[str]:
    """The resume command an interrupted run printed, to run here as ``python -m training.cli``."""
    hint = assert_one_line_error(result, "; continue with: ", code=130).split("; continue with: ", 1)[1]
    argv = shlex.split(hint)
    assert argv[:2] == [PROG, "fit"]
    return CLI + argv[1:]


def test_ctrl_c_prints_a_resume_command_that_works(pets_root: Path, tmp_path: Path):
    data, out = make_pets(pets_root, tmp_path), tmp_path / "run"
    before = snapshot(data)
    first = interrupt_after([*CLI, "fit", *TINY, "--data", str(data), "--out", str(out), "--epochs", "2"],
                            "writing")  # during epoch 1: nothing saved yet
    assert not out.exists()  # the empty folder it made is gone
    second = interrupt_after(printed_command(first), "segmentation epoch 1/2")  # starts again; stop in epoch 2
    assert (out / "last.safetensors").is_file()
    third = subprocess.run(printed_command(second), cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
    assert third.returncode == 0, third.stderr[-3000:]
    assert f"resuming {out} at segmentation epoch 2" in third.stderr
    assert "segmentation epoch 2/2" in third.stderr
    assert snapshot(data) == before
