"""Benchmark the inference API on this machine: set_image and per-click latency, export throughput, memory.

    python tests/benchmarks/bench_inference.py [--checkpoint C] [--semantic-checkpoint C] [--threads N] [--limit N]
        [--device cpu|cuda] [--sizes "12 MP" "24 MP"] [--json PATH]

Prints a Markdown table. Each photo size runs in its own subprocess so that its peak RSS is its
own. Without checkpoints (none given and none discovered) it benchmarks random-init models of the
production size (prompt_unet and unet on effnet_lite0 at 320 px) saved to a temp folder, and says
so: latency and memory depend on the architecture, not on the weights.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from models.checkpoint import make_metadata, save_checkpoint  # noqa: E402
from models.registry import build_model  # noqa: E402
from petseg_desktop.export import export_images  # noqa: E402
from models.predictor import NoModelError, find_checkpoint, load_predictor  # noqa: E402
from models.images import load_mask, load_rgb  # noqa: E402

PETS_TEST = Path(os.environ.get("PETSEG_PETS", REPO.parent / "shared" / "pets")) / "Test" / "color"
SIZES = {"0.5 MP": (816, 612), "12 MP": (4000, 3000), "24 MP": (6000, 4000)}  # width, height
PRODUCTION = {"prompt": ("prompt_unet", {"encoder": "effnet_lite0"}), "semantic": ("unet", {"encoder": "effnet_lite0"})}
INPUT_SIZE = 320
CLICKS = 20


def random_checkpoint(task: str, folder: Path) -> Path:
    """A random-init production-size checkpoint for ``task`` saved in ``folder``."""
    arch, config = PRODUCTION[task]
    torch.manual_seed(0)
    model = build_model(arch, config)
    metadata = make_metadata(arch, config, INPUT_SIZE, model.normalization, training={"data": "random init (benchmark)"})
    return save_checkpoint(folder / f"random-{arch}.safetensors", model, metadata)


def resolve(checkpoint: str | None, task: str, folder: Path) -> tuple[Path, str]:
    """The checkpoint to benchmark and a note saying where it came from."""
    if checkpoint:
        return Path(checkpoint), "given"
    try:
        return find_checkpoint(task), "discovered"
    except NoModelError:
        return random_checkpoint(task, folder), "random init (no trained checkpoint found)"


def photo_of_size(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """A real pet photo and its pet mask (float32 0/1), resized (up) to ``width`` x ``height``."""
    path = max(sorted(PETS_TEST.glob("*.jpg"))[:200], key=lambda p: p.stat().st_size)
    rgb = cv2.resize(load_rgb(path), (width, height), interpolation=cv2.INTER_CUBIC)
    pet = np.isin(load_mask(path.parent.parent / "label" / f"{path.stem}.png"), (1, 2)).astype(np.float32)
    return rgb, cv2.resize(pet, (width, height), interpolation=cv2.INTER_NEAREST)


def synchronize(device: str) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously), so that timings are complete."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def run_case(checkpoint: Path, width: int, height: int, trained: bool, device: str = "cpu") -> dict:
    """set_image and per-click timings for one photo size on ``device`` (run in a subprocess).

    A trained model refines its own previous mask; a random-init one gets the true pet mask as
    the previous mask, so that the clicks take the path a trained model's clicks would take.
    """
    predictor = load_predictor(checkpoint, device=device)
    decode = predictor.model.decode
    decode_times = []

    def timed_decode(*args):
        start = time.perf_counter()
        result = decode(*args)
        synchronize(device)
        decode_times.append(time.perf_counter() - start)
        return result

    predictor.model.decode = timed_decode
    rgb, pet = photo_of_size(width, height)
    set_times = []
    for _ in range(3):
        start = time.perf_counter()
        predictor.set_image(rgb)
        synchronize(device)
        set_times.append(time.perf_counter() - start)
    rng = np.random.default_rng(0)
    ys, xs = np.nonzero(pet)
    box = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)  # the pet's box, as a user draws it
    points: list[tuple[float, float, bool]] = []
    prev = None
    click_times, zoomed = [], 0
    for i in range(CLICKS):
        x, y = rng.uniform(box[0], box[2]), rng.uniform(box[1], box[3])
        points.append((x, y, i % 3 != 2))
        start = time.perf_counter()
        prob = predictor.predict(points=points, box=box, prev_mask=prev)
        click_times.append(time.perf_counter() - start)
        prev = prob if trained else pet
        zoomed += predictor.last_crop is not None
    gpu_peak = torch.cuda.max_memory_allocated(device) / 2**20 if torch.device(device).type == "cuda" else None
    return {
        "set_image_ms": 1000 * float(np.median(set_times)),
        "click_median_ms": 1000 * float(np.median(click_times)),
        "click_p95_ms": 1000 * float(np.percentile(click_times, 95)),
        "decode_median_ms": 1000 * float(np.median(decode_times)),
        "zoomed": zoomed,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "gpu_peak_mb": gpu_peak,
    }


def spread_test_photos(limit: int) -> list[Path]:
    """``limit`` Test photos evenly spread over the sorted list (cats and dogs)."""
    photos = sorted(PETS_TEST.glob("*.jpg"))
    return [photos[int(i)] for i in np.linspace(0, len(photos) - 1, min(limit, len(photos)))]


def export_throughput(checkpoint: Path, limit: int, device: str = "cpu") -> tuple[float, int, int]:
    """Images/s exporting index PNGs for ``limit`` Test photos (evenly spread: cats and dogs) on ``device``."""
    from models.predictor import load_segmenter

    segmenter = load_segmenter(checkpoint, device=device)
    with tempfile.TemporaryDirectory() as out:
        summary = export_images(spread_test_photos(limit), out, segmenter)
    return summary.images_per_second, summary.written, len(summary.failed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="prompt checkpoint (default: discovered, else random init)")
    parser.add_argument("--semantic-checkpoint", help="semantic checkpoint for export (default: likewise)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch and OpenCV threads")
    parser.add_argument("--limit", type=int, default=200, help="Test photos to export (default 200)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES), metavar="SIZE",
                        help=f"photo sizes to run (default all: {', '.join(repr(s) for s in SIZES)})")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one size, print JSON
    parser.add_argument("--random-init", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    if args.case:
        print(json.dumps(run_case(Path(args.checkpoint), *SIZES[args.case], not args.random_init, args.device)))
        return

    with tempfile.TemporaryDirectory() as folder:
        prompt, prompt_note = resolve(args.checkpoint, "prompt", Path(folder))
        semantic, semantic_note = resolve(args.semantic_checkpoint, "semantic", Path(folder))
        print(f"prompt model: {prompt.name} ({prompt_note}); semantic model: {semantic.name} ({semantic_note})")
        random_init = prompt_note.startswith("random")
        previous = "the true pet mask (random-init model)" if random_init else "the previous result"
        print(f"device: {args.device}; threads: {args.threads}; {CLICKS} clicks per photo with the pet's box; "
              f"previous mask: {previous}\n")
        print("| photo | set_image ms | click median ms | click p95 ms | decoder median ms | zoomed clicks | peak RSS MB |")
        print("|---|---|---|---|---|---|---|")
        results: dict = {"device": args.device, "threads": args.threads, "prompt_model": prompt.name,
                         "semantic_model": semantic.name, "random_init": random_init, "cases": {}}
        for case in args.sizes:
            command = [sys.executable, __file__, "--case", case, "--checkpoint", str(prompt),
                       "--threads", str(args.threads), "--device", args.device]
            command += ["--random-init"] if random_init else []
            r = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
            results["cases"][case] = r
            print(
                f"| {case} | {r['set_image_ms']:.0f} | {r['click_median_ms']:.0f} | {r['click_p95_ms']:.0f} "
                f"| {r['decode_median_ms']:.0f} "
                f"| {r['zoomed']}/{CLICKS} | {r['peak_rss_mb']:.0f} |"
            )
        rate, written, failed = export_throughput(semantic, args.limit, args.device)
        print(f"\nexport (png, {written} Test photos, {failed} failed): {rate:.1f} images/s")
        results["export"] = {"images_per_s": rate, "written": written, "failed": failed}
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
