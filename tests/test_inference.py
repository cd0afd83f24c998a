"""The predictor and segmenter API on real photos with tiny random-init checkpoints."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from models import discovery
from models.predictor import NoModelError, find_checkpoint, load_predictor, load_segmenter, pick_device
from models.images import load_rgb


@pytest.fixture(scope="module")
def predictor(tiny_prompt_checkpoint: Path):
    return load_predictor(tiny_prompt_checkpoint, device="cpu")


@pytest.fixture(scope="module")
def photo(pet_photos: list[Path]) -> np.ndarray:
    return load_rgb(pet_photos[1])


@pytest.fixture()
def ready(predictor, photo: np.ndarray):
    predictor.set_image(photo)
    return predictor


def _window(prob: np.ndarray, x: float, y: float, radius: int) -> np.ndarray:
    xi, yi = int(x), int(y)
    return prob[max(0, yi - radius) : yi + radius, max(0, xi - radius) : xi + radius]


def test_pick_device() -> None:
    assert pick_device("cpu").type == "cpu"
    assert pick_device().type in ("cpu", "cuda")


def test_output_is_probabilities_at_photo_resolution(ready, photo: np.ndarray, pet_photos: list[Path]) -> None:
    h, w = photo.shape[:2]
    prob = ready.predict(points=[(w / 2, h / 2, True)])
    assert prob.shape == (h, w) and prob.dtype == np.float32
    assert 0.0 <= prob.min() and prob.max() <= 1.0
    assert ready.image_size == (h, w) and ready.metadata["task"] == "prompt"
    assert ready.device.type == "cpu" and ready.last_crop is None

    other = load_rgb(pet_photos[0])  # another size: set_image replaces the image
    ready.set_image(other)
    assert ready.predict(points=[(5, 5, True)]).shape == other.shape[:2]


def test_click_changes_the_clicked_corner_most(ready, photo: np.ndarray) -> None:
    h, w = photo.shape[:2]
    bottom_left, top_right = (0.15 * w, 0.85 * h), (0.85 * w, 0.15 * h)
    reference = ready.predict(points=[(*top_right, False)])
    clicked = ready.predict(points=[(*bottom_left, True), (*top_right, False)])
    change = np.abs(clicked - reference)
    radius = max(4, min(h, w) // 10)
    near = _window(change, *bottom_left, radius).mean()
    # Where a swapped or mirrored mapping would have put the click.
    for x, y in [(0.85 * w, 0.85 * h), (0.15 * w, 0.15 * h), (0.85 * h, 0.15 * w)]:
        if 0 <= x < w and 0 <= y < h:
            assert near > 2 * _window(change, x, y, radius).mean()


def test_points_box_and_both(ready, photo: np.ndarray) -> None:
    h, w = photo.shape[:2]
    box = (0.2 * w, 0.2 * h, 0.8 * w, 0.8 * h)
    points = [(w / 2, h / 2, True), (5, 5, False)]
    results = [ready.predict(points=points), ready.predict(box=box), ready.predict(points=points, box=box)]
    for prob in results:
        assert prob.shape == (h, w) and np.isfinite(prob).all()
    assert not np.allclose(results[0], results[1]) and not np.allclose(results[1], results[2])
    reversed_box = (box[2], box[3], box[0], box[1])
    assert np.array_equal(ready.predict(box=reversed_box), results[1])
    clipped = ready.predict(box=(-50, -50, w + 50, h + 50))
    assert np.array_equal(clipped, ready.predict(box=(0, 0, w, h)))


def test_prev_mask_in_any_form(ready, photo: np.ndarray) -> None:
    h, w = photo.shape[:2]
    first = ready.predict(points=[(w / 2, h / 2, True)])
    edited = np.zeros((h, w), bool)
    edited[h // 4 : h // 2, w // 4 : w // 2] = True
    for prev in (first, first.astype(np.float64), edited, edited.astype(np.uint8) * 255):
        prob = ready.predict(points=[(w / 2, h / 2, True)], prev_mask=prev)
        assert prob.shape == (h, w) and prob.dtype == np.float32
    with_edit = ready.predict(points=[(w / 2, h / 2, True)], prev_mask=edited)
    without = ready.predict(points=[(w / 2, h / 2, True)])
    assert not np.allclose(with_edit, without)
    with pytest.raises(ValueError, match="prev_mask"):
        ready.predict(points=[(1, 1, True)], prev_mask=np.zeros((h + 1, w), np.float32))


@pytest.mark.parametrize(
    "points, box, message",
    [
        ([(-1, 5, True)], None, r"point \(-1, 5\)"),
        ([("W", 0, True)], None, r"point \(\d+, 0\) lies outside the \d+x\d+ image"),
        ([("W", "H", False)], None, "outside"),
        ([(3, 4)], None, r"\(x, y, positive\)"),
        ([], (10, 10, 10, 50), "empty"),
        ([], ("W+10", 0, "W+90", 40), "outside"),
        ([], (1, 2, 3), r"\(x0, y0, x1, y1\)"),
        ([], None, "at least one point or a box"),
    ],
)
def test_bad_prompts_are_rejected(ready, photo: np.ndarray, points, box, message: str) -> None:
    h, w = photo.shape[:2]
    size = {"W": w, "H": h, "W+10": w + 10, "W+90": w + 90}
    points = [tuple(size.get(v, v) for v in p) for p in points]
    box = None if box is None else tuple(size.get(v, v) for v in box)
    with pytest.raises(ValueError, match=message):
        ready.predict(points=points, box=box)


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((40, 50, 3), np.float32),
        np.zeros((40, 50), np.uint8),
        np.zeros((40, 50, 4), np.uint8),
        np.zeros((0, 50, 3), np.uint8),
        [[0, 0, 0]],
    ],
    ids=["float", "2-D", "RGBA", "empty", "list"],
)
def test_bad_images_are_rejected(predictor, image) -> None:
    with pytest.raises(ValueError, match="HxWx3 uint8|numpy array"):
        predictor.set_image(image)


def test_predict_before_set_image(tiny_prompt_checkpoint: Path) -> None:
    fresh = load_predictor(tiny_prompt_checkpoint, device="cpu")
    with pytest.raises(RuntimeError, match="set_image"):
        fresh.predict(points=[(1, 1, True)])


def test_image_is_copied(predictor, photo: np.ndarray) -> None:
    h, w = photo.shape[:2]
    buffer = photo.copy()
    predictor.set_image(buffer)
    before = predictor.predict(points=[(w / 2, h / 2, True)], box=(w / 4, h / 4, w * 3 / 4, h * 3 / 4))
    buffer[:] = 0  # the caller reuses its buffer
    after = predictor.predict(points=[(w / 2, h / 2, True)], box=(w / 4, h / 4, w * 3 / 4, h * 3 / 4))
    assert np.array_equal(before, after)


def test_unusable_checkpoints_give_one_line_reasons(
    tmp_path: Path, tiny_prompt_checkpoint: Path, tiny_semantic_checkpoint: Path
) -> None:
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    for path, reason in [
        (corrupt, "corrupt.safetensors: corrupt safetensors header"),
        (tmp_path / "model.pt", "pickle"),
        (tiny_semantic_checkpoint, "not a prompt model"),
    ]:
        with pytest.raises(NoModelError, match=reason) as caught:
            load_predictor(path, device="cpu")
        assert "\n" not in str(caught.value)
    with pytest.raises(NoModelError, match="not a semantic model"):
        load_segmenter(tiny_prompt_checkpoint, device="cpu")


@pytest.fixture()
def isolated_search(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Discovery that sees none of this machine's checkpoints: empty bundled, user and runs folders."""
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setattr(discovery, "resources_dir", lambda: empty)
    monkeypatch.setenv("HOME", str(empty))
    monkeypatch.setenv("XDG_DATA_HOME", str(empty))
    monkeypatch.setenv("APPDATA", str(empty))
    monkeypatch.setenv("PETSEG_RUNS", str(empty))
    monkeypatch.delenv("PETSEG_CHECKPOINTS", raising=False)
    return empty


def test_discovery_through_environment(
    isolated_search: Path, tiny_prompt_checkpoint: Path, tiny_semantic_checkpoint: Path, monkeypatch
) -> None:
    with pytest.raises(NoModelError, match="no usable prompt checkpoint"):
        load_predictor(device="cpu")
    (isolated_search / "broken.safetensors").write_bytes(b"")
    monkeypatch.setenv("PETSEG_CHECKPOINTS", f"{isolated_search}:{tiny_prompt_checkpoint.parent}")
    assert find_checkpoint("prompt") == tiny_prompt_checkpoint
    predictor = load_predictor(device="cpu")
    assert predictor.metadata["arch"] == "prompt_unet"
    with pytest.raises(NoModelError, match="1 unusable, e.g. broken.safetensors"):
        load_segmenter(device="cpu")
    monkeypatch.setenv("PETSEG_CHECKPOINTS", str(tiny_semantic_checkpoint.parent))
    assert load_segmenter(device="cpu").metadata["task"] == "semantic"


def test_large_photo_refines_on_a_zoomed_crop(predictor, photo: np.ndarray) -> None:
    big = cv2.resize(photo, (4000, 3000), interpolation=cv2.INTER_LINEAR)
    predictor.set_image(big)
    prob = predictor.predict(points=[(2000, 1500, True)])
    assert prob.shape == (3000, 4000) and predictor.last_crop is None  # nothing says where the object is

    box = (1500, 1000, 2400, 1900)
    prob = predictor.predict(points=[(2000, 1500, True)], box=box)
    assert prob.shape == (3000, 4000) and prob.dtype == np.float32
    x0, y0, x1, y1 = crop = predictor.last_crop
    assert x0 <= box[0] and y0 <= box[1] and x1 >= box[2] and y1 >= box[3]
    assert (x1 - x0) * (y1 - y0) < 0.5 * 4000 * 3000
    outside = np.ones(prob.shape, bool)
    outside[y0:y1, x0:x1] = False
    assert prob[outside].max() == 0.0 and prob[~outside].max() > 0.0

    edited = np.zeros(prob.shape, bool)
    edited[1100:1800, 1600:2300] = True  # a previous mask inside the same region reuses the crop
    prob = predictor.predict(points=[(2000, 1500, True), (1700, 1200, False)], prev_mask=edited)
    assert predictor.last_crop == crop and prob.shape == (3000, 4000)

    whole = predictor.predict(points=[(2000, 1500, True)], box=(10, 10, 3990, 2990))
    assert predictor.last_crop is None and whole.shape == (3000, 4000)  # a crop would gain nothing


def test_segmenter_labels_and_probabilities(tiny_semantic_checkpoint: Path, photo: np.ndarray) -> None:
    segmenter = load_segmenter(tiny_semantic_checkpoint, device="cpu")
    labels = segmenter.segment(photo)
    assert labels.shape == photo.shape[:2] and labels.dtype == np.uint8
    assert set(np.unique(labels)) <= {0, 1, 2}
    prob = segmenter.probabilities(photo)
    assert prob.shape == (*photo.shape[:2], 3) and prob.dtype == np.float32
    assert np.allclose(prob.sum(axis=2), 1, atol=1e-4)
    assert np.array_equal(prob.argmax(axis=2), labels)
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        segmenter.segment(photo[:, :, 0])


def test_a_first_prediction_is_fed_back_as_the_previous_mask(tiny_prompt_checkpoint: Path, photo: np.ndarray,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    for passes in (0, 2):
        predictor = load_predictor(tiny_prompt_checkpoint, device="cpu", refine_passes=passes)
        predictor.set_image(photo)  # not square: the letterbox pads it
        seen: list[tuple[torch.Tensor, torch.Tensor]] = []
        decode = predictor.model.decode

        def recording(features, maps, decode=decode):
            logits = decode(features, maps)
            seen.append((maps[0].clone(), torch.sigmoid(logits[0, 0])))
            return logits

        monkeypatch.setattr(predictor.model, "decode", recording)
        h, w = photo.shape[:2]
        prob = predictor.predict(points=[(w / 2, h / 2, True)])
        assert len(seen) == passes + 1
        lb = predictor._global.box
        content = np.zeros(seen[0][0].shape[1:], bool)
        content[lb.pad_top : lb.pad_top + lb.new_h, lb.pad_left : lb.pad_left + lb.new_w] = True
        assert content.sum() < content.size and not seen[0][0][3].any()  # no previous mask was given
        for (maps, out), (next_maps, _) in zip(seen, seen[1:]):
            assert torch.equal(next_maps[:3], maps[:3])  # the same clicks and box
            torch.testing.assert_close(next_maps[3][content], out[content])
            assert not next_maps[3][~content].any()  # nothing fed back in the padding
        last = cv2.resize(seen[-1][1].numpy()[lb.pad_top : lb.pad_top + lb.new_h, lb.pad_left : lb.pad_left + lb.new_w],
                          (w, h), interpolation=cv2.INTER_LINEAR)
        assert np.abs(prob - last).mean() < 0.01  # the answer is the last pass's

        seen.clear()  # a later click refines the mask it is given in one pass
        predictor.predict(points=[(w / 2, h / 2, True), (5, 5, False)], prev_mask=prob)
        assert len(seen) == 1
