"""The checkpoints shipped in resources/checkpoints load and give useful masks on real Test photos.

A fast guard, not the benchmark: MODEL_CARD.md has the full evaluation.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from models.checkpoint import load_checkpoint
from models.discovery import BUNDLED, discover_checkpoints
from models.geometry import letterbox, to_model_tensor, unletterbox
from models.predictor import box_bounds, find_checkpoint, load_predictor, load_segmenter
from models.prompts import render_prompt_maps
from training.data import find_samples, load_sample
from training.click_protocol import object_target, simulate_clicks
from training.evaluate import spread_subset
from training.metrics import ConfusionMatrix

MAX_CHECKPOINT_BYTES = 40 * 1024 * 1024


@pytest.fixture(scope="module")
def bundled() -> dict[str, Path]:
    entries = [e for e in discover_checkpoints() if e.source == BUNDLED]
    assert entries, "no bundled checkpoints in resources/checkpoints"
    assert all(e.loadable for e in entries), [e.describe() for e in entries]
    return {e.task: e.path for e in entries}


@pytest.fixture(scope="module")
def test_photos(pets_root: Path) -> list:
    return spread_subset(find_samples(pets_root, "Test"), 6)


def test_bundled_checkpoints_load_and_fit_the_size_budget(bundled: dict[str, Path]) -> None:
    assert set(bundled) == {"prompt", "semantic"}
    for path in bundled.values():
        assert path.stat().st_size <= MAX_CHECKPOINT_BYTES
        _, metadata = load_checkpoint(path)
        assert metadata["training"]["train_images"] > 1000  # trained on the real data, not a test stub


def test_default_prompt_model_reaches_iou_080_within_3_clicks(bundled: dict[str, Path], test_photos: list) -> None:
    assert find_checkpoint("prompt") == bundled["prompt"]  # the app's default
    predictor = load_predictor(bundled["prompt"], device="cpu")
    best = []
    for sample in test_photos:
        rgb, mask = load_sample(sample)
        predictor.set_image(rgb)
        ious = simulate_clicks(predictor, object_target(mask), max_clicks=3, early_stop=False)["ious"]
        best.append(max(ious))
    assert np.mean(best) >= 0.8 and sum(iou >= 0.8 for iou in best) >= len(best) - 1, best


def test_default_semantic_model_separates_cats_from_dogs(bundled: dict[str, Path], test_photos: list) -> None:
    assert find_checkpoint("semantic") == bundled["semantic"]
    segmenter = load_segmenter(bundled["semantic"], device="cpu")
    matrix = ConfusionMatrix()
    for sample in test_photos:
        rgb, mask = load_sample(sample)
        matrix.update(segmenter.segment(rgb), mask)
    assert matrix.mean_iou() >= 0.7, matrix.summary(["background", "cat", "dog"])


def _reference_probabilities(predictor, rgb: np.ndarray, rect: tuple[int, int, int, int], points, box) -> np.ndarray:
    """The straightforward computation ``predict`` must match: letterbox the view (the whole photo
    or the crop ``rect``), encode, decode the prompt maps, sigmoid (fed back as the previous mask,
    inside the letterboxed photo, ``refine_passes`` times), and resize back (letterbox
    inverse) into a zero image of the photo's size, zeroed outside the box's bounds (no positive
    click lies outside them here)."""
    x0, y0, x1, y1 = rect
    small, lb = letterbox(rgb[y0:y1, x0:x1], predictor.input_size, interpolation=cv2.INTER_AREA)
    with torch.inference_mode():
        features = predictor.model.encode_image(to_model_tensor(small, predictor.metadata["normalization"]))
        positives = [lb.to_model(x - x0, y - y0) for x, y, positive in points if positive]
        negatives = [lb.to_model(x - x0, y - y0) for x, y, positive in points if not positive]
        bx0, by0 = lb.to_model(max(box[0], x0) - x0 - 0.5, max(box[1], y0) - y0 - 0.5)
        bx1, by1 = lb.to_model(min(box[2], x1) - x0 - 0.5, min(box[3], y1) - y0 - 0.5)
        maps = render_prompt_maps(predictor.input_size, positives, negatives, box=(bx0, by0, bx1, by1))
        for _ in range(predictor.refine_passes + 1):
            prob = torch.sigmoid(predictor.model.decode(features, maps[None])[0, 0])
            maps[3] = 0
            maps[3, lb.pad_top : lb.pad_top + lb.new_h, lb.pad_left : lb.pad_left + lb.new_w] = \
                prob[lb.pad_top : lb.pad_top + lb.new_h, lb.pad_left : lb.pad_left + lb.new_w]
        prob = prob.numpy()
    out = np.zeros(rgb.shape[:2], np.float32)
    out[y0:y1, x0:x1] = cv2.resize(prob[lb.pad_top : lb.pad_top + lb.new_h, lb.pad_left : lb.pad_left + lb.new_w],
                                   (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(unletterbox(prob, lb), out[y0:y1, x0:x1])  # the reference is the letterbox inverse
    bx0, by0, bx1, by1 = box_bounds(box, rgb.shape[1], rgb.shape[0])
    bounded = np.zeros_like(out)
    bounded[by0:by1, bx0:bx1] = out[by0:by1, bx0:bx1]
    return bounded


def test_large_photo_probabilities_match_the_reference(bundled: dict[str, Path], test_photos: list) -> None:
    """At 12 MP (whole-photo and zoom-crop paths), with torch on 2 threads, ``predict`` gives what the
    straightforward computation gives, within 1/255 (the app thresholds at a slider value)."""
    predictor = load_predictor(bundled["prompt"], device="cpu")
    photo, mask = load_sample(test_photos[0])
    rgb = cv2.resize(photo, (4000, 3000), interpolation=cv2.INTER_CUBIC)
    pet = cv2.resize((object_target(mask) == 1).view(np.uint8), (4000, 3000), interpolation=cv2.INTER_NEAREST)
    ys, xs = np.nonzero(pet)
    cx, cy = float(np.median(xs)), float(np.median(ys))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        predictor.set_image(rgb)
        cases = [((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1), True),  # the pet's box: whole photo
                 ((cx - 300, cy - 300, cx + 300, cy + 300), False)]  # a small box: a zoom crop
        for box, whole in cases:
            points = [(cx, cy, True), (box[0] + 5, box[1] + 5, False)]
            prob = predictor.predict(points=points, box=box)
            assert (predictor.last_crop is None) == whole
            rect = (0, 0, 4000, 3000) if whole else predictor.last_crop
            reference = _reference_probabilities(predictor, rgb, rect, points, box)
            assert prob.shape == (3000, 4000) and prob.dtype == np.float32
            assert 0.0 <= prob.min() and prob.max() <= 1.0
            assert np.abs(prob - reference).max() <= 1 / 255
            assert prob.max() > 0.5  # a real mask, not an empty one that would match trivially
            assert torch.get_num_threads() == 2  # predict restores the caller's thread count
    finally:
        torch.set_num_threads(threads)
