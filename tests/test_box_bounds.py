"""A box bounds its mask (issue "One pet at a time", item 3), on real Test photos and the bundled
prompt checkpoint: nothing outside the box plus its margin, unless a positive click out there
extends the mask; predictions without a box are untouched."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from models.discovery import BUNDLED, discover_checkpoints
from models.predictor import Predictor, box_bounds, load_predictor
from training.click_protocol import object_target, tight_box
from training.data import find_samples, load_sample
from training.evaluate import spread_subset


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    entries = [e for e in discover_checkpoints() if e.source == BUNDLED and e.task == "prompt"]
    assert entries, "no bundled prompt checkpoint"
    return load_predictor(entries[0].path, device="cpu")


@pytest.fixture(scope="module")
def pets(pets_root) -> list[tuple[np.ndarray, np.ndarray]]:
    """Six real Test photos (RGB) with their pet masks (bool), all 400 px high."""
    out = []
    for sample in spread_subset(find_samples(pets_root, "Test"), 6):
        rgb, labels = load_sample(sample)
        pet = (object_target(labels) == 1).view(np.uint8)
        width = round(rgb.shape[1] * 400 / rgb.shape[0])
        out.append((cv2.resize(rgb, (width, 400), interpolation=cv2.INTER_AREA),
                    cv2.resize(pet, (width, 400), interpolation=cv2.INTER_NEAREST).astype(bool)))
    return out


def side_by_side(pets: list[tuple[np.ndarray, np.ndarray]], gap: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
    """The photos pasted left to right (``gap`` grey columns between them), and each pet's mask."""
    strip = np.full((400, gap, 3), 128, np.uint8)
    rgb = np.concatenate([part for p in pets for part in (p[0], strip)][:-1], axis=1)
    masks, x = [], 0
    for _, pet in pets:
        full = np.zeros(rgb.shape[:2], bool)
        full[:, x : x + pet.shape[1]] = pet
        masks.append(full)
        x += pet.shape[1] + gap
    return rgb, masks


def outside(mask: np.ndarray, rect: tuple[int, int, int, int]) -> np.ndarray:
    """``mask`` with ``rect`` (x0, y0, x1, y1) cleared."""
    rest = mask.copy()
    rest[rect[1] : rect[3], rect[0] : rect[2]] = False
    return rest


def centre(mask: np.ndarray) -> tuple[float, float]:
    """A pixel of ``mask`` near its median (x, y)."""
    ys, xs = np.nonzero(mask)
    i = np.argmin(np.abs(xs - np.median(xs)) + np.abs(ys - np.median(ys)))
    return float(xs[i]), float(ys[i])


def test_box_bounds_margin() -> None:
    assert box_bounds((100, 100, 500, 900), 1000, 1000) == (98, 96, 502, 904)  # 0.5% each side
    assert box_bounds((10, 10, 30, 20), 1000, 1000) == (8, 8, 32, 22)  # at least 2 px
    assert box_bounds((0, 0, 1000, 1000), 1000, 1000) == (0, 0, 1000, 1000)  # inside the image


def test_nothing_outside_the_box_and_margin(predictor: Predictor, pets) -> None:
    rgb, masks = side_by_side(pets[:2])
    predictor.set_image(rgb)
    h, w = rgb.shape[:2]
    box = tight_box(masks[0])
    for points in ([], [(*centre(masks[0]), True)], [(*centre(masks[0]), True), (*centre(masks[1]), False)]):
        prob = predictor.predict(points=points, box=box)
        assert prob[box[1] : box[3], box[0] : box[2]].max() > 0.5
        assert not outside(prob > 0, box_bounds(box, w, h)).any()


def test_a_box_on_one_of_two_pets_keeps_to_it(predictor: Predictor, pets) -> None:
    """Two pets side by side (three such composites): >= 99% of the box's mask is inside the box."""
    inside = total = 0
    for first, second in ((0, 1), (2, 3), (4, 5)):
        rgb, masks = side_by_side([pets[first], pets[second]])
        predictor.set_image(rgb)
        box = tight_box(masks[0])
        mask = predictor.predict(box=box) > 0.5
        assert not (mask & masks[1]).any()  # the other pet is never in
        assert (mask & masks[0]).sum() / (mask | masks[0]).sum() > 0.6
        inside += mask[box[1] : box[3], box[0] : box[2]].sum()
        total += mask.sum()
    assert inside >= 0.99 * total


def test_a_positive_click_outside_the_box_extends_the_mask_there_only(predictor: Predictor, pets) -> None:
    rgb, masks = side_by_side(pets[:3], gap=40)  # pets 2 and 3 apart: not connected
    predictor.set_image(rgb)
    h, w = rgb.shape[:2]
    box = tight_box(masks[0])
    bounds = box_bounds(box, w, h)
    cx, cy = centre(masks[1])
    mask = predictor.predict(points=[(cx, cy, True)], box=box) > 0.5
    near = mask[int(cy) - 20 : int(cy) + 20, int(cx) - 20 : int(cx) + 20]
    assert near.mean() > 0.5  # the click's pet is in
    spill = outside(mask, bounds)
    assert spill.sum() > 0.3 * masks[1].sum()
    assert not (spill & masks[2]).any()  # the third pet, not connected to the click, stays out
    # Everything kept outside is one connected piece with the click (at the model's resolution, a
    # pixel of slack): its components all touch the clicked one's neighbourhood.
    count, labels = cv2.connectedComponents(spill.view(np.uint8), connectivity=8)
    clicked = labels[int(cy), int(cx)]
    assert clicked > 0
    big = [i for i in range(1, count) if i != clicked and (labels == i).sum() > 50]
    assert not big, "parts outside the box not connected to the click"


def test_without_a_box_nothing_changes(predictor: Predictor, pets, monkeypatch) -> None:
    rgb, masks = side_by_side(pets[:2])
    predictor.set_image(rgb)
    points = [(*centre(masks[0]), True), (*centre(masks[1]), True)]
    first = predictor.predict(points=points[:1])
    results = [first, predictor.predict(points=points, prev_mask=first)]

    def must_not_run(*args, **kwargs):
        raise AssertionError("bounded a prediction without a box")

    monkeypatch.setattr(Predictor, "_bound_to_box", must_not_run)
    again = [predictor.predict(points=points[:1]), predictor.predict(points=points, prev_mask=first)]
    for a, b in zip(results, again):
        assert np.array_equal(a, b)
        assert a.max() > 0.5
