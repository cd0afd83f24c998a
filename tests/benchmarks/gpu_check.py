"""``make gpu-check``: every check that needs a CUDA GPU, as one prepared run.

    python tests/benchmarks/gpu_check.py [--out DIR] [--data DIR] [--budget S] [--recipe-limit N] [--full-recipes]

Without CUDA it prints one line and exits 0. On a CUDA machine it runs these steps, each with its
own timeout (and never past ``--budget`` seconds in all, 450 by default: under 8 minutes on one
H200), writing every log and result into one folder (default ``gpu-check-<YYYYmmdd-HHMMSS>/``):

1. ``cuda-tests``: ``pytest -m cuda`` (tests/test_cuda.py): the Predictor and the Segmenter on
   CUDA equal the CPU on real photos with the bundled checkpoints; fp16 + GradScaler and bf16
   training steps have a finite loss;
2. ``startup-check``: ``petseg --startup-check --device cuda``, offscreen;
3. ``bench``: ``tests/benchmarks/bench_inference.py --device cuda`` at 12 and 24 MP (``make bench``
   on the GPU);
4. ``recipe-<run>``: one epoch (``--recipe-limit`` photos) of each ``fit`` of
   training/recipes/train_default_models.sh on the GPU, with its images/s;
5. ``full-<run>`` (only with ``--full-recipes``, and only while the budget has time left): each
   recipe's full run.

At the end it prints a summary table and writes ``summary.json``. It exits 1 when a step failed
or timed out (skipped steps do not count).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "training" / "recipes" / "train_default_models.sh"
NO_CUDA = "gpu-check: no CUDA GPU here (torch.cuda.is_available() is False); nothing to do"
MIN_STEP_SECONDS = 20  # a step is skipped when less than this is left of the budget


@dataclass
class Step:
    """One command of the check, with its timeout and how to read its results."""

    name: str
    command: list[str]
    timeout: float
    needs_data: bool = True
    env: dict[str, str] = field(default_factory=dict)
    results: Callable[[], dict[str, Any]] | None = None  # read after the command succeeded


@dataclass
class Outcome:
    """What a step gave: passed, failed, timeout or skipped, and its results."""

    name: str
    status: str
    seconds: float = 0.0
    log: str | None = None
    note: str = ""
    results: dict[str, Any] = field(default_factory=dict)


def recipe_fits(recipe: Path, data: Path, runs: Path) -> dict[str, list[str]]:
    """The ``"$TRAIN" fit ...`` commands of ``recipe`` as ``fit`` argument lists, by their run folder's
    name, with ``$DATA`` and ``$RUNS`` filled in."""
    text = recipe.read_text().replace("\\\n", " ")
    fits = {}
    for line in text.splitlines():
        words = shlex.split(line, comments=True)
        if words[:2] == ["$TRAIN", "fit"]:
            args = [w.replace("$DATA", str(data)).replace("$RUNS", str(runs)) for w in words[1:]]
            fits[Path(args[args.index("--out") + 1]).name] = args
    return fits


def epoch_speed(run: Path) -> dict[str, Any]:
    """Images/s of a finished run's last epoch (training photos over the epoch's time, validation included)."""
    from models.checkpoint import read_metadata

    with open(run / "log.csv", newline="") as f:
        last = list(csv.DictReader(f))[-1]
    meta = read_metadata(run / "last.safetensors")
    images, seconds = meta["training"]["train_images"], float(last["seconds"])
    return {"train_images": images, "epoch_seconds": seconds, "images_per_s": round(images / seconds, 1),
            "val_miou": float(last["val_miou"]), "precision": meta["hardware"]["precision"]}


def build_steps(out: Path, data: Path, recipe_limit: int, full_recipes: bool) -> list[Step]:
    """The check's steps, in the order they run."""
    python = sys.executable
    cli = [python, "-m", "training.cli"]
    steps = [
        Step("cuda-tests", [python, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", "tests/test_cuda.py",
                            f"--junitxml={out / 'cuda-tests.xml'}"], timeout=180),
        Step("startup-check", [python, "-m", "petseg_desktop.app", "--startup-check", "--device", "cuda"],
             timeout=90, needs_data=False,
             env={"QT_QPA_PLATFORM": "offscreen", "XDG_DATA_HOME": str(out / "app-home" / "data"),
                  "XDG_CONFIG_HOME": str(out / "app-home" / "config")}),
        Step("bench", [python, "tests/benchmarks/bench_inference.py", "--device", "cuda", "--sizes", "12 MP", "24 MP",
                       "--limit", "100", "--json", str(out / "bench.json")], timeout=150,
             results=lambda: json.loads((out / "bench.json").read_text())),
    ]
    for name, args in recipe_fits(RECIPE, data, out / "runs").items():
        args = [a for a in args if a != "--resume"] + ["--epochs", "1", "--limit", str(recipe_limit)]
        steps.append(Step(f"recipe-{name}", [*cli, *args], timeout=150,
                          results=lambda run=out / "runs" / name: epoch_speed(run)))
    if full_recipes:
        for name, args in recipe_fits(RECIPE, data, out / "full-runs").items():
            steps.append(Step(f"full-{name}", [*cli, *args], timeout=float("inf"),
                              results=lambda run=out / "full-runs" / name: epoch_speed(run)))
    return steps


def run_step(step: Step, out: Path, data_ok: bool, seconds_left: float) -> Outcome:
    """Run ``step`` (its output into ``<out>/<name>.log``) within its timeout and ``seconds_left``."""
    if step.needs_data and not data_ok:
        return Outcome(step.name, "skipped", note="no pet photos (--data / PETSEG_PETS)")
    timeout = min(step.timeout, seconds_left)
    if timeout < MIN_STEP_SECONDS:
        return Outcome(step.name, "skipped", note=f"only {seconds_left:.0f} s of the budget left")
    log = out / f"{step.name}.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), **step.env}
    started = time.monotonic()
    with open(log, "w") as f:
        f.write(f"$ {shlex.join(step.command)}\n")
        f.flush()
        process = subprocess.Popen(step.command, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT,
                                   start_new_session=True)  # its own process group: a timeout ends it all
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            code = None
    outcome = Outcome(step.name, "passed" if code == 0 else "timeout" if code is None else "failed",
                      round(time.monotonic() - started, 1), log.name)
    if code is None:
        outcome.note = f"stopped after {timeout:.0f} s"
    elif code != 0:
        outcome.note = f"exit {code}; " + last_line(log)
    elif step.results is not None:
        try:
            outcome.results = step.results()
        except Exception as error:  # the command passed; its results are unreadable: say so, keep going
            outcome.note = f"results unreadable: {type(error).__name__}: {error}"
    else:
        outcome.note = last_line(log)
    return outcome


def last_line(log: Path) -> str:
    """The last non-empty line of a log, for the summary."""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1][:160] if lines else ""


def summary_table(outcomes: list[Outcome]) -> str:
    """The outcomes as a Markdown table; recipes show their images/s."""
    rows = ["| step | status | seconds | note |", "|---|---|---|---|"]
    for o in outcomes:
        note, r = o.note, o.results
        if "images_per_s" in r:
            note = (f"{r['images_per_s']} images/s ({r['precision']}; {r['train_images']} photos, "
                    f"{r['epoch_seconds']} s with validation)")
        elif "cases" in r:
            note = "; ".join(f"{case}: set_image {c['set_image_ms']:.0f} ms, click {c['click_median_ms']:.0f} ms"
                             for case, c in r["cases"].items())
        rows.append(f"| {o.name} | {o.status} | {o.seconds:.0f} | {note} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run every check that needs a CUDA GPU (make gpu-check).")
    parser.add_argument("--out", help="folder for logs and results (default gpu-check-<YYYYmmdd-HHMMSS>)")
    parser.add_argument("--data", default=os.environ.get("PETSEG_PETS", str(REPO.parent / "shared" / "pets")),
                        help="the pet photos (default $PETSEG_PETS or ../shared/pets)")
    parser.add_argument("--budget", type=float, default=450, help="seconds for all steps together (default 450)")
    parser.add_argument("--recipe-limit", type=int, default=512, help="training photos per recipe epoch (default 512)")
    parser.add_argument("--full-recipes", action="store_true",
                        help="also run each recipe in full, while the budget has time left (raise --budget)")
    args = parser.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print(NO_CUDA)
        return 0
    started, started_at = time.monotonic(), datetime.now().astimezone().isoformat(timespec="seconds")
    out = Path(args.out or f"gpu-check-{datetime.now():%Y%m%d-%H%M%S}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    data = Path(args.data).resolve()
    data_ok = (data / "TrainVal" / "color").is_dir() and (data / "Test" / "color").is_dir()
    os.environ["PETSEG_PETS"] = str(data)  # where the steps' tests and benchmark find the photos
    print(f"gpu-check: {torch.cuda.get_device_name(0)}, torch {torch.__version__}; writing {out}", flush=True)
    outcomes = []
    for step in build_steps(out, data, args.recipe_limit, args.full_recipes):
        outcome = run_step(step, out, data_ok, args.budget - (time.monotonic() - started))
        print(f"  {outcome.name}: {outcome.status} ({outcome.seconds:.0f} s) {outcome.note}", flush=True)
        outcomes.append(outcome)
    table = summary_table(outcomes)
    print("\n" + table)
    summary = {
        "gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "cuda": torch.version.cuda,
        "started": started_at, "data": str(data),
        "seconds": round(time.monotonic() - started, 1), "steps": [asdict(o) for o in outcomes],
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "summary.md").write_text(table + "\n")
    return 1 if any(o.status in ("failed", "timeout") for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
