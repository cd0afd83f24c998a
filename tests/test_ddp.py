"""`petseg-train fit` under torchrun: 2 CPU processes with gloo, DistributedDataParallel."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture()
def ddp_data(pets_root: Path, tmp_path: Path) -> Path:
    color, label = tmp_path / "pets" / "TrainVal" / "color", tmp_path / "pets" / "TrainVal" / "label"
    color.mkdir(parents=True)
    label.mkdir(parents=True)
    stems = sorted(p.stem for p in (pets_root / "TrainVal" / "color").glob("*.jpg"))[::100][:10]
    for stem in stems:
        (color / f"{stem}.jpg").symlink_to(pets_root / "TrainVal" / "color" / f"{stem}.jpg")
        (label / f"{stem}.png").symlink_to(pets_root / "TrainVal" / "label" / f"{stem}.png")
    return tmp_path / "pets"


def test_fit_runs_on_two_gloo_processes(ddp_data: Path, tmp_path: Path):
    from models.checkpoint import load_checkpoint

    out = tmp_path / "run"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "training.cli", "fit", "--arch", "unet", "--data", str(ddp_data), "--out", str(out),
        "--epochs", "2", "--batch-size", "2", "--limit", "8", "--val-fraction", "0.2", "--size", "64",
        "--encoder", "scratch", "--base", "8", "--depth", "3", "--workers", "0", "--augment", "none", "--no-progress",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(out / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2
    assert all(r["world_size"] == "2" for r in rows)
    # 8 photos split over 2 ranks at batch 2: 2 steps per rank, 4 in all (both ranks trained)
    assert all(r["train_steps"] == "4" for r in rows)
    model, meta = load_checkpoint(out / "last.safetensors")
    assert meta["hardware"]["world_size"] == 2 and meta["training"]["train_images"] == 8
    assert (out / "best.safetensors").is_file() and (out / "curves.png").is_file()
    assert result.stderr.count("done: best val mIoU") == 1  # only rank 0 reports
