"""petseg-export under torchrun: 2 real CPU processes (gloo) on 6 real photos write the same files as one.

Each torchrun run is compared with a single-process run of the same command: byte-identical masks,
an equal annotations.json (the same image and annotation ids), one report from rank 0, no partial
or temp file left in the output folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from petseg_desktop.coco import COCO_FILE
from petseg_desktop.export import ShareResult, export_images, merge_shares, plan_export, run_export
from petseg_desktop.export_ranks import Ranks

REPO = Path(__file__).resolve().parent.parent
BROKEN = "Abyssinian_2a.jpg"  # a corrupt photo, second in the sorted list: rank 1's share
TIMEOUT_S = 180


def export_command(processes: int, photos: Path, out: Path, checkpoint: Path, *extra: str,
                   program: tuple[str, ...] = ("-m", "petseg_desktop.export")) -> subprocess.CompletedProcess:
    """``petseg-export`` (or ``program``) with the tiny model on the CPU: plain, or under torchrun with ``processes``."""
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)] if processes > 1 else []
    command = [
        sys.executable, *launcher, *program, "--input", str(photos), "--output", str(out),
        "--checkpoint", str(checkpoint), "--device", "cpu", "--rank-timeout", "60", *extra,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)


@pytest.fixture(scope="module")
def six_photos(tmp_path_factory: pytest.TempPathFactory, pets_root: Path, pet_photos: list[Path]) -> Path:
    """The four ``pet_photos`` and two more real Test photos, copied into a folder."""
    names = sorted((pets_root / "Test" / "color").glob("*.jpg"))
    folder = tmp_path_factory.mktemp("six")
    for photo in [*pet_photos, names[len(names) // 4], names[3 * len(names) // 4]]:
        shutil.copy(photo, folder / photo.name)
    assert len(list(folder.iterdir())) == 6
    return folder


@pytest.fixture()
def with_broken(six_photos: Path, tmp_path: Path) -> Path:
    """``six_photos`` plus a corrupt JPEG that sorts second (so rank 1 of 2 meets it)."""
    folder = tmp_path / "seven"
    shutil.copytree(six_photos, folder)
    (folder / BROKEN).write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    assert sorted(p.name for p in folder.iterdir()).index(BROKEN) == 1
    return folder


def files(folder: Path) -> dict[str, bytes]:
    """Every entry of ``folder`` (hidden ones too) by name, with its bytes."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_two_processes_write_the_same_masks(six_photos: Path, tmp_path: Path, tiny_semantic_checkpoint: Path) -> None:
    one = export_command(1, six_photos, tmp_path / "one", tiny_semantic_checkpoint)
    two = export_command(2, six_photos, tmp_path / "two", tiny_semantic_checkpoint)
    assert one.returncode == 0, one.stderr[-3000:]
    assert two.returncode == 0, two.stderr[-3000:]
    masks = files(tmp_path / "one")
    assert sorted(masks) == sorted(f"{p.stem}.png" for p in six_photos.iterdir())
    assert files(tmp_path / "two") == masks  # byte-identical, nothing else (no temp or partial file)
    assert "6 photos over 2 processes" in two.stderr and "Exporting (rank 0 of 2)" in two.stderr
    assert two.stdout.count("Export done: 6 written, 0 skipped, 0 failed of 6") == 1  # rank 0 reports for all


def test_two_processes_write_one_coco_file_and_report_a_failure_on_rank_1(
    with_broken: Path, tmp_path: Path, tiny_semantic_checkpoint: Path
) -> None:
    one = export_command(1, with_broken, tmp_path / "one", tiny_semantic_checkpoint, "--format", "coco")
    two = export_command(2, with_broken, tmp_path / "two", tiny_semantic_checkpoint, "--format", "coco")
    assert one.returncode == 1, one.stderr[-3000:]
    assert two.returncode != 0 and "exitcode  : 1" in two.stderr, two.stderr[-3000:]  # torchrun: a worker exited 1
    assert "petseg_desktop/" not in two.stderr  # no traceback from a worker (torchrun prints its own)
    assert sorted(os.listdir(tmp_path / "two")) == [COCO_FILE]  # no partial or temp file
    doc = json.loads((tmp_path / "two" / COCO_FILE).read_text())
    assert doc == json.loads((tmp_path / "one" / COCO_FILE).read_text())
    assert [image["id"] for image in doc["images"]] == list(range(1, 7))
    assert BROKEN not in {image["file_name"] for image in doc["images"]}
    assert two.stderr.count("Export done: 6 written, 0 skipped, 1 failed of 7") == 1
    assert two.stderr.count(f"FAILED {with_broken / BROKEN}") == 1  # rank 1's failure, reported by rank 0


def test_a_setup_problem_stops_every_process_before_any_photo(
    six_photos: Path, tmp_path: Path, tiny_semantic_checkpoint: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / COCO_FILE).write_text("{}")
    proc = export_command(2, six_photos, out, tiny_semantic_checkpoint, "--format", "coco")
    assert proc.returncode != 0 and "exitcode  : 2" in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.count("already exists: pass --skip-existing") == 1  # said once, by rank 0
    assert sorted(os.listdir(out)) == [COCO_FILE] and (out / COCO_FILE).read_text() == "{}"


SLOW_RANK_1 = """
import os, sys, time
import petseg_desktop.export as export

def slow_on_rank_1(*args, **kwargs):
    if os.environ["RANK"] == "1":
        time.sleep(9)  # well past --rank-timeout 4, while the start is well within it
    return run_export(*args, **kwargs)

run_export, export.run_export = export.run_export, slow_on_rank_1
sys.exit(export.main(sys.argv[1:]))
"""


def test_a_late_process_is_named_after_the_timeout_not_waited_for(
    six_photos: Path, tmp_path: Path, tiny_semantic_checkpoint: Path
) -> None:
    script = tmp_path / "slow_rank_1.py"
    script.write_text(SLOW_RANK_1)
    proc = export_command(2, six_photos, tmp_path / "out", tiny_semantic_checkpoint, "--rank-timeout", "4",
                          program=(str(script),))
    assert proc.returncode != 0 and "exitcode  : 1" in proc.stderr, proc.stderr[-3000:]
    assert "not every process reached the end of its photos within 4 s" in proc.stderr
    assert "Ranks 1 failed to pass monitoredBarrier" in proc.stderr
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temp file


def test_three_shares_merge_into_the_single_process_coco_file(
    six_photos: Path, tmp_path: Path, tiny_semantic_checkpoint: Path
) -> None:
    """The split and the merge without processes: 3 shares of an export that adds to an existing file."""
    from models.predictor import load_segmenter

    segmenter = load_segmenter(tiny_semantic_checkpoint, "cpu")
    photos = sorted(six_photos.iterdir())
    for out in (tmp_path / "one", tmp_path / "three"):
        export_images(photos[:2], out, segmenter, fmt="coco")  # ids 1, 2 taken: the shares continue after them
    export_images([six_photos], tmp_path / "one", segmenter, fmt="coco", skip_existing=True)

    plan = plan_export([six_photos], tmp_path / "three", "coco", skip_existing=True)
    shares = [plan.share(rank, 3) for rank in range(3)]
    assert [[photo for photo, _ in share.todo] for share in shares] == [[photos[2], photos[5]], [photos[3]], [photos[4]]]
    results = [ShareResult(run_export(share, segmenter), share.coco.entries, 0) for share in shares]
    summary = merge_shares(plan, results, seconds=1.0)
    assert (summary.written, summary.skipped, summary.failed) == (4, 2, [])
    assert json.loads((tmp_path / "three" / COCO_FILE).read_text()) == json.loads((tmp_path / "one" / COCO_FILE).read_text())


def test_each_process_takes_its_own_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    second = Ranks(rank=3, world=4, local_rank=1)
    assert second.device(None) == "cuda:1" and second.device("cuda") == "cuda:1"
    assert second.device("cpu") == "cpu" and second.device("cuda:0") == "cuda:0"
    assert Ranks().device(None) is None  # a single process: automatic, as before
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert second.device(None) is None
