"""``petseg-train robustness``: the robustness study under the eight perturbations.

Each perturbation of :mod:`training.perturbations` at each of its ten levels (level 1 = the clean
image) is applied to every photo, the model runs through the public inference API, and the
predictions are scored at the photo's original resolution with a confusion matrix over the
whole set (void skipped):

- semantic models: ``Segmenter.segment`` -> 3 classes (background, cat, dog); ``dice`` and
  ``iou`` are the means over the three classes.
- prompt models: the prompt is the tight bounding box of the pet's pixels (``--prompt box``,
  the default) or three clicks of the standard protocol (``--prompt clicks``, each placed in the
  error of the prediction on the perturbed image); 2 classes (background, pet); ``dice`` and
  ``iou`` are the means over the two.

The clean image is the same for every perturbation's level 1, so it is scored once and shared.

Outputs in ``--out``: ``robustness.csv`` (perturbation, level 1..10, parameter, dice, iou; 80
rows), ``<perturbation>.png`` (Dice and IoU vs level), ``summary.png`` (all perturbations), and
``summary.json``: the clean score, ``mPC`` = the mean over all 80 perturbed sets (8
perturbations x 10 levels, the clean level included, as the study defines it),
``mPC_corrupted`` = the mean over the 72 strictly corrupted sets (levels 2..10), ``rPC`` =
mPC / clean (and ``rPC_corrupted``), and Dice/IoU at the strongest salt-and-pepper and
contrast-down levels.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from models.checkpoint import CheckpointError, read_metadata
from training.click_protocol import THRESHOLD, object_target, simulate_clicks, tight_box
from training.data import load_sample
from training.evaluate import labelled_samples, progress_bar
from training.metrics import ConfusionMatrix
from training.perturbations import LEVELS, PERTURBATIONS

PROMPT_MODES = ("box", "clicks")
PROMPT_CLICKS = 3


def add_robustness_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Robustness study: 8 perturbations x 10 levels (level 1 = clean); mean Dice and IoU per "
        "level at original resolution, plots, and mPC / rPC."
    )
    parser.add_argument("--checkpoint", type=Path, required=True, help="a .safetensors checkpoint")
    parser.add_argument("--data", type=Path, required=True, help="dataset root (e.g. ../shared/pets)")
    parser.add_argument("--split", default="Test", help="split to use (default: Test)")
    parser.add_argument("--out", type=Path, help="output folder (default: robustness-<checkpoint name>)")
    parser.add_argument("--limit", type=int, help="use only N images, spread evenly over the (name-sorted) split")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random perturbations (default: 0)")
    parser.add_argument("--prompt", choices=PROMPT_MODES, default="box",
                        help="prompt models: tight box of the pet (default) or 3 protocol clicks")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: best available)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _error(message: str) -> int:
    print(f"petseg-train robustness: error: {message}", file=sys.stderr)
    return 2


def _nanmean(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")


def _means(matrix) -> tuple[float, float]:
    """(mean Dice, mean IoU) over the classes present in targets or predictions."""
    return _nanmean(matrix.dice()), _nanmean(matrix.iou())


class _SemanticRunner:
    num_classes = 3
    description = "3-class mean (background, cat, dog) over the set, original resolution"

    def __init__(self, segmenter: Any) -> None:
        self.segmenter = segmenter

    def prepare(self, mask: np.ndarray) -> np.ndarray:
        return mask

    def __call__(self, rgb: np.ndarray, target: np.ndarray) -> np.ndarray:
        return self.segmenter.segment(rgb)


class _PromptRunner:
    num_classes = 2

    def __init__(self, predictor: Any, mode: str) -> None:
        self.predictor = predictor
        self.mode = mode
        prompt = "the pet's tight box" if mode == "box" else f"{PROMPT_CLICKS} standard-protocol clicks"
        self.description = f"2-class mean (background, pet) over the set, original resolution; prompt: {prompt}"

    def prepare(self, mask: np.ndarray) -> np.ndarray:
        return object_target(mask)

    def __call__(self, rgb: np.ndarray, target: np.ndarray) -> np.ndarray:
        self.predictor.set_image(rgb)
        if self.mode == "box":
            box = tight_box(target)
            prob = None if box is None else self.predictor.predict(points=[], box=box, prev_mask=None)
        else:
            prob = simulate_clicks(self.predictor, target, PROMPT_CLICKS, early_stop=False)["last"]
        if prob is None:  # no pet: nothing to prompt
            return np.zeros(target.shape, np.uint8)
        return (np.asarray(prob) > THRESHOLD).astype(np.uint8)


def _rng_for(seed: int, image_index: int, perturbation_index: int, level: int) -> np.random.Generator:
    return np.random.default_rng([seed, image_index, perturbation_index, level])


Scores = dict[tuple[str, int], tuple[float, float]]


def study(runner: Any, samples: Sequence[Any], seed: int = 0, progress: bool = False) -> Scores:
    """(perturbation, level index) -> (mean Dice, mean IoU) over ``samples``."""
    names = list(PERTURBATIONS)
    clean = ConfusionMatrix(runner.num_classes)
    matrices = {(name, level): ConfusionMatrix(runner.num_classes) for name in names for level in range(1, LEVELS)}
    for image_index, sample in enumerate(progress_bar(list(samples), "robustness", progress)):
        rgb, mask = load_sample(sample)
        target = runner.prepare(mask)
        clean.update(runner(rgb, target), target)
        for p_index, name in enumerate(names):
            function = PERTURBATIONS[name].function
            for level in range(1, LEVELS):
                perturbed = function(rgb, level, _rng_for(seed, image_index, p_index, level))
                matrices[(name, level)].update(runner(perturbed, target), target)
    scores = {(name, 0): _means(clean) for name in names}
    scores.update({key: _means(matrix) for key, matrix in matrices.items()})
    return scores


def summarize(scores: dict[tuple[str, int], tuple[float, float]]) -> dict[str, Any]:
    names = list(PERTURBATIONS)
    clean_dice, clean_iou = scores[(names[0], 0)]
    all_sets = [scores[(n, lv)] for n in names for lv in range(LEVELS)]
    corrupted = [scores[(n, lv)] for n in names for lv in range(1, LEVELS)]

    def block(values):
        dice = float(np.mean([v[0] for v in values]))
        iou = float(np.mean([v[1] for v in values]))
        return {"dice": dice, "iou": iou}

    mpc, mpc_c = block(all_sets), block(corrupted)

    def ratio(part):
        return {
            "dice": part["dice"] / clean_dice if clean_dice > 0 else None,
            "iou": part["iou"] / clean_iou if clean_iou > 0 else None,
        }

    strongest = {}
    for name in ("salt_and_pepper", "contrast_down"):
        entry = PERTURBATIONS[name]
        dice, iou = scores[(name, LEVELS - 1)]
        strongest[name] = {"level": LEVELS, "parameter": entry.values[-1], "dice": dice, "iou": iou}
    return {
        "clean": {"dice": clean_dice, "iou": clean_iou},
        "mPC": mpc,
        "rPC": ratio(mpc),
        "mPC_corrupted": mpc_c,
        "rPC_corrupted": ratio(mpc_c),
        "strongest": strongest,
        "per_perturbation": {
            n: block([scores[(n, lv)] for lv in range(LEVELS)]) for n in names
        },
        "sets": {"mPC": len(all_sets), "mPC_corrupted": len(corrupted)},
    }


def write_csv(path: Path, scores: dict[tuple[str, int], tuple[float, float]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["perturbation", "level", "parameter", "dice", "iou"])
        for name, entry in PERTURBATIONS.items():
            for level in range(LEVELS):
                dice, iou = scores[(name, level)]
                writer.writerow([name, level + 1, entry.values[level], f"{dice:.6f}", f"{iou:.6f}"])


def write_plots(out: Path, scores: dict[tuple[str, int], tuple[float, float]], title: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    levels = list(range(1, LEVELS + 1))
    for name, entry in PERTURBATIONS.items():
        dice = [scores[(name, lv)][0] for lv in range(LEVELS)]
        iou = [scores[(name, lv)][1] for lv in range(LEVELS)]
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(levels, dice, "o-", label="Dice")
        ax.plot(levels, iou, "s-", label="IoU")
        ax.set_xticks(levels)
        ax.set_xticklabels([f"{lv}\n{v:g}" for lv, v in zip(levels, entry.values)], fontsize=7)
        ax.set_xlabel(f"level ({entry.parameter})")
        ax.set_ylabel("mean score")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.set_title(f"{name.replace('_', ' ')}: {title}", fontsize=9)
        ax.legend()
        fig.tight_layout()
        path = out / f"{name}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    for column, (ax, metric) in enumerate(zip(axes, ("Dice", "IoU"))):
        for name in PERTURBATIONS:
            ax.plot(levels, [scores[(name, lv)][column] for lv in range(LEVELS)], "o-", ms=3,
                    label=name.replace("_", " "))
        ax.set_xticks(levels)
        ax.set_xlabel("level (1 = clean)")
        ax.set_title(metric)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("mean score")
    axes[1].legend(fontsize=8, loc="lower left")
    fig.suptitle(f"Robustness: {title}", fontsize=10)
    fig.tight_layout()
    path = out / "summary.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    written.append(path)
    return written


def _json_safe(value: Any) -> Any:
    """NaN (a class never seen) -> None, so summary.json is strict JSON."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and value != value:
        return None
    return value


def run_robustness(args: argparse.Namespace) -> int:
    from models.predictor import NoModelError, load_predictor, load_segmenter


    checkpoint = Path(args.checkpoint)
    try:
        metadata = read_metadata(checkpoint)
    except CheckpointError as error:
        return _error(str(error))
    task = metadata["task"]
    try:
        samples = labelled_samples(args.data, args.split, args.limit)
    except (FileNotFoundError, NotADirectoryError, ValueError) as error:
        return _error(str(error))
    device, mode = args.device, args.prompt
    try:
        if task == "semantic":
            runner: Any = _SemanticRunner(load_segmenter(checkpoint, device))
        else:
            runner = _PromptRunner(load_predictor(checkpoint, device), mode)
    except (NoModelError, CheckpointError) as error:
        return _error(str(error))

    out = Path(args.out) if args.out else Path(f"robustness-{checkpoint.stem}")
    out.mkdir(parents=True, exist_ok=True)
    seed = args.seed
    start = time.perf_counter()
    scores = study(runner, samples, seed=seed, progress=not args.no_progress)
    seconds = time.perf_counter() - start

    write_csv(out / "robustness.csv", scores)
    title = f"{checkpoint.stem} ({metadata['arch']}), {len(samples)} {args.split} images"
    plots = write_plots(out, scores, title)
    summary = {
        "checkpoint": str(checkpoint),
        "arch": metadata["arch"],
        "task": task,
        "prompt": mode if task != "semantic" else None,
        "metric": runner.description,
        "data": str(args.data),
        "split": args.split,
        "images": len(samples),
        "seed": seed,
        "seconds": seconds,
    }
    summary.update(summarize(scores))
    (out / "summary.json").write_text(json.dumps(_json_safe(summary), indent=1) + "\n")

    print(f"{title}; {runner.description}")
    print(f"{'perturbation':<16} " + " ".join(f"{lv:>5}" for lv in range(1, LEVELS + 1)) + "   (Dice)")
    for name in PERTURBATIONS:
        print(f"{name:<16} " + " ".join(f"{scores[(name, lv)][0]:5.3f}" for lv in range(LEVELS)))
    s = summary

    def f3(value):
        return "n/a" if value is None or value != value else f"{value:.3f}"

    print(f"clean Dice {f3(s['clean']['dice'])} IoU {f3(s['clean']['iou'])}; "
          f"mPC (80 sets) Dice {f3(s['mPC']['dice'])} IoU {f3(s['mPC']['iou'])}, rPC Dice {f3(s['rPC']['dice'])}; "
          f"72 corrupted sets: mPC Dice {f3(s['mPC_corrupted']['dice'])}, rPC Dice {f3(s['rPC_corrupted']['dice'])}")
    print(f"strongest salt and pepper Dice {f3(s['strongest']['salt_and_pepper']['dice'])}, "
          f"contrast down Dice {f3(s['strongest']['contrast_down']['dice'])}")
    print(f"wrote {out / 'robustness.csv'}, {out / 'summary.json'} and {len(plots)} plots")
    return 0
