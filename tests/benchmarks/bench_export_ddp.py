"""Benchmark petseg-export with one process and under torchrun with several, on the CPU.

    python tests/benchmarks/bench_export_ddp.py [--limit 100] [--processes 2] [--threads 2] [--repeat 3] [--device cpu]

Exports ``--limit`` Test photos (evenly spread) as index PNGs with the bundled semantic model: once
as one process with ``--threads`` OpenMP threads, once as ``torchrun --nproc_per_node P`` with
threads/P each (the same cores in all) and, for reference, as one process with threads/P threads,
``--repeat`` times in turn, checks that they wrote the
same bytes and prints a Markdown table of medians. images/s is the export's own figure (rank 0's
clock from the first photo to the last result); the wall column adds the start (Python, torch, the
model, the process group).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_inference import REPO, spread_test_photos

CHECKPOINT = REPO / "resources" / "checkpoints" / "petseg-unet-effnet256.safetensors"
RATE = re.compile(r"Export done: (\d+) written.* \(([\d.]+) images/s\)")


def export(processes: int, threads: int, photos: list[Path], out: Path, device: str) -> tuple[int, float, float]:
    """Run petseg-export as ``processes`` processes of ``threads`` threads; (written, images/s, wall s)."""
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)] if processes > 1 else []
    command = [
        sys.executable, *launcher, "-m", "petseg_desktop.export", "--input", *map(str, photos), "--output", str(out),
        "--checkpoint", str(CHECKPOINT), "--device", device,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    found = RATE.search(proc.stdout + proc.stderr)
    if proc.returncode != 0 or found is None:
        sys.exit(f"export with {processes} process(es) failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return int(found.group(1)), float(found.group(2)), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=100, help="Test photos to export (default 100)")
    parser.add_argument("--processes", type=int, default=2, help="torchrun processes (default 2)")
    parser.add_argument("--threads", type=int, default=2, help="threads in all: the single process's (default 2)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each, in turn; medians are shown (default 3)")
    parser.add_argument("--device", default="cpu", help="cpu (default), or cuda: torchrun gives each process a GPU")
    args = parser.parse_args()
    photos = spread_test_photos(args.limit)
    each = max(1, args.threads // args.processes)
    runs = [(1, args.threads), (1, each), (args.processes, each)]  # 1 x each: what a process alone does
    print(f"{len(photos)} Test photos, index PNGs, {CHECKPOINT.name} on {args.device}, {os.cpu_count()} CPU cores, "
          f"median of {args.repeat} runs each\n")
    measured: dict[tuple[int, int], list[tuple[float, float]]] = {run: [] for run in runs}
    outputs = set()
    with tempfile.TemporaryDirectory() as folder:
        for attempt in range(args.repeat):
            for processes, threads in runs:
                out = Path(folder) / f"p{processes}-{attempt}"
                written, rate, wall = export(processes, threads, photos, out, args.device)
                measured[processes, threads].append((rate, wall))
                outputs.add(tuple(sorted((p.name, p.read_bytes()) for p in out.iterdir())))
    print("| processes | threads each | images/s | wall s (with start-up) |")
    print("|---|---|---|---|")
    for (processes, threads), results in measured.items():
        rate, wall = (statistics.median(r[i] for r in results) for i in (0, 1))
        print(f"| {processes} | {threads} | {rate:.1f} | {wall:.1f} |")
    if len(outputs) != 1:
        sys.exit("the runs wrote different masks")
    print(f"\nevery run wrote the same {written} masks, byte for byte")


if __name__ == "__main__":
    main()
