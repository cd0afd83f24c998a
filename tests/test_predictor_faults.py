"""Predictor misuse and files that are not photos: a clear ValueError / ImageLoadError, never a hang,
a NaN in the output or a mask built from garbage coordinates."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest

from models.geometry import clip_box
from models.images import ImageLoadError, load_mask, load_rgb
from models.predictor import Predictor, load_predictor


@pytest.fixture(scope="module")
def predictor(tiny_prompt_checkpoint: Path, pet_photos: list[Path]) -> Predictor:
    loaded = load_predictor(tiny_prompt_checkpoint, "cpu")
    loaded.set_image(load_rgb(pet_photos[0]))
    return loaded


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("box, reason", [
    ((NAN, 10, 100, 100), "not a finite number"),
    ((10, 10, INF, 100), "not a finite number"),
    ((10, -INF, 100, 100), "not a finite number"),
    ((None, 10, 100, 100), "must be numbers"),
    (("left", 10, 100, 100), "must be numbers"),
    ((10, 10, 100), r"a box is \(x0, y0, x1, y1\)"),
    ((5000, 5000, 6000, 6000), "empty or outside"),
])
def test_bad_boxes_are_refused(predictor: Predictor, box: tuple, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        predictor.predict(box=box)


@pytest.mark.parametrize("point, reason", [
    ((NAN, 20, True), "outside"),
    ((20, INF, True), "outside"),
    ((None, 20, True), "must be numbers"),
    (("x", 20, True), "must be numbers"),
    ((20, 20), r"a point is \(x, y, positive\)"),
])
def test_bad_points_are_refused(predictor: Predictor, point: tuple, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        predictor.predict(points=[point])


def test_clip_box_keeps_good_boxes() -> None:
    assert clip_box((90, 80, -5, 10), 100, 50) == (0.0, 10.0, 90.0, 50.0)


@pytest.mark.parametrize("bad", [INF, -INF, NAN])
def test_non_finite_prev_mask_values_give_finite_probabilities(predictor: Predictor, bad: float) -> None:
    h, w = predictor.image_size
    prev = predictor.predict(points=[(w / 2, h / 2, True)])
    spoiled = prev.copy()
    spoiled[h // 3 : h // 3 + 12, w // 3 : w // 3 + 12] = bad  # enough for the model-size map to sample
    out = predictor.predict(points=[(w / 2, h / 2, True)], prev_mask=spoiled)
    assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    as_probability = prev.copy()
    as_probability[h // 3 : h // 3 + 12, w // 3 : w // 3 + 12] = 1.0 if bad == INF else 0.0
    expected = predictor.predict(points=[(w / 2, h / 2, True)], prev_mask=as_probability)
    # inf reads as 1, NaN and -inf as 0 (on the model-size map, so inf may also lift its neighbours)
    assert np.abs(out - expected).max() < 0.01


def _load_in_thread(load, path: Path) -> BaseException | None:
    """Run ``load(path)`` with a time limit; returns what it raised (a hang fails the test)."""
    outcome: list[BaseException | None] = []

    def target() -> None:
        try:
            load(path)
            outcome.append(None)
        except BaseException as error:  # noqa: BLE001 - reported to the test
            outcome.append(error)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(10)
    if thread.is_alive():
        with open(path, "wb"):  # unblock the reader so the thread can end
            pass
        pytest.fail(f"{load.__name__} blocked on {path.name}")
    return outcome[0]


@pytest.mark.parametrize("load", [load_rgb, load_mask])
def test_a_named_pipe_is_refused_without_blocking(load, tmp_path: Path) -> None:
    fifo = tmp_path / "photo.jpg"
    os.mkfifo(fifo)
    error = _load_in_thread(load, fifo)
    assert isinstance(error, ImageLoadError)
    assert str(error) == "photo.jpg: not a regular file (a pipe, socket or device), not opened"


def test_a_device_and_a_path_under_a_file_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(ImageLoadError, match=r"^null: not a regular file"):
        load_rgb(Path("/dev/null"))
    plain = tmp_path / "plain.jpg"
    plain.write_bytes(b"x")
    with pytest.raises(ImageLoadError, match=r"^x.jpg: file not found"):
        load_rgb(plain / "x.jpg")
