"""Reading photos and masks in every mode and failure, atomic PNG writes, model tensors."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models import images
from models.classes import MASK_PALETTE
from models.geometry import to_model_tensor
from models.images import ImageLoadError, load_mask, load_rgb, save_png_atomic

RED, BLUE = (255, 0, 0), (0, 0, 255)


def _assert_one_line_naming(error: pytest.ExceptionInfo, name: str) -> None:
    message = str(error.value)
    assert name in message and "\n" not in message


def test_real_photos_load_at_their_recorded_size(pets_root: Path, pet_photos: list[Path]) -> None:
    with open(pets_root / "index.csv", newline="") as f:
        sizes = {row["stem"]: (int(row["height"]), int(row["width"])) for row in csv.DictReader(f)}
    for photo in pet_photos:
        rgb = load_rgb(photo)
        assert rgb.dtype == np.uint8 and rgb.shape == sizes[photo.stem] + (3,)
        assert rgb.std() > 10  # a real photo, not a blank decode


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    stored = np.zeros((20, 40, 3), np.uint8)  # stored landscape: left half red, right half blue
    stored[:, :20] = RED
    stored[:, 20:] = BLUE
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    path = tmp_path / "rotated.jpg"
    Image.fromarray(stored).save(path, exif=exif, quality=95)
    rgb = load_rgb(path)
    assert rgb.shape == (40, 20, 3)  # shown as portrait
    top, bottom = rgb[:18].reshape(-1, 3).mean(0), rgb[22:].reshape(-1, 3).mean(0)
    assert top[0] > 200 and top[2] < 50  # the stored left (red) side is now on top
    assert bottom[2] > 200 and bottom[0] < 50


def test_grayscale_becomes_three_equal_channels(tmp_path: Path) -> None:
    gray = np.arange(0, 250, 10, dtype=np.uint8).reshape(5, 5)
    Image.fromarray(gray, "L").save(tmp_path / "gray.png")
    rgb = load_rgb(tmp_path / "gray.png")
    assert rgb.shape == (5, 5, 3)
    for channel in range(3):
        np.testing.assert_array_equal(rgb[:, :, channel], gray)


def test_rgba_is_composited_over_white(tmp_path: Path) -> None:
    rgba = np.zeros((1, 3, 4), np.uint8)
    rgba[0] = [(255, 0, 0, 255), (255, 0, 0, 0), (0, 0, 0, 128)]
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    rgb = load_rgb(tmp_path / "alpha.png").astype(int)
    assert rgb[0, 0].tolist() == [255, 0, 0]  # opaque: unchanged
    assert rgb[0, 1].tolist() == [255, 255, 255]  # transparent: white
    assert all(abs(v - 127) <= 1 for v in rgb[0, 2])  # half-transparent black over white: mid grey


def test_palette_image_gives_its_colours(tmp_path: Path) -> None:
    image = Image.fromarray(np.array([[0, 1], [2, 1]], np.uint8), "P")
    image.putpalette([10, 20, 30, 200, 100, 0, 0, 0, 250] + [0] * 759)
    image.save(tmp_path / "palette.png")
    rgb = load_rgb(tmp_path / "palette.png")
    assert rgb[0, 0].tolist() == [10, 20, 30]
    assert rgb[0, 1].tolist() == [200, 100, 0] == rgb[1, 1].tolist()
    assert rgb[1, 0].tolist() == [0, 0, 250]


def test_sixteen_bit_is_scaled_by_the_full_range(tmp_path: Path) -> None:
    Image.fromarray(np.array([[0, 128 * 257, 65535]], np.uint16)).save(tmp_path / "deep.png")
    rgb = load_rgb(tmp_path / "deep.png")
    assert rgb.dtype == np.uint8
    assert rgb[0, :, 0].tolist() == [0, 128, 255]
    assert (rgb[..., 0] == rgb[..., 2]).all()


def test_cmyk_jpeg_is_converted(tmp_path: Path) -> None:
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    rgb = load_rgb(tmp_path / "cmyk.jpg").reshape(-1, 3).mean(0)
    assert rgb[0] > 200 and rgb[1] < 50 and rgb[2] < 50


def test_unicode_path(tmp_path: Path) -> None:
    folder = tmp_path / "données" / "猫"
    folder.mkdir(parents=True)
    Image.new("RGB", (6, 4), RED).save(folder / "chat_été_🐱.png")
    assert load_rgb(folder / "chat_été_🐱.png").shape == (4, 6, 3)


def test_corrupt_truncated_missing_and_non_images_raise_one_line_errors(tmp_path: Path, pet_photos: list[Path]) -> None:
    data = pet_photos[0].read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "noise.jpg").write_bytes(bytes(range(256)) * 8)
    (tmp_path / "notes.png").write_text("not an image")
    (tmp_path / "folder.jpg").mkdir()
    for name in ("truncated.jpg", "noise.jpg", "notes.png", "missing.jpg", "folder.jpg"):
        with pytest.raises(ImageLoadError) as error:
            load_rgb(tmp_path / name)
        _assert_one_line_naming(error, name)
        assert isinstance(error.value, ValueError)
    with pytest.raises(ImageLoadError, match="truncated"):
        load_rgb(tmp_path / "truncated.jpg")
    with pytest.raises(ImageLoadError, match="not found"):
        load_mask(tmp_path / "missing.png")


def test_huge_images_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Image.new("RGB", (40, 30)).save(tmp_path / "big.png")
    monkeypatch.setattr(images, "MAX_PIXELS", 1000)  # our own limit, checked before decoding
    with pytest.raises(ImageLoadError, match="too large") as error:
        load_rgb(tmp_path / "big.png")
    _assert_one_line_naming(error, "big.png")
    monkeypatch.setattr(images, "MAX_PIXELS", 10**9)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow's decompression-bomb guard
    with pytest.raises(ImageLoadError, match="too large"):
        load_rgb(tmp_path / "big.png")


def test_real_palette_mask_gives_indices_matching_its_colours(pet_photos: list[Path]) -> None:
    label = pet_photos[1].parent.parent / "label" / f"{pet_photos[1].stem}.png"
    mask = load_mask(label)
    assert mask.dtype == np.uint8 and mask.ndim == 2
    assert set(np.unique(mask)) <= {0, 1, 2, 255} and 2 in mask  # pet_photos[1] is a dog
    colours = np.array(Image.open(label).convert("RGB"))
    np.testing.assert_array_equal(colours[mask == 2], np.tile([0, 128, 0], ((mask == 2).sum(), 1)))


def test_rgb_mask_colours_map_to_classes(tmp_path: Path) -> None:
    colours = np.array([[[0, 0, 0], [128, 0, 0]], [[0, 128, 0], [255, 255, 255]]], np.uint8)
    Image.fromarray(colours).save(tmp_path / "colours.png")
    assert load_mask(tmp_path / "colours.png").tolist() == [[0, 1], [2, 255]]
    colours[0, 0] = (1, 2, 3)
    Image.fromarray(colours).save(tmp_path / "odd.png")
    with pytest.raises(ImageLoadError, match=r"\(1, 2, 3\)") as error:
        load_mask(tmp_path / "odd.png")
    _assert_one_line_naming(error, "odd.png")


def test_single_channel_masks_keep_their_values(tmp_path: Path) -> None:
    values = np.array([[0, 1], [2, 255]], np.uint8)
    Image.fromarray(values, "L").save(tmp_path / "l.png")
    Image.fromarray(np.dstack([values, np.full_like(values, 255)]), "LA").save(tmp_path / "la.png")
    Image.fromarray(np.repeat(values[:, :, None], 3, axis=2)).save(tmp_path / "gray_rgb.png")
    for name in ("l.png", "la.png", "gray_rgb.png"):
        np.testing.assert_array_equal(load_mask(tmp_path / name), values)


def test_save_png_atomic_round_trips_and_leaves_no_temp_files(tmp_path: Path) -> None:
    mask = np.array([[0, 1, 2], [255, 1, 0]], np.uint8)
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    save_png_atomic(tmp_path / "out" / "mask.png", mask)
    save_png_atomic(tmp_path / "out" / "rgb.png", rgb)
    save_png_atomic(tmp_path / "out" / "palette.png", mask, palette=MASK_PALETTE)
    np.testing.assert_array_equal(load_mask(tmp_path / "out" / "mask.png"), mask)
    np.testing.assert_array_equal(load_rgb(tmp_path / "out" / "rgb.png"), rgb)
    with Image.open(tmp_path / "out" / "palette.png") as image:
        assert image.mode == "P"
        assert image.convert("RGB").getpixel((1, 0)) == (128, 0, 0)
    np.testing.assert_array_equal(load_mask(tmp_path / "out" / "palette.png"), mask)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["mask.png", "palette.png", "rgb.png"]
    (tmp_path / "plain.txt").write_text("")  # saved PNGs get the same permissions as any new file
    assert (tmp_path / "out" / "mask.png").stat().st_mode == (tmp_path / "plain.txt").stat().st_mode


def test_save_png_atomic_failure_keeps_old_file_and_removes_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "mask.png"
    save_png_atomic(target, np.zeros((4, 4), np.uint8))
    before = target.read_bytes()

    def interrupted(src: str, dst: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_png_atomic(target, np.ones((4, 4), np.uint8))
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["mask.png"]
    with pytest.raises(ValueError, match="uint8"):
        save_png_atomic(tmp_path / "float.png", np.zeros((4, 4), np.float32))
    assert [p.name for p in tmp_path.iterdir()] == ["mask.png"]


def test_to_model_tensor_normalises_channels_in_rgb_order() -> None:
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[..., 0] = 255
    rgb[1, 2] = (0, 51, 102)
    tensor = to_model_tensor(rgb, {"mean": [0.5, 0.2, 0.0], "std": [0.5, 0.2, 1.0]})
    assert tensor.shape == (1, 3, 2, 3) and tensor.dtype == torch.float32
    assert tensor[0, 0, 0, 0].item() == pytest.approx(1.0)  # (1 - 0.5) / 0.5
    assert tensor[0, 1, 0, 0].item() == pytest.approx(-1.0)  # (0 - 0.2) / 0.2
    assert tensor[0, :, 1, 2].tolist() == pytest.approx([-1.0, 0.0, 0.4])
    with pytest.raises(ValueError):
        to_model_tensor(rgb[..., :2], {"mean": [0, 0, 0], "std": [1, 1, 1]})
