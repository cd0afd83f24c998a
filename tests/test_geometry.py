"""Letterbox geometry: placement, exact inverse, and coordinate mapping that matches the pixels."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from training.data import MASK_INTERPOLATION
from models.geometry import clip_box, letterbox, letterbox_params, unletterbox
from models.images import load_mask


def _centroid(weights: np.ndarray) -> tuple[float, float]:
    ys, xs = np.indices(weights.shape)
    return float((xs * weights).sum() / weights.sum()), float((ys * weights).sum() / weights.sum())


def test_params_fit_the_longer_side_and_centre_the_shorter() -> None:
    wide = letterbox_params(300, 600, 256)
    assert (wide.new_h, wide.new_w, wide.pad_top, wide.pad_left) == (128, 256, 64, 0)
    assert wide.scale == pytest.approx(256 / 600)
    tall = letterbox_params(500, 375, 100)
    assert (tall.new_h, tall.new_w, tall.pad_top, tall.pad_left) == (100, 75, 0, 12)
    with pytest.raises(ValueError):
        letterbox_params(0, 10, 64)


def test_padding_surrounds_the_resized_content() -> None:
    image = np.full((30, 60, 3), 200, np.uint8)
    out, box = letterbox(image, 64, pad_value=7)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert (out[: box.pad_top] == 7).all() and (out[box.pad_top + box.new_h :] == 7).all()
    assert (out[box.pad_top : box.pad_top + box.new_h] == 200).all()
    single, _ = letterbox(np.zeros((30, 60, 1), np.float32), 64)
    assert single.shape == (64, 64, 1)


def test_label_map_round_trips_exactly_at_scale_one() -> None:
    labels = np.random.default_rng(0).choice(np.array([0, 1, 2, 255], np.uint8), size=(40, 64))
    boxed, box = letterbox(labels, 64, cv2.INTER_NEAREST, pad_value=255)
    assert box.scale == 1 and box.pad_top == 12
    assert (boxed[:12] == 255).all() and (boxed[52:] == 255).all()
    np.testing.assert_array_equal(unletterbox(boxed, box, cv2.INTER_NEAREST), labels)
    channels = np.dstack([labels, labels // 2])
    boxed, box = letterbox(channels, 64, cv2.INTER_NEAREST)
    np.testing.assert_array_equal(unletterbox(boxed, box, cv2.INTER_NEAREST), channels)


@pytest.mark.parametrize("size", [256, 384])
def test_real_masks_survive_a_round_trip(pet_photos: list[Path], size: int) -> None:
    for photo in pet_photos:
        mask = load_mask(photo.parent.parent / "label" / f"{photo.stem}.png")
        boxed, box = letterbox(mask, size, MASK_INTERPOLATION, pad_value=255)
        back = unletterbox(boxed, box, MASK_INTERPOLATION)
        assert back.shape == mask.shape
        pet, pet_back = mask != 0, back != 0  # the animal with its void border band
        assert (pet & pet_back).sum() / (pet | pet_back).sum() >= 0.98, photo.name


def test_unletterbox_refuses_arrays_of_another_size() -> None:
    _, box = letterbox(np.zeros((10, 20), np.uint8), 32)
    with pytest.raises(ValueError, match="32x32"):
        unletterbox(np.zeros((16, 16), np.uint8), box)


def test_coordinates_map_both_ways() -> None:
    box = letterbox_params(300, 500, 128)
    for x, y in [(0, 0), (499, 299), (123.25, 45.5), (-0.5, -0.5)]:
        mx, my = box.to_model(x, y)
        assert box.to_image(mx, my) == pytest.approx((x, y))
    # the outer edges of the image land on the outer edges of the content area
    assert box.to_model(-0.5, -0.5) == pytest.approx((box.pad_left - 0.5, box.pad_top - 0.5))
    assert box.to_model(499.5, 299.5) == pytest.approx((box.pad_left + box.new_w - 0.5, box.pad_top + box.new_h - 0.5))


def test_coordinate_mapping_follows_the_resized_pixels() -> None:
    h, w, x, y = 300, 500, 370.0, 90.0
    ys, xs = np.indices((h, w))
    blob = np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * 8.0**2)).astype(np.float32)
    boxed, box = letterbox(blob, 128)
    assert _centroid(boxed) == pytest.approx(box.to_model(x, y), abs=0.1)
    back = unletterbox(boxed, box)
    assert _centroid(back) == pytest.approx((x, y), abs=0.5)


def test_clip_box_reorders_clips_and_refuses_empty_boxes() -> None:
    assert clip_box((30, 20, 10, 5), 40, 30) == (10.0, 5.0, 30.0, 20.0)  # corners in any order
    assert clip_box((-5.5, -1, 60, 12.5), 40, 30) == (0.0, 0.0, 40.0, 12.5)  # clipped to the image
    assert clip_box(np.array([3, 4, 4, 5]), 40, 30) == (3.0, 4.0, 4.0, 5.0)  # one pixel is enough
    for empty in ((5, 5, 5, 20), (5, 5, 5.5, 20), (45, 0, 60, 30), (0, -10, 40, 0)):
        with pytest.raises(ValueError, match="empty or outside the 40x30 image"):
            clip_box(empty, 40, 30)
    with pytest.raises(ValueError, match="a box is"):
        clip_box((1, 2, 3), 40, 30)
