"""``petseg-train eval``: evaluate a checkpoint through the public inference API.

Everything goes through ``models.predictor`` (``Segmenter.segment`` and
``Predictor.set_image/predict``), so the numbers are what users of the app get, at the photos'
original resolution.

Semantic models: a confusion matrix over all pixels (void skipped): per-class IoU, Dice and
pixel accuracy (recall), mean IoU/Dice, overall pixel accuracy, seconds per image.

Prompt models (and the GrabCut baseline, ``--baseline grabcut``): the object is the pet (labels
1 and 2), void (255) is ignored. Standard click protocol (RITM / f-BRS): the first click comes
from :func:`training.clicks.next_click` on an empty prediction, every later one from the current
error; each prediction gets all clicks so far and the previous probabilities as ``prev_mask``;
the mask is ``probability > 0.5``. NoC@85 / NoC@90 is the number of clicks until the IoU first
reaches 0.85 / 0.90, ``max_clicks`` (20) when it never does. An image stops early once its IoU
reached 0.90 after at least 5 clicks (nothing reported depends on later clicks). Mean IoU after
1, 3 and 5 clicks, and the mIoU from the tight bounding box of the pet's pixels alone
(``x1``/``y1`` exclusive), and seconds per ``predict`` call.

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

from models.classes import CLASS_NAMES
from training.clicks import next_click

NOC_THRESHOLDS = (0.85, 0.90)
IOU_AT = (1, 3, 5)
THRESHOLD = 0.5
EARLY_STOP_IOU = 0.90
EARLY_STOP_MIN_CLICKS = max(IOU_AT)
DEFAULT_MAX_CLICKS = 20
BASELINES = {"grabcut": "GrabCut baseline", "u2netp": "U2-Netp baseline"}


def _progress(items: Sequence[Any], desc: str, enabled: bool = True) -> Iterable[Any]:
    if not enabled:
        return items
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        return items
    return tqdm(items, desc=desc, unit="img", file=sys.stderr, leave=False, dynamic_ncols=True)


def spread_subset(samples: Sequence[Any], limit: int | None) -> list[Any]:
    """``limit`` samples spread evenly over ``samples`` (all of them when limit is None or <= 0).

    Files are sorted by name, so the first N would all be one breed; an even spread covers them all.
    """
    samples = list(samples)
    if limit is None or limit <= 0 or limit >= len(samples):
        return samples
    step = len(samples) / limit
    return [samples[int(i * step)] for i in range(limit)]


def _mean(values: Sequence[float]) -> float | None:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(values)) if values else None


# --------------------------------------------------------------------------------------------
# Semantic


def evaluate_semantic(segmenter: Any, samples: Sequence[Any], limit: int | None = None,
                      progress: bool = False) -> dict[str, Any]:
    """Per-class IoU/Dice/pixel accuracy of ``segmenter.segment(rgb)`` at original resolution."""
    from training.data import load_sample
    from training.metrics import ConfusionMatrix

    class_names = list((getattr(segmenter, "metadata", None) or {}).get("class_names") or CLASS_NAMES)
    total = ConfusionMatrix(num_classes=len(class_names))
    rows = []
    seconds = 0.0
    for sample in _progress(spread_subset(samples, limit), "eval", progress):
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
            "seconds": elapsed,
        })
    result: dict[str, Any] = {"task": "semantic", "images": len(rows), "class_names": class_names}
    result.update(total.summary(class_names))
    result["foreground_iou"] = _foreground_iou(total.matrix)
    result["seconds_per_image"] = seconds / len(rows) if rows else None
    result["rows"] = rows
    return result


def _foreground_iou(matrix: np.ndarray) -> float:
    """Pet (every class but 0) vs background IoU from a confusion matrix; 1.0 when both are empty."""
    intersection = int(matrix[1:, 1:].sum())
    union = int(matrix.sum() - matrix[0, 0])
    return intersection / union if union else 1.0


def _nan_to_none(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


# --------------------------------------------------------------------------------------------
# Prompt (interactive)


def object_target(mask: np.ndarray) -> np.ndarray:
    """Labels (0 bg, 1 cat, 2 dog, 255 void) -> binary target 0 background, 1 pet, 255 void."""
    target = ((mask == 1) | (mask == 2)).astype(np.uint8)
    target[mask == 255] = 255
    return target


def tight_box(target: np.ndarray) -> tuple[int, int, int, int] | None:
    """The pet's tight bounding box (x0, y0, x1, y1), x1/y1 exclusive; None when there is no pet."""
    ys, xs = np.nonzero(target == 1)
    if xs.size == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def noc(ious: Sequence[float], threshold: float, max_clicks: int) -> int:
    """Clicks until the IoU first reaches ``threshold`` (``max_clicks`` if it never does)."""
    for k, value in enumerate(ious[:max_clicks], start=1):
        if value >= threshold:
            return k
    return max_clicks


def simulate_clicks(predictor: Any, target: np.ndarray, max_clicks: int = DEFAULT_MAX_CLICKS,
                    early_stop: bool = True) -> dict[str, Any]:
    """Run the click protocol on the image already given to ``predictor.set_image``.

    Returns ``{"clicks": [(x, y, positive)], "ious": [IoU after click k], "seconds": [per call]}``;
    ``ious`` has one entry per click made (if the prediction becomes perfect, no more clicks are
    possible and the last IoU stands for the rest).
    """
    from training.metrics import binary_iou

    void = target == 255
    pred = np.zeros(target.shape, dtype=bool)
    prev = None
    clicks: list[tuple[int, int, bool]] = []
    ious: list[float] = []
    seconds: list[float] = []
    for _ in range(max_clicks):
        click = next_click(pred, target, void)
        if click is None:
            break
        clicks.append(click)
        start = time.perf_counter()
        prob = predictor.predict(points=list(clicks), box=None, prev_mask=prev)
        seconds.append(time.perf_counter() - start)
        prev = np.asarray(prob, dtype=np.float32)
        pred = prev > THRESHOLD
        ious.append(binary_iou(pred, target))
        if early_stop and len(clicks) >= EARLY_STOP_MIN_CLICKS and ious[-1] >= EARLY_STOP_IOU:
            break
    return {"clicks": clicks, "ious": ious, "seconds": seconds}


def _iou_after(ious: Sequence[float], k: int) -> float:
    if not ious:
        return 0.0
    return float(ious[min(k, len(ious)) - 1])


def _method_name(predictor: Any) -> str:
    name = getattr(predictor, "name", None)
    if name:
        return str(name)
    metadata = getattr(predictor, "metadata", None) or {}
    return str(metadata.get("arch", type(predictor).__name__))


def evaluate_prompt(predictor: Any, samples: Sequence[Any], max_clicks: int = DEFAULT_MAX_CLICKS,
                    limit: int | None = None, progress: bool = False, early_stop: bool = True) -> dict[str, Any]:
    """NoC@85/90, IoU after 1/3/5 clicks, box mIoU and seconds per click for a Predictor-like
    object (``set_image(rgb)``, ``predict(points, box, prev_mask) -> HxW probabilities``)."""
    from training.data import load_sample
    from training.metrics import binary_iou

    rows = []
    click_seconds: list[float] = []
    box_seconds: list[float] = []
    image_seconds: list[float] = []
    for sample in _progress(spread_subset(samples, limit), f"eval {_method_name(predictor)}", progress):
        rgb, mask = load_sample(sample)
        target = object_target(mask)
        box = tight_box(target)
        if box is None:  # no pet in this mask: nothing to click on
            rows.append({"stem": sample.stem, "skipped": "no object pixels"})
            continue
        start = time.perf_counter()
        predictor.set_image(rgb)
        image_seconds.append(time.perf_counter() - start)
        run = simulate_clicks(predictor, target, max_clicks, early_stop)
        click_seconds += run["seconds"]
        start = time.perf_counter()
        box_prob = predictor.predict(points=[], box=box, prev_mask=None)
        box_seconds.append(time.perf_counter() - start)
        ious = run["ious"]
        row = {
            "stem": sample.stem,
            "clicks": [list(c) for c in run["clicks"]],
            "ious": [round(v, 6) for v in ious],
            "box": list(box),
            "box_iou": binary_iou(np.asarray(box_prob) > THRESHOLD, target),
        }
        for t in NOC_THRESHOLDS:
            row[f"noc{round(t * 100)}"] = noc(ious, t, max_clicks)
        for k in IOU_AT:
            row[f"iou@{k}"] = _iou_after(ious, k)
        rows.append(row)

    done = [r for r in rows if "skipped" not in r]
    result: dict[str, Any] = {
        "task": "prompt",
        "method": _method_name(predictor),
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
    result["seconds_per_click"] = _mean(click_seconds)
    result["seconds_per_box"] = _mean(box_seconds)
    result["seconds_per_set_image"] = _mean(image_seconds)
    result["clicks_made"] = len(click_seconds)
    result["rows"] = rows
    return result


# --------------------------------------------------------------------------------------------
# Automatic foreground


def evaluate_foreground(method: str, foreground: Callable[[np.ndarray], np.ndarray], samples: Sequence[Any],
                        progress: bool = False) -> dict[str, Any]:
    """Pet-vs-background IoU (all pixels, and mean per image) of ``foreground(rgb) -> HxW bool``."""
    from training.data import load_sample
    from training.metrics import binary_iou

    rows = []
    intersection = union = 0
    seconds = 0.0
    for sample in _progress(samples, f"foreground {method}", progress):
        rgb, mask = load_sample(sample)
        target = object_target(mask)
        start = time.perf_counter()
        pred = np.asarray(foreground(rgb), dtype=bool)
        elapsed = time.perf_counter() - start
        seconds += elapsed
        valid, truth = target != 255, target == 1
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
    lines.append(f"{result['images']} images, {_fmt(result['seconds_per_image'])} s/image")
    return "\n".join(lines)


PROMPT_COLUMNS = (("NoC@85", "noc85", 2), ("NoC@90", "noc90", 2), ("IoU@1", "iou@1", 3), ("IoU@3", "iou@3", 3),
                  ("IoU@5", "iou@5", 3), ("box mIoU", "box_miou", 3), ("s/click", "seconds_per_click", 3),
                  ("s/box", "seconds_per_box", 3))


def format_prompt_table(results: Sequence[dict[str, Any]]) -> str:
    width = max([8] + [len(r["method"]) for r in results])
    header = f"{'method':<{width}} " + " ".join(f"{title:>8}" for title, _, _ in PROMPT_COLUMNS)
    lines = [header]
    for r in results:
        lines.append(f"{r['method']:<{width}} " + " ".join(f"{_fmt(r[key], d):>8}" for _, key, d in PROMPT_COLUMNS))
    r = results[0]
    lines.append(f"{r['images']} images, at most {r['max_clicks']} clicks, void ignored, mask = probability > 0.5")
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
    parser.add_argument("--baseline", choices=tuple(BASELINES),
                        help="also run OpenCV GrabCut, or U2-Netp (box prompt and automatic foreground), "
                        "on the same images")
    parser.add_argument("--max-clicks", type=int, default=DEFAULT_MAX_CLICKS, help="click budget (default: 20)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: best available)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _error(message: str) -> int:
    print(f"petseg-train eval: error: {message}", file=sys.stderr)
    return 2


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    from models.files import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(payload, f, indent=1)
        f.write("\n")


def _load_baseline(name: str) -> Any:
    """The baseline's Predictor-like object; FileNotFoundError (one line) without U2-Netp's model."""
    if name == "grabcut":
        from training.grabcut import GrabCutPredictor

        return GrabCutPredictor()
    from training.u2netp import U2NetpPredictor

    return U2NetpPredictor()


def run_eval(args: argparse.Namespace) -> int:
    from models.checkpoint import CheckpointError, read_metadata
    from models.predictor import NoModelError
    from training.data import find_samples

    baseline = getattr(args, "baseline", None)
    checkpoint = getattr(args, "checkpoint", None)
    max_clicks = int(getattr(args, "max_clicks", DEFAULT_MAX_CLICKS) or DEFAULT_MAX_CLICKS)
    limit = getattr(args, "limit", None)
    progress = not getattr(args, "no_progress", False)
    if checkpoint is None and baseline is None:
        return _error("give --checkpoint, or --baseline grabcut or u2netp")
    if max_clicks < 1:
        return _error("--max-clicks must be at least 1")
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
    try:
        samples = find_samples(args.data, args.split)
    except (FileNotFoundError, NotADirectoryError, ValueError) as error:
        return _error(str(error))
    samples = [s for s in samples if getattr(s, "mask_path", True) is not None]
    samples = spread_subset(samples, limit)
    if not samples:
        return _error(f"no images with masks in {args.data} (split {args.split})")
    try:
        base = _load_baseline(baseline) if baseline else None
    except FileNotFoundError as error:  # U2-Netp's model file is missing or not the expected one
        return _error(str(error))

    payload: dict[str, Any] = {
        "checkpoint": str(checkpoint) if checkpoint else None,
        "data": str(args.data),
        "split": args.split,
        "limit": limit,
    }
    if task == "semantic":
        from models.predictor import load_segmenter

        try:
            segmenter = load_segmenter(checkpoint, getattr(args, "device", None))
        except (NoModelError, CheckpointError) as error:
            return _error(str(error))
        result = evaluate_semantic(segmenter, samples, progress=progress)
        payload["model"] = result
        print(f"{Path(checkpoint).name} ({metadata['arch']}, semantic) on {args.split}")
        print(format_semantic_table(result))
        if base is not None:
            payload["foreground"] = [
                semantic_foreground(Path(checkpoint).stem, result),
                evaluate_foreground(base.name, _whole_photo(base), samples, progress),
            ]
    else:
        results = []
        if task == "prompt":
            from models.predictor import load_predictor

            try:
                predictor = load_predictor(checkpoint, getattr(args, "device", None))
            except (NoModelError, CheckpointError) as error:
                return _error(str(error))
            predictor.name = Path(checkpoint).stem
            payload["model"] = evaluate_prompt(predictor, samples, max_clicks, progress=progress)
            results.append(payload["model"])
        if base is not None:
            payload["baseline"] = evaluate_prompt(base, samples, max_clicks, progress=progress)
            results.append(payload["baseline"])
        title = f"{Path(checkpoint).name} ({metadata['arch']}, prompt)" if checkpoint else BASELINES[baseline]
        print(f"{title} on {args.split}")
        print(format_prompt_table(results))
        if checkpoint is None and baseline == "u2netp":
            payload["foreground"] = [evaluate_foreground(base.name, _whole_photo(base), samples, progress)]
        if "model" in payload and baseline == "grabcut":
            model_noc, base_noc = payload["model"]["noc90"], payload["baseline"]["noc90"]
            ratio = model_noc / base_noc if model_noc is not None and base_noc else None
            payload["noc90_ratio"] = ratio
            print(f"NoC@90 model / GrabCut = {_fmt(ratio, 2)}")
    if "foreground" in payload:
        print(format_foreground_table(payload["foreground"]))
    if getattr(args, "json", None):
        _write_json(Path(args.json), payload)
        print(f"wrote {args.json}")
    return 0
