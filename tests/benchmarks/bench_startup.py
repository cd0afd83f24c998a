"""Benchmark how long PetSeg takes from launch to a usable window (window shown, models loaded).

    python tests/benchmarks/bench_startup.py [--app dist/petseg/petseg] [--runs 5]

Launches ``APP --startup-check`` offscreen in a fresh profile, times from the launch to the line
it prints once both default models are loaded, and to the process exit (window closed, worker
stopped). The first run after a build or a reboot is the coldest (files not in the page cache).
Prints a Markdown table. ``--app`` also takes the source install (``.venv/bin/petseg``).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
READY_LINE = "petseg startup check:"


def time_one_start(app: Path) -> tuple[float, float]:
    """Seconds from launch to the ready line, and to the process exit."""
    with tempfile.TemporaryDirectory() as home:
        env = {"PATH": "/usr/bin:/bin", "HOME": home, "LANG": "C.UTF-8", "QT_QPA_PLATFORM": "offscreen"}
        started = time.perf_counter()
        process = subprocess.Popen([str(app), "--startup-check"], cwd=home, env=env, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        ready = None
        for line in process.stdout:
            if line.startswith(READY_LINE):
                ready = time.perf_counter() - started
                if not line.rstrip().endswith("ok"):
                    raise SystemExit(f"startup check failed: {line.strip()}")
        process.wait()
        if ready is None or process.returncode:
            raise SystemExit(f"{app} --startup-check exited with {process.returncode} and no ready line")
        return ready, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--app", type=Path, default=REPO / "dist" / "petseg" / "petseg")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    times = [time_one_start(args.app.resolve()) for _ in range(args.runs)]
    ready, total = zip(*times)
    print("| app | runs | first ready s | median ready s | max ready s | median exit s |")
    print("|---|---|---|---|---|---|")
    print(f"| {args.app} | {args.runs} | {ready[0]:.2f} | {statistics.median(ready):.2f} | {max(ready):.2f} "
          f"| {statistics.median(total):.2f} |")


if __name__ == "__main__":
    main()
