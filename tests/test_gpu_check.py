"""``make gpu-check`` (tests/benchmarks/gpu_check.py): on a machine without CUDA, and the parts that need no GPU."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "benchmarks"))

import gpu_check  # noqa: E402


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: make gpu-check runs for real")
def test_without_cuda_it_says_so_in_one_line_and_exits_0(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "tests" / "benchmarks" / "gpu_check.py")], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "gpu-check: no CUDA GPU here (torch.cuda.is_available() is False); nothing to do\n"
    assert list(tmp_path.iterdir()) == []  # no results folder


def test_recipe_fits_are_the_shipped_recipes_commands(tmp_path):
    from training.cli import build_parser

    fits = gpu_check.recipe_fits(gpu_check.RECIPE, Path("/pets"), tmp_path)
    assert list(fits) == ["prompt_unet-effnet256", "unet-effnet256"]
    parser, _ = build_parser()
    for name, args in fits.items():
        parsed = parser.parse_args(args)
        assert (parsed.data, parsed.out, parsed.encoder) == ("/pets", str(tmp_path / name), "effnet_lite0")
    steps = {s.name: s for s in gpu_check.build_steps(tmp_path, Path("/pets"), recipe_limit=64, full_recipes=False)}
    assert list(steps) == ["cuda-tests", "startup-check", "bench", "recipe-prompt_unet-effnet256",
                           "recipe-unet-effnet256"]
    quick = parser.parse_args(steps["recipe-unet-effnet256"].command[3:])
    assert (quick.epochs, quick.limit, quick.resume, quick.size) == (1, 64, None, 256)  # the recipe, one short epoch


def test_a_step_past_its_time_is_stopped_and_reported(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check, "MIN_STEP_SECONDS", 1)
    step = gpu_check.Step("sleepy", [sys.executable, "-c", "import time; print('started', flush=True); time.sleep(60)"],
                          timeout=30, needs_data=False)
    started = time.monotonic()
    outcome = gpu_check.run_step(step, tmp_path, data_ok=False, seconds_left=3)  # the budget's end comes first
    assert time.monotonic() - started < 20
    assert (outcome.status, outcome.log) == ("timeout", "sleepy.log")
    assert "started" in (tmp_path / "sleepy.log").read_text()
    photos = gpu_check.Step("photos", ["true"], timeout=30)
    skipped = gpu_check.run_step(photos, tmp_path, data_ok=False, seconds_left=100)
    assert (skipped.status, skipped.note) == ("skipped", "no pet photos (--data / PETSEG_PETS)")
    table = gpu_check.summary_table([outcome, skipped])
    assert "| sleepy | timeout | 3 | stopped after 3 s |" in table and "| photos | skipped |" in table
