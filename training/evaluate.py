"""``petseg-train eval``: evaluate a checkpoint through the public inference API.

Everything goes through ``models.predictor`` (``Segmenter.segment`` and
``Predictor.set_image/predict``), so the numbers are what users of the app get, at the photos'
original resolution.

Semantic models: a confusion matrix over all pixels (void skipped): per-class IoU, Dice and
pixel accuracy (recall), mean IoU/Dice, overall pixel accuracy, seconds per image.

Prompt models (and the GrabCut baseline, ``--baseline grabcut``): the standard click protocol of
:mod:`training.click_protocol` on every image; the table has the mean NoC@85 / NoC@90, the mean
IoU after 1, 3 and 5 clicks, the mIoU from the pet's tight box, and seconds per ``predict`` call.

The baseline runs on the same images with the same protocol: its first click is the model's
first click; later clicks follow each method's own errors (that is the protocol). U2-Netp
(``--baseline u2netp``, :mod:`training.u2netp`) ignores clicks: only its box row means something.

Automatic foreground (``--baseline u2netp`` with a semantic checkpoint or none): the pet (labels 1
and 2) against the background, void ignored, for the semantic model's ``label != 0`` and U2-Netp's
whole-photo ``probability > 0.5``: the IoU over all pixels of the images, the mean per-image IoU,
and seconds per image.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from tqdm import tqdm

from models.checkpoint import CheckpointError, read_metadata
from models.classes import CLASS_NAMES, VOID
from models.files import atomic_path
from models.predictor import REFINE_PASSES
from training.click_protocol import (
    DEFAULT_MAX_CLICKS,
    IOU_AT,
    NOC_THRESHOLDS,
    THRESHOLD,
    InteractivePredictor,
    evaluate_sample,
    object_target,
)
from training.data import Sample, breed_of, find_samples, load_sample, only_breed
from training.metrics import ConfusionMatrix, binary_iou

BASELINES = {"grabcut": "GrabCut baseline", "u2netp": "U2-Netp baseline"}


def progress_bar(items: Iterable[Any], desc: str, enabled: bool = True, total: int | None = None) -> Iterable[Any]:
    """``items`` with a tqdm progress bar on stderr when ``enabled`` (``total`` for iterators)."""
    if not enabled:
        return items
    return tqdm(items, desc=desc, unit="img", file=sys.stderr, leave=False, dynamic_ncols=True, total=total)


def spread_subset(samples: Sequence[Any], limit: int | None) -> list[Any]:
    """``limit`` samples spread evenly over ``samples`` (all of them when limit is None or <= 0).

    Files are sorted by name, so the first N would all be one breed; an even spread covers them all.
    """
    samples = list(samples)
    if limit is None or limit <= 0 or limit >= len(samples):
        return samples
    step = len(samples) / limit
    return [samples[int(i * step)] for i in range(limit)]


def labelled_samples(data: Path, split: str, limit: int | None = None, breed: str | None = None) -> list[Sample]:
    """The ``split``'s samples that have a mask (of ``breed`` only, when given), :func:`spread_subset` to ``limit``.

    Raises FileNotFoundError / NotADirectoryError / ValueError (one line) for missing data or none.
    """
    labelled = [s for s in find_samples(data, split) if s.mask_path is not None]
    samples = spread_subset(only_breed(labelled, breed), limit)
    if not samples:
        raise ValueError(f"no images with masks in {data} (split {split})")
    return samples


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


# --------------------------------------------------------------------------------------------
# Semantic


def evaluate_semantic(segmenter: Any, samples: Sequence[Any], limit: int | None = None,
                      progress: bool = False) -> dict[str, Any]:
    """Per-class IoU/Dice/pixel accuracy of ``segmenter.segment(rgb)`` at original resolution."""
    class_names = list((getattr(segmenter, "metadata", None) or {}).get("class_names") or CLASS_NAMES)
    total = ConfusionMatrix(num_classes=len(class_names))
    rows = []
    seconds = 0.0
    for sample in progress_bar(spread_subset(samples, limit), "eval", progress):
        rgb, mask = load_sample(sample)
        start = time.perf_counter()
        pred = segmenter.segment(rgb)
        elapsed = time.perf_counter() - start
        seconds += elapsed
        if pred.shape != mask.shape:
            raise ValueError(f"{sample.stem}: segmenter returned {pred.shape}, the mask is {mask.shape}")
        one = ConfusionMatrix(num_classes=len(class_names))
        one.update(pred, mask)
        total.update(pred, mask)
        rows.append({
            "stem": sample.stem,
            "mean_iou": _nan_to_none(one.mean_iou()),
            "pixel_accuracy": _nan_to_none(one.pixel_accuracy()),
            "foreground_iou": _foreground_iou(one.matrix),
            "confusion": one.matrix.tolist(),
            "seconds": elapsed,
        })
    result: dict[str, Any] = {"task": "semantic", "images": len(rows), "class_names": class_names}
    result.update(total.summary(class_names))
    result["labelled_mean_iou"] = _nan_to_none(total.labelled_mean_iou())
    result["foreground_iou"] = _foreground_iou(total.matrix)
    result["seconds_per_image"] = seconds / len(rows) if rows else None
    result["rows"] = rows
    return result


def breed_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Per Oxford-IIIT Pet breed (from the photo names): photos and the mIoU of their pixels over the
    classes their masks hold (background and the breed's species), worst first."""
    matrices: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for row in result["rows"]:
        breed = breed_of(row["stem"])
        matrices[breed] = matrices.get(breed, 0) + np.asarray(row["confusion"], dtype=np.int64)
        counts[breed] = counts.get(breed, 0) + 1
    rows = []
    for breed, matrix in matrices.items():
        total = ConfusionMatrix(num_classes=matrix.shape[0])
        total.matrix = matrix
        rows.append({"breed": breed, "images": counts[breed], "mean_iou": _nan_to_none(total.labelled_mean_iou())})
    return sorted(rows, key=lambda r: (r["mean_iou"] is None, r["mean_iou"] or 0.0, r["breed"]))


def _foreground_iou(matrix: np.ndarray) -> float:
    """Pet (every class but 0) vs background IoU from a confusion matrix; 1.0 when both are empty."""
    intersection = int(matrix[1:, 1:].sum())
    union = int(matrix.sum() - matrix[0, 0])
    return intersection / union if union else 1.0


def _nan_to_none(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


# --------------------------------------------------------------------------------------------
# Prompt (interactive)


def _method_name(predictor: Any) -> str:
    name = getattr(predictor, "name", None)
    if name:
        return str(name)
    metadata = getattr(predictor, "metadata", None) or {}
    return str(metadata.get("arch", type(predictor).__name__))


Timings = dict[str, list[float]]


def _new_timings() -> Timings:
    return {"set_image": [], "clicks": [], "box": []}


def _judge(head: dict[str, Any], predictor: InteractivePredictor, rgb: np.ndarray, target: np.ndarray,
           max_clicks: int, early_stop: bool, timings: Timings) -> dict[str, Any]:
    """``head`` plus the click protocol's row for ``target`` on ``rgb``; its seconds go to ``timings``."""
    row = evaluate_sample(predictor, rgb, target, max_clicks, early_stop)
    if row is None:
        return {**head, "skipped": "no object pixels"}
    seconds = row.pop("seconds")
    timings["set_image"].append(seconds["set_image"])
    timings["clicks"] += seconds["clicks"]
    timings["box"].append(seconds["box"])
    return {**head, **row}


def summarize_prompt(method: str, rows: list[dict[str, Any]], timings: Timings, max_clicks: int) -> dict[str, Any]:
    """The means over the click protocol's ``rows`` (rows with ``skipped`` are only counted)."""
    done = [r for r in rows if "skipped" not in r]
    result: dict[str, Any] = {
        "task": "prompt",
        "method": method,
        "images": len(done),
        "skipped": len(rows) - len(done),
        "max_clicks": max_clicks,
        "threshold": THRESHOLD,
    }
    for t in NOC_THRESHOLDS:
        key = f"noc{round(t * 100)}"
        result[key] = _mean([r[key] for r in done])
        result[f"nof{round(t * 100)}"] = sum(1 for r in done if not any(v >= t for v in r["ious"]))
    for k in IOU_AT:
        result[f"iou@{k}"] = _mean([r[f"iou@{k}"] for r in done])
    result["box_miou"] = _mean([r["box_iou"] for r in done])
    result["box_inside"] = _mean([r["box_inside"] for r in done if r.get("box_inside") is not None])
    result["seconds_per_click"] = _mean(timings["clicks"])
    result["seconds_per_box"] = _mean(timings["box"])
    result["seconds_per_set_image"] = _mean(timings["set_image"])
    result["clicks_made"] = len(timings["clicks"])
    result["rows"] = rows
    return result


def evaluate_prompt(predictor: InteractivePredictor, samples: Sequence[Any], max_clicks: int = DEFAULT_MAX_CLICKS,
                    limit: int | None = None, progress: bool = False, early_stop: bool = True) -> dict[str, Any]:
    """NoC@85/90, IoU after 1/3/5 clicks, box mIoU and seconds per call of the click protocol
    (:func:`training.click_protocol.evaluate_sample`) over ``samples``, with a row per image."""
    rows = []
    timings = _new_timings()
    for sample in progress_bar(spread_subset(samples, limit), f"eval {_method_name(predictor)}", progress):
        rgb, mask = load_sample(sample)
        rows.append(_judge({"stem": sample.stem}, predictor, rgb, object_target(mask), max_clicks, early_stop, timings))
    return summarize_prompt(_method_name(predictor), rows, timings, max_clicks)


def evaluate_multipet(predictor: InteractivePredictor, bases: Sequence[Sample], pool: Sequence[Sample],
                      pets: int = 2, max_clicks: int = DEFAULT_MAX_CLICKS, progress: bool = False,
                      early_stop: bool = True, seed: int = 0) -> dict[str, Any]:
    """The click protocol and the box for each pet of the composites of ``bases`` (partners from ``pool``;
    :func:`training.composites.split_composites`), the other pets being background; a row per pet.

    Besides :func:`summarize_prompt`'s means: ``nof90_share`` (pets failing 0.90 within the budget)
    and ``box_inside`` (mean share of the box's mask inside the pet's box).
    """
    from training.composites import instance_target, split_composites

    rows = []
    timings = _new_timings()
    composites = split_composites(bases, pool, pets, seed)
    for composite in progress_bar(composites, f"multi-pet {_method_name(predictor)}", progress, total=len(bases)):
        for k, stem in enumerate(composite.stems, start=1):
            head = {"composite": composite.name, "pet": k, "stem": stem, "pasted": k > 1,
                    "scale": round(composite.scales[k - 1], 4), "overlap": round(composite.overlaps[k - 1], 4)}
            target = instance_target(composite.instances, k)
            rows.append(_judge(head, predictor, composite.rgb, target, max_clicks, early_stop, timings))
    result = summarize_prompt(_method_name(predictor), rows, timings, max_clicks)
    result.update(task="multipet", composites=len(bases), pets_per_composite=pets, seed=seed)
    result["nof90_share"] = result["nof90"] / result["images"] if result["images"] else None
    return result


# --------------------------------------------------------------------------------------------
# Automatic foreground


def evaluate_foreground(method: str, foreground: Callable[[np.ndarray], np.ndarray], samples: Sequence[Any],
                        progress: bool = False) -> dict[str, Any]:
    """Pet-vs-background IoU (all pixels, and mean per image) of ``foreground(rgb) -> HxW bool``."""
    rows = []
    intersection = union = 0
    seconds = 0.0
    for sample in progress_bar(samples, f"foreground {method}", progress):
        rgb, mask = load_sample(sample)
        target = object_target(mask)
        start = time.perf_counter()
        pred = np.asarray(foreground(rgb), dtype=bool)
        elapsed = time.perf_counter() - start
        seconds += elapsed
        valid, truth = target != VOID, target == 1
        intersection += np.count_nonzero(pred & truth)
        union += np.count_nonzero((pred | truth) & valid)
        rows.append({"stem": sample.stem, "iou": binary_iou(pred, target), "seconds": elapsed})
    return {
        "task": "foreground",
        "method": method,
        "images": len(rows),
        "threshold": THRESHOLD,
        "foreground_iou": intersection / union if union else None,
        "foreground_miou": _mean([r["iou"] for r in rows]),
        "seconds_per_image": seconds / len(rows) if rows else None,
        "rows": rows,
    }


def semantic_foreground(method: str, semantic: dict[str, Any]) -> dict[str, Any]:
    """The automatic-foreground result of a semantic model, read off its ``evaluate_semantic`` result."""
    rows = [{"stem": r["stem"], "iou": r["foreground_iou"], "seconds": r["seconds"]} for r in semantic["rows"]]
    return {
        "task": "foreground",
        "method": method,
        "images": semantic["images"],
        "threshold": THRESHOLD,
        "foreground_iou": semantic["foreground_iou"],
        "foreground_miou": _mean([r["iou"] for r in rows]),
        "seconds_per_image": semantic["seconds_per_image"],
        "rows": rows,
    }


def _whole_photo(predictor: Any) -> Callable[[np.ndarray], np.ndarray]:
    """``rgb -> predictor's probability > 0.5`` without any prompt (U2-Netp's automatic mode)."""
    def foreground(rgb: np.ndarray) -> np.ndarray:
        predictor.set_image(rgb)
        return predictor.predict() > THRESHOLD
    return foreground


# --------------------------------------------------------------------------------------------
# Tables and the command line


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def format_semantic_table(result: dict[str, Any]) -> str:
    lines = [f"{'class':<12} {'IoU':>7} {'Dice':>7} {'pix.acc':>8}"]
    for name, values in result["per_class"].items():
        lines.append(f"{name:<12} {_fmt(values['iou']):>7} {_fmt(values['dice']):>7} {_fmt(values['accuracy']):>8}")
    lines.append(f"{'mean':<12} {_fmt(result['mean_iou']):>7} {_fmt(result['mean_dice']):>7} "
                 f"{_fmt(result['pixel_accuracy']):>8}  (overall pixel accuracy)")
    if result.get("labelled_mean_iou") != result["mean_iou"]:
        lines.append(f"mIoU over the classes the masks hold: {_fmt(result['labelled_mean_iou'])}")
    lines.append(f"{result['images']} images, {_fmt(result['seconds_per_image'])} s/image")
    return "\n".join(lines)


def format_breed_table(rows: Sequence[dict[str, Any]]) -> str:
    lines = [f"{'breed':<28} {'photos':>6} {'mIoU':>7}"]
    lines += [f"{r['breed']:<28} {r['images']:>6} {_fmt(r['mean_iou']):>7}" for r in rows]
    return "\n".join(lines)


PROMPT_COLUMNS = (("NoC@85", "noc85", 2), ("NoC@90", "noc90", 2), ("IoU@1", "iou@1", 3), ("IoU@3", "iou@3", 3),
                  ("IoU@5", "iou@5", 3), ("box mIoU", "box_miou", 3), ("s/click", "seconds_per_click", 3),
                  ("s/box", "seconds_per_box", 3))


MULTIPET_COLUMNS = (("NoC@85", "noc85", 2), ("NoC@90", "noc90", 2), ("NoF@90", "nof90_share", 3),
                    ("IoU@1", "iou@1", 3), ("IoU@3", "iou@3", 3), ("IoU@5", "iou@5", 3), ("box mIoU", "box_miou", 3),
                    ("in box", "box_inside", 3), ("s/click", "seconds_per_click", 3))


def format_prompt_table(results: Sequence[dict[str, Any]],
                        columns: Sequence[tuple[str, str, int]] = PROMPT_COLUMNS) -> str:
    """A row per result; the footer says what was judged (images, or pets of composites)."""
    width = max([8] + [len(r["method"]) for r in results])
    header = f"{'method':<{width}} " + " ".join(f"{title:>8}" for title, _, _ in columns)
    lines = [header]
    for r in results:
        lines.append(f"{r['method']:<{width}} " + " ".join(f"{_fmt(r.get(key), d):>8}" for _, key, d in columns))
    r = results[0]
    judged = f"{r['images']} images"
    if r["task"] == "multipet":
        judged = (f"{r['images']} pets of {r['composites']} composites ({r['pets_per_composite']} pets each; "
                  "the other pets count as background; NoF@90 = share of pets failing 0.90; in box = share of "
                  "the box's mask inside the box)")
    lines.append(f"{judged}, at most {r['max_clicks']} clicks, void ignored, mask = probability > 0.5")
    return "\n".join(lines)


def format_foreground_table(results: Sequence[dict[str, Any]]) -> str:
    width = max([20] + [len(r["method"]) for r in results])
    lines = [f"{'automatic foreground':<{width}} {'IoU':>7} {'mIoU':>7} {'s/image':>8}"]
    for r in results:
        lines.append(f"{r['method']:<{width}} {_fmt(r['foreground_iou']):>7} {_fmt(r['foreground_miou']):>7} "
                     f"{_fmt(r['seconds_per_image']):>8}")
    lines.append(f"{results[0]['images']} images, pet (cat or dog) vs background, void ignored; "
                 "IoU over all pixels, mIoU per image")
    return "\n".join(lines)


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Evaluate a checkpoint through the app's inference API at original resolution: per-class "
        "IoU/Dice/pixel accuracy for semantic models; NoC@85/90, IoU after 1/3/5 clicks, box mIoU "
        "and s/click for prompt models (standard click protocol); with --baseline u2netp, semantic models "
        "also get an automatic pet-vs-background IoU row."
    )
    parser.add_argument("--checkpoint", type=Path, help="a .safetensors checkpoint (optional with --baseline)")
    parser.add_argument("--data", type=Path, required=True, help="dataset root (e.g. ../shared/pets)")
    parser.add_argument("--split", default="Test", help="split to evaluate (default: Test)")
    parser.add_argument("--json", type=Path, help="write the metrics and per-image rows to this JSON file")
    parser.add_argument("--limit", type=int, help="evaluate only N images, spread evenly over the (name-sorted) split")
    parser.add_argument("--breed", help="only the photos of this Oxford-IIIT Pet breed (e.g. Bengal, pug)")
    parser.add_argument("--by-breed", action="store_true", help="semantic models: also a table of mIoU per breed")
    parser.add_argument("--baseline", choices=tuple(BASELINES),
                        help="also run OpenCV GrabCut, or U2-Netp (box prompt and automatic foreground), "
                        "on the same images")
    parser.add_argument("--multi-pet", type=int, choices=(2, 3), metavar="N",
                        help="judge prompt models on composites of N pets each (2 or 3; one per --limit photo, "
                        "see training/composites.py), each pet in turn, the others as background")
    parser.add_argument("--max-clicks", type=int, default=DEFAULT_MAX_CLICKS, help="click budget (default: 20)")
    parser.add_argument("--refine-passes", type=int, default=REFINE_PASSES, metavar="N",
                        help=f"prompt models: feed each first prediction of an object back as the previous mask N more times, as the "
                        f"app does (default: {REFINE_PASSES})")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: best available)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _error(message: str) -> int:
    print(f"petseg-train eval: error: {message}", file=sys.stderr)
    return 2


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(payload, f, indent=1)
        f.write("\n")


def _load_baseline(name: str) -> InteractivePredictor:
    """The baseline predictor; U2NetpError (a FileNotFoundError, one line) without U2-Netp's model."""
    if name == "grabcut":
        from training.grabcut import GrabCutPredictor

        return GrabCutPredictor()
    from training.u2netp import U2NetpPredictor

    return U2NetpPredictor()


def run_eval(args: argparse.Namespace) -> int:
    """``petseg-train eval``: print the tables, write ``--json``; 2 (one line on stderr) on user errors."""
    from models.predictor import NoModelError, load_predictor, load_segmenter

    baseline, checkpoint, limit, progress = args.baseline, args.checkpoint, args.limit, not args.no_progress
    multi_pet = getattr(args, "multi_pet", None)
    max_clicks = args.max_clicks or DEFAULT_MAX_CLICKS
    if checkpoint is None and baseline is None:
        return _error("give --checkpoint, or --baseline grabcut or u2netp")
    if max_clicks < 1:
        return _error("--max-clicks must be at least 1")
    refine_passes = getattr(args, "refine_passes", REFINE_PASSES)
    if refine_passes < 0:
        return _error("--refine-passes must be 0 or more")
    task = None
    if checkpoint is not None:
        try:
            metadata = read_metadata(checkpoint)
        except CheckpointError as error:
            return _error(str(error))
        task = metadata["task"]
        if baseline == "grabcut" and task != "prompt":
            name = Path(checkpoint).name
            return _error(f"--baseline {baseline} compares interactive models; {name} is a {task} model")
        if multi_pet and task != "prompt":
            return _error(f"--multi-pet judges prompt models; {Path(checkpoint).name} is a {task} model")
    try:
        samples = labelled_samples(args.data, args.split, limit, getattr(args, "breed", None))
        pool = labelled_samples(args.data, args.split) if multi_pet else samples
        base = _load_baseline(baseline) if baseline else None
    except (FileNotFoundError, NotADirectoryError, ValueError) as error:  # incl. U2-Netp's model file
        return _error(str(error))

    payload: dict[str, Any] = {
        "checkpoint": str(checkpoint) if checkpoint else None,
        "data": str(args.data),
        "split": args.split,
        "limit": limit,
        "breed": getattr(args, "breed", None),
        "multi_pet": multi_pet,
    }
    if task == "semantic":
        try:
            segmenter = load_segmenter(checkpoint, args.device)
        except (NoModelError, CheckpointError) as error:
            return _error(str(error))
        result = evaluate_semantic(segmenter, samples, progress=progress)
        payload["model"] = result
        print(f"{Path(checkpoint).name} ({metadata['arch']}, semantic) on {args.split}")
        print(format_semantic_table(result))
        if getattr(args, "by_breed", False):
            payload["breeds"] = breed_rows(result)
            print(format_breed_table(payload["breeds"]))
        if base is not None:
            payload["foreground"] = [
                semantic_foreground(Path(checkpoint).stem, result),
                evaluate_foreground(base.name, _whole_photo(base), samples, progress),
            ]
    else:
        def evaluate(predictor: InteractivePredictor) -> dict[str, Any]:
            if multi_pet:
                return evaluate_multipet(predictor, samples, pool, multi_pet, max_clicks, progress=progress)
            return evaluate_prompt(predictor, samples, max_clicks, progress=progress)

        results = []
        if task == "prompt":
            try:
                predictor = load_predictor(checkpoint, args.device, refine_passes)
            except (NoModelError, CheckpointError) as error:
                return _error(str(error))
            predictor.name = Path(checkpoint).stem
            payload["refine_passes"] = refine_passes
            payload["model"] = evaluate(predictor)
            results.append(payload["model"])
        if base is not None:
            payload["baseline"] = evaluate(base)
            results.append(payload["baseline"])
        title = f"{Path(checkpoint).name} ({metadata['arch']}, prompt)" if checkpoint else BASELINES[baseline]
        print(f"{title} on {args.split}" + (f", {multi_pet} pets per composite" if multi_pet else ""))
        print(format_prompt_table(results, MULTIPET_COLUMNS if multi_pet else PROMPT_COLUMNS))
        if checkpoint is None and baseline == "u2netp":
            payload["foreground"] = [evaluate_foreground(base.name, _whole_photo(base), samples, progress)]
        if "model" in payload and baseline == "grabcut":
            model_noc, base_noc = payload["model"]["noc90"], payload["baseline"]["noc90"]
            ratio = model_noc / base_noc if model_noc is not None and base_noc else None
            payload["noc90_ratio"] = ratio
            print(f"NoC@90 model / GrabCut = {_fmt(ratio, 2)}")
    if "foreground" in payload:
        print(format_foreground_table(payload["foreground"]))
    if args.json:
        _write_json(Path(args.json), payload)
        print(f"wrote {args.json}")
    return 0
