"""petseg-export under faults, as a tester meets them: real photos, a real (tiny, random-init) model
and the command run as a real process. Every case checks the exit status, that stderr ends in one
line naming the problem (never a traceback), that no input file was altered and no temp file left.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from petseg_desktop.coco import COCO_FILE
from petseg_desktop.export import export_images
from petseg_desktop.export_files import EXPORT_MARK, TEMP_NAME, collect_inputs

from conftest import tmpfs

REPO_ROOT = Path(__file__).resolve().parent.parent
RUN_TIMEOUT_S = 120
AS_ROOT = os.geteuid() == 0


# ------------------------------------------------------------------------------------------ helpers
def run_export(*args: str | Path, timeout: float = RUN_TIMEOUT_S) -> subprocess.CompletedProcess:
    """Run ``python -m petseg_desktop.export ARGS`` as a separate process."""
    env = {**os.environ, "OMP_NUM_THREADS": "2", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "petseg_desktop.export", *map(str, args)]
    return subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def last_line(stderr: str) -> str:
    """The last non-empty line of ``stderr`` (progress bars redraw with carriage returns)."""
    return [line for line in stderr.replace("\r", "\n").splitlines() if line.strip()][-1]


def assert_reported(proc: subprocess.CompletedProcess, code: int, *words: str) -> str:
    """Exit status ``code``, no traceback, and stderr's last line names ``words``; returns that line."""
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == code, proc.stderr
    line = last_line(proc.stderr)
    for word in words:
        assert word in line, line
    return line


def digests(folder: Path) -> dict[Path, str]:
    """SHA-256 of every file under ``folder``."""
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_unchanged(before: dict[Path, str]) -> None:
    """Every file of an earlier :func:`digests` still exists with the same bytes."""
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in before} == before


def temp_files(*folders: Path) -> list[Path]:
    """Temp files (``.<name>-<hex>.tmp`` and the output probe) under ``folders``."""
    return [p for folder in folders if folder.exists() for p in folder.rglob("*") if TEMP_NAME.match(p.name)]


def exported(folder: Path) -> list[str]:
    """Names of the PNGs in ``folder`` that carry petseg-export's mark."""
    found = []
    for path in sorted(folder.glob("*.png")):
        with Image.open(path) as image:
            if image.info.get("Software") == EXPORT_MARK["Software"]:
                found.append(path.name)
    return found


# ------------------------------------------------------------------------------------------ fixtures
def copy_photos(photos: list[Path], folder: Path) -> Path:
    """``folder`` (created) holding copies of ``photos``."""
    folder.mkdir()
    for photo in photos:
        shutil.copy(photo, folder / photo.name)
    return folder


@pytest.fixture()
def photo_dir(tmp_path: Path, pet_photos: list[Path]) -> Path:
    """Three real JPEG photos and a real PNG photo (the fourth photo re-encoded) in a folder."""
    folder = copy_photos(pet_photos[:3], tmp_path / "photos")
    Image.open(pet_photos[3]).convert("RGB").save(folder / f"{pet_photos[3].stem}.png")
    return folder


@pytest.fixture()
def many_photos(tmp_path: Path, pets_root: Path) -> Path:
    """Forty real photos: enough for a signal to arrive in the middle of an export."""
    return copy_photos(sorted((pets_root / "Test" / "color").glob("*.jpg"))[:40], tmp_path / "many")


@pytest.fixture()
def cli(tiny_semantic_checkpoint: Path):
    """``run_export`` with the tiny checkpoint on the CPU."""
    return lambda *args, **kw: run_export(*args, "--checkpoint", tiny_semantic_checkpoint, "--device", "cpu", **kw)


@pytest.fixture(scope="module")
def segmenter(tiny_semantic_checkpoint: Path):
    from models.predictor import load_segmenter

    return load_segmenter(tiny_semantic_checkpoint, device="cpu")


# ------------------------------------------------------------------------------------ output = input
def test_output_equal_to_input_writes_mask_names_beside_the_photos(cli, photo_dir: Path) -> None:
    before = digests(photo_dir)
    stems = sorted(p.stem for p in before)
    for _ in range(2):  # the second run must not take the first run's masks for photos
        proc = cli("--input", photo_dir, "--output", photo_dir)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
        assert "4 photos" in proc.stderr and "4 written" in proc.stdout
    assert_unchanged(before)
    assert exported(photo_dir) == sorted(f"{stem}_mask.png" for stem in stems)
    assert sorted(p.name for p in photo_dir.iterdir()) == sorted([*(p.name for p in before), *exported(photo_dir)])
    assert temp_files(photo_dir) == []


def test_output_equal_to_input_colour_then_skip_existing(cli, photo_dir: Path) -> None:
    before = digests(photo_dir)
    assert cli("--input", photo_dir, "--output", photo_dir, "--format", "color").returncode == 0
    assert len([n for n in exported(photo_dir) if n.endswith("_mask_colour.png")]) == 4
    proc = cli("--input", photo_dir, "--output", photo_dir, "--format", "color", "--skip-existing")
    assert proc.returncode == 0 and "4 skipped" in proc.stdout, proc.stderr
    assert_unchanged(before) and temp_files(photo_dir) == []


def test_hand_drawn_mask_is_not_written_over(cli, photo_dir: Path) -> None:
    photo = sorted(photo_dir.glob("*.jpg"))[0]
    drawn = photo_dir / f"{photo.stem}_mask.png"
    Image.fromarray(np.ones((8, 8), np.uint8)).save(drawn)  # as the app's editor saves one
    before = digests(photo_dir)
    proc = cli("--input", photo_dir, "--output", photo_dir)
    assert_reported(proc, 1, drawn.name, "PetSeg did not write it: kept", "--overwrite")
    assert "3 written" in proc.stderr
    assert_unchanged(before) and temp_files(photo_dir) == []


def test_overwrite_replaces_a_file_petseg_did_not_write(cli, photo_dir: Path) -> None:
    photo = sorted(photo_dir.glob("*.jpg"))[0]
    drawn = photo_dir / f"{photo.stem}_mask.png"
    Image.fromarray(np.ones((8, 8), np.uint8)).save(drawn)
    photos = {p: d for p, d in digests(photo_dir).items() if p != drawn}
    proc = cli("--input", photo_dir, "--output", photo_dir, "--overwrite")
    assert proc.returncode == 0 and "4 written" in proc.stdout, proc.stderr
    assert drawn.name in exported(photo_dir)
    assert_unchanged(photos) and temp_files(photo_dir) == []


def test_masks_sidecars_and_hidden_files_are_never_photos(segmenter, photo_dir: Path, tmp_path: Path) -> None:
    jpg = sorted(photo_dir.glob("*.jpg"))[0]
    (photo_dir / ".petseg").mkdir()
    for name in (".petseg/copy.jpg", ".hidden.jpg", "dog_mask.png", "dog_mask_colour.png"):
        shutil.copy(jpg, photo_dir / name)
    before = digests(photo_dir)
    summary = export_images([photo_dir], tmp_path / "out", segmenter)
    assert (summary.total, summary.written, summary.failed) == (4, 4, [])
    summary = export_images([photo_dir / ".petseg" / "copy.jpg", photo_dir / "dog_mask.png"], tmp_path / "o2", segmenter)
    assert summary.written == 0 and sorted(r.split(",")[0] for _, r in summary.failed) == [
        "inside PetSeg's .petseg folder", "named like a PetSeg mask (*_mask.png"]  # fmt: skip
    assert_unchanged(before)


def test_exported_masks_used_as_input_are_not_photos(cli, photo_dir: Path, tmp_path: Path) -> None:
    masks = tmp_path / "masks"
    assert cli("--input", photo_dir, "--output", masks).returncode == 0
    before = digests(masks)
    proc = cli("--input", masks, "--output", tmp_path / "again")
    assert proc.returncode == 0 and "0 photos" in proc.stderr, proc.stderr
    one = sorted(masks.iterdir())[0]
    assert_reported(cli("--input", one, "--output", tmp_path / "again"), 1, one.name, "written by petseg-export")
    assert_unchanged(before)


# ------------------------------------------------------------------------------------- COCO and skip
def test_existing_coco_file_is_refused_without_overwrite(cli, photo_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / COCO_FILE).write_text('{"images": [], "annotations": [], "note": "mine"}')
    before = digests(photo_dir) | digests(out)
    assert_reported(cli("--input", photo_dir, "--output", out, "--format", "coco"), 2, COCO_FILE, "--overwrite")
    assert_unchanged(before) and temp_files(out) == []
    proc = cli("--input", photo_dir, "--output", out, "--format", "coco", "--overwrite")
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads((out / COCO_FILE).read_text())["images"]) == 4
    assert_unchanged(digests(photo_dir))


@pytest.mark.parametrize("text", ['{"images": [1], "annotations": []}', '{"images": [', "[]", "\udcff"])
def test_malformed_coco_file_with_skip_existing_is_one_line(cli, photo_dir: Path, tmp_path: Path, text: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / COCO_FILE).write_bytes(text.encode("utf-8", "surrogateescape"))
    before = digests(photo_dir) | digests(out)
    proc = cli("--input", photo_dir, "--output", out, "--format", "coco", "--skip-existing")
    assert_reported(proc, 2, COCO_FILE, "cannot add to this file")
    assert_unchanged(before) and temp_files(out) == []


def test_skip_existing_rewrites_an_empty_mask(segmenter, photo_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert export_images([photo_dir], out, segmenter).written == 4
    empty = sorted(out.iterdir())[0]
    empty.write_bytes(b"")
    before = digests(photo_dir)
    summary = export_images([photo_dir], out, segmenter, skip_existing=True)
    assert (summary.written, summary.skipped, summary.failed) == (1, 3, [])
    assert empty.name in exported(out)
    assert_unchanged(before) and temp_files(out) == []


def test_skip_existing_does_not_trust_an_undecodable_mask(cli, photo_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert cli("--input", photo_dir, "--output", out).returncode == 0
    junk = sorted(out.iterdir())[0]
    junk.write_bytes(junk.read_bytes()[:-40])  # truncated, say by a full disk while copying
    Image.fromarray(np.ones((8, 8), np.uint8)).save(junk.with_name("x.png"))
    before = digests(photo_dir) | {junk: hashlib.sha256(junk.read_bytes()).hexdigest()}
    proc = cli("--input", photo_dir, "--output", out, "--skip-existing")
    # the truncated file keeps its header, mark included: it is ours and is written again
    assert proc.returncode == 0 and "1 written, 3 skipped" in proc.stdout, proc.stderr
    junk.write_bytes(b"notes, not a PNG")
    proc = cli("--input", photo_dir, "--output", out, "--skip-existing")
    assert_reported(proc, 1, junk.name, "PetSeg did not write it: kept")
    assert junk.read_bytes() == b"notes, not a PNG"
    assert_unchanged({p: d for p, d in before.items() if p != junk}) and temp_files(out) == []


# -------------------------------------------------------------------------------- unusable output
def test_output_is_an_existing_file(cli, photo_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "masks.png"
    target.write_bytes(b"precious")
    before = digests(photo_dir)
    assert_reported(cli("--input", photo_dir, "--output", target), 2, str(target), "not a folder")
    assert target.read_bytes() == b"precious"
    assert_unchanged(before)


def test_output_under_a_regular_file(cli, photo_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("a file")
    before = digests(photo_dir)
    proc = cli("--input", photo_dir, "--output", tmp_path / "notes.txt" / "masks")
    assert_reported(proc, 2, "notes.txt", "not writable")
    assert_unchanged(before)


@pytest.mark.skipif(AS_ROOT, reason="root writes into read-only folders; output under a file covers this as root")
def test_output_in_a_read_only_folder(cli, photo_dir: Path, tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        before = digests(photo_dir)
        assert_reported(cli("--input", photo_dir, "--output", locked / "masks"), 2, "not writable")
        assert_reported(cli("--input", photo_dir, "--output", locked), 2, "not writable")
        assert_unchanged(before)
    finally:
        locked.chmod(0o700)


def test_unusable_output_is_found_before_any_photo_is_segmented(cli, photo_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("a file")
    proc = cli("--input", photo_dir, "--output", tmp_path / "notes.txt" / "masks")
    assert "Exporting" not in proc.stderr and "model" not in proc.stderr  # neither the model nor a photo
    assert_reported(proc, 2, "not writable")


# ----------------------------------------------------------------------------- device, inputs, model
def test_unknown_device(photo_dir: Path, tmp_path: Path, tiny_semantic_checkpoint: Path) -> None:
    proc = run_export("--input", photo_dir, "--output", tmp_path / "o", "--device", "banana",
                      "--checkpoint", tiny_semantic_checkpoint)  # fmt: skip
    assert_reported(proc, 2, "banana")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("device", ["cuda", "cuda:99"])
def test_missing_gpu(photo_dir: Path, tmp_path: Path, tiny_semantic_checkpoint: Path, device: str) -> None:
    import torch

    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    proc = run_export("--input", photo_dir, "--output", tmp_path / "o", "--device", device,
                      "--checkpoint", tiny_semantic_checkpoint)  # fmt: skip
    assert_reported(proc, 2, f"device {device}")


def test_missing_input_and_missing_model(cli, photo_dir: Path, tmp_path: Path) -> None:
    assert_reported(cli("--input", tmp_path / "nowhere", "--output", tmp_path / "o"), 2, "nowhere")
    proc = run_export("--input", photo_dir, "--output", tmp_path / "o", "--checkpoint", tmp_path / "none.safetensors")
    assert_reported(proc, 2, "none.safetensors")
    assert temp_files(tmp_path) == []


def test_fifo_named_as_a_photo_is_listed_not_opened(cli, photo_dir: Path, tmp_path: Path) -> None:
    fifo = photo_dir / "pipe.jpg"
    os.mkfifo(fifo)
    before = digests(photo_dir)
    proc = cli("--input", photo_dir, "--output", tmp_path / "a", timeout=60)  # in a folder: passed over
    assert proc.returncode == 0 and "4 written" in proc.stdout, proc.stderr
    proc = cli("--input", fifo, *sorted(photo_dir.glob("*.jpg")), "--output", tmp_path / "b", timeout=60)
    assert_reported(proc, 1, "pipe.jpg", "FIFO")
    assert "3 written" in proc.stderr
    assert_unchanged(before) and temp_files(tmp_path) == []


def test_broken_link_and_folder_named_as_photos(segmenter, photo_dir: Path, tmp_path: Path) -> None:
    (photo_dir / "gone.jpg").symlink_to(tmp_path / "missing.jpg")
    (photo_dir / "album.jpg").mkdir()
    shutil.copy(sorted(photo_dir.glob("*.jpg"))[0], photo_dir / "album.jpg" / "inside.jpg")
    photos, rejected = collect_inputs([photo_dir])
    assert len(photos) == 4 and rejected == []  # in a folder: passed over
    summary = export_images([photo_dir / "gone.jpg", photo_dir / "album.jpg"], tmp_path / "out", segmenter)
    assert summary.written == 0
    assert [(p.name, r) for p, r in summary.failed] == [
        ("album.jpg", "a folder, not a photo"), ("gone.jpg", "broken link, not a photo")]  # fmt: skip


def test_decompression_bomb_warning_is_not_printed(cli, photo_dir: Path, tmp_path: Path) -> None:
    big = photo_dir / "huge.png"
    Image.new("L", (10_000, 9_000)).save(big)  # 90 MP: above Pillow's warning threshold
    big.write_bytes(big.read_bytes()[:2_000])  # truncated: fails fast after the warning
    before = digests(photo_dir)
    proc = cli("--input", photo_dir, "--output", tmp_path / "out")
    assert "DecompressionBomb" not in proc.stderr + proc.stdout
    assert_reported(proc, 1, "huge.png", "truncated or corrupt")
    assert_unchanged(before) and temp_files(tmp_path) == []


# ------------------------------------------------------------------------------- signals and kill -9
def _start_and_signal(many_photos: Path, out: Path, checkpoint: Path, signum: int) -> subprocess.CompletedProcess:
    """Start an export of ``many_photos``, send ``signum`` once its first mask exists, wait for it."""
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    command = [sys.executable, "-m", "petseg_desktop.export", "--input", str(many_photos), "--output", str(out),
               "--checkpoint", str(checkpoint), "--device", "cpu"]  # fmt: skip
    proc = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while not (out.is_dir() and any(p.suffix == ".png" for p in out.iterdir())):
        assert proc.poll() is None and time.monotonic() < deadline, "export ended before its first mask"
        time.sleep(0.01)
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=RUN_TIMEOUT_S)
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly(many_photos: Path, tmp_path: Path, tiny_semantic_checkpoint: Path, signum: int) -> None:
    before = digests(many_photos)
    out = tmp_path / "out"
    proc = _start_and_signal(many_photos, out, tiny_semantic_checkpoint, signum)
    assert_reported(proc, 128 + signum, "Export cancelled")
    written = exported(out)
    assert 1 <= len(written) < 40 and sorted(p.name for p in out.iterdir()) == written
    assert_unchanged(before) and temp_files(out) == []


def test_kill_9_leftovers_are_removed_by_the_next_run(
    cli, many_photos: Path, tmp_path: Path, tiny_semantic_checkpoint: Path
) -> None:
    out = tmp_path / "out"
    _start_and_signal(many_photos, out, tiny_semantic_checkpoint, signal.SIGKILL)
    stale = out / f".{sorted(many_photos.iterdir())[0].stem}.png-0123456789abcdef.tmp"
    stale.write_bytes(b"")  # what a kill -9 during a write leaves
    fresh = out / ".other.png-fedcba9876543210.tmp"
    fresh.write_bytes(b"")  # a temp file being written right now by someone else
    an_hour_ago = time.time() - 3600
    for leftover in temp_files(out):
        if leftover != fresh:
            os.utime(leftover, (an_hour_ago, an_hour_ago))
    before = digests(many_photos)
    proc = cli("--input", many_photos, "--output", out, "--skip-existing")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert temp_files(out) == [fresh] and len(exported(out)) == 40
    assert_unchanged(before)


# ------------------------------------------------------------------------------------------ full disk
@pytest.fixture()
def full_disk(tmp_path: Path):
    """A folder on a 300 KB tmpfs with no room left (root only; skipped where mounting is refused)."""
    with tmpfs(tmp_path / "disk", "300k") as disk:
        (disk / "out").mkdir()
        filler = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
        try:  # fill it to the last block; the empty probe file still fits
            while os.write(filler, b"\0" * 4096):
                pass
        except OSError:
            pass
        finally:
            os.close(filler)
        yield disk / "out"


def test_coco_on_a_full_disk_is_a_listed_failure_with_a_summary(cli, photo_dir: Path, full_disk: Path) -> None:
    before = digests(photo_dir)
    proc = cli("--input", photo_dir, "--output", full_disk, "--format", "coco")
    assert "Traceback" not in proc.stderr and proc.returncode == 1, proc.stderr
    assert "Export done: 0 written" in proc.stderr
    line = last_line(proc.stderr)
    assert line.startswith(f"  FAILED {full_disk / COCO_FILE}: not written (No space left on device)"), line
    assert "4 photos segmented for it are in no file" in line
    assert not list(full_disk.iterdir())  # no annotations.json, no temp file
    assert_unchanged(before)
