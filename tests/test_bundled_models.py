"""The checkpoints shipped in resources/checkpoints load and give useful masks on real Test photos.

A fast guard, not the benchmark: MODEL_CARD.md has the full evaluation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.checkpoint import load_checkpoint
from models.discovery import BUNDLED, discover_checkpoints
from models.predictor import find_checkpoint, load_predictor, load_segmenter
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
