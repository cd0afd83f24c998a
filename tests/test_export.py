"""Batch export on real photos with a tiny random-init semantic model: formats, skipping, failures, cancel."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models.checkpoint import load_checkpoint, save_checkpoint
from petseg_desktop.coco import COCO_FILE, rle_encode
from petseg_desktop.export import export_images, main
from petseg_desktop.export_files import expand_inputs
from models.predictor import load_segmenter
from models.geometry import letterbox, to_model_tensor
from models.images import load_rgb

COLOURS = {(0, 0, 0): 0, (128, 0, 0): 1, (0, 128, 0): 2}


def rle_decode(rle: dict) -> np.ndarray:
    """Decode COCO compressed RLE (a transcription of pycocotools' rleFrString + rleDecode)."""
    h, w = rle["size"]
    counts: list[int] = []
    data, p = rle["counts"].encode(), 0
    while p < len(data):
        x, k, more = 0, 0, True
        while more:
            c = data[p] - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    values = np.zeros(sum(counts), dtype=bool)
    position = 0
    for i, run in enumerate(counts):
        values[position : position + run] = i % 2 == 1
        position += run
    return values.reshape((w, h)).T  # column-major


@pytest.fixture(scope="module")
def balanced_checkpoint(tiny_semantic_checkpoint: Path, pet_photos: list[Path], tmp_path_factory) -> Path:
    """The tiny random-init U-Net with its head's biases centred on the photos: it predicts all 3 classes."""
    model, metadata = load_checkpoint(tiny_semantic_checkpoint)
    size, normalization = metadata["input_size"], metadata["normalization"]
    batch = torch.cat([to_model_tensor(letterbox(load_rgb(p), size)[0], normalization) for p in pet_photos[:3]])
    with torch.no_grad():
        model.decoder.head.bias -= model(batch).mean(dim=(0, 2, 3))
    return save_checkpoint(tmp_path_factory.mktemp("balanced") / "balanced-unet.safetensors", model, metadata)


@pytest.fixture(scope="module")
def segmenter(balanced_checkpoint: Path):
    return load_segmenter(balanced_checkpoint, device="cpu")


@pytest.fixture()
def photo_dir(tmp_path: Path, pet_photos: list[Path]) -> Path:
    """A folder holding three real photos (and a text file that is not a photo)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for photo in pet_photos[:3]:
        shutil.copy(photo, folder / photo.name)
    (folder / "notes.txt").write_text("not a photo")
    return folder


def _photos(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix == ".jpg")


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".") or p.name.endswith(".tmp")]


def test_rle_known_strings_and_round_trip() -> None:
    one = np.zeros((2, 3), dtype=bool)
    one[0, 1] = True  # column-major: 2 zeros, 1 one, 3 zeros
    assert rle_encode(one) == {"size": [2, 3], "counts": "213"}
    first = np.array([[1, 1, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 0]], dtype=bool).T
    assert rle_encode(first)["counts"] == "0255L"  # runs 0, 2, 5, 7, 1: from the fourth, minus the run two back
    rng = np.random.default_rng(0)
    for mask in [np.zeros((7, 5), bool), np.ones((7, 5), bool), rng.random((60, 45)) > 0.7]:
        assert np.array_equal(rle_decode(rle_encode(mask)), mask)
    big = np.zeros((300, 200), bool)
    big[40:260, 30:150] = True  # runs longer than 31 need several characters
    assert np.array_equal(rle_decode(rle_encode(big)), big)


def test_expand_inputs(photo_dir: Path, tmp_path: Path) -> None:
    photos = _photos(photo_dir)
    assert expand_inputs([photo_dir]) == photos  # the .txt is not a photo
    assert expand_inputs([photos[2], photo_dir, photos[0]]) == photos  # sorted, no repeats
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        expand_inputs([tmp_path / "missing.jpg"])


def test_all_formats_agree(segmenter, photo_dir: Path, tmp_path: Path) -> None:
    photos = _photos(photo_dir)
    labels = {}
    for fmt in ("png", "color", "coco"):
        summary = export_images([photo_dir], tmp_path / fmt, segmenter, fmt=fmt)
        assert (summary.written, summary.skipped, summary.failed, summary.cancelled) == (3, 0, [], False)
        assert _leftovers(tmp_path / fmt) == []
    for photo in photos:
        h, w = load_rgb(photo).shape[:2]
        index = np.array(Image.open(tmp_path / "png" / f"{photo.stem}.png"))
        assert index.shape == (h, w) and index.dtype == np.uint8
        assert set(np.unique(index)) <= {0, 1, 2}
        labels[photo.name] = index
        colour = np.array(Image.open(tmp_path / "color" / f"{photo.stem}.png").convert("RGB"))
        assert {tuple(c) for c in np.unique(colour.reshape(-1, 3), axis=0)} <= set(COLOURS)
        expected = np.array(list(COLOURS))[index]
        assert np.array_equal(colour, expected)
    assert len(set(np.unique(np.concatenate([m.ravel() for m in labels.values()])))) > 1  # a non-trivial test

    doc = json.loads((tmp_path / "coco" / COCO_FILE).read_text())
    assert [c["name"] for c in doc["categories"]] == ["cat", "dog"]
    assert sorted(i["file_name"] for i in doc["images"]) == sorted(labels)
    for image in doc["images"]:
        rebuilt = np.zeros((image["height"], image["width"]), np.uint8)
        for ann in (a for a in doc["annotations"] if a["image_id"] == image["id"]):
            mask = rle_decode(ann["segmentation"])
            assert ann["area"] == mask.sum() and ann["iscrowd"] == 0
            x, y, bw, bh = ann["bbox"]
            assert mask[y : y + bh, x : x + bw].sum() == mask.sum()
            rebuilt[mask] = ann["category_id"]
        assert np.array_equal(rebuilt, labels[image["file_name"]])


def test_skip_existing_leaves_files_untouched(segmenter, photo_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    export_images([photo_dir], out, segmenter)
    first, second, third = sorted(out.iterdir())
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(first)  # a mask edited by hand
    edited = first.read_bytes()
    third.unlink()
    seen = []
    summary = export_images([photo_dir], out, segmenter, skip_existing=True, progress=lambda *a: seen.append(a))
    assert (summary.written, summary.skipped, summary.failed) == (1, 2, [])
    assert first.read_bytes() == edited and third.exists()
    assert seen[-1][:2] == (3, 3)

    coco = tmp_path / "coco"
    export_images(_photos(photo_dir)[:2], coco, segmenter, fmt="coco")
    summary = export_images([photo_dir], coco, segmenter, fmt="coco", skip_existing=True)
    assert (summary.written, summary.skipped) == (1, 2)
    doc = json.loads((coco / COCO_FILE).read_text())
    assert len(doc["images"]) == 3 and len({i["id"] for i in doc["images"]}) == 3


def test_corrupt_photo_is_reported_and_others_written(
    segmenter, balanced_checkpoint: Path, photo_dir: Path, tmp_path: Path, capsys
) -> None:
    good = _photos(photo_dir)
    data = good[0].read_bytes()
    (photo_dir / "broken.jpg").write_bytes(data[: len(data) // 3])
    (photo_dir / "empty.png").write_bytes(b"")
    out = tmp_path / "out"
    summary = export_images([photo_dir], out, segmenter)
    assert summary.written == 3
    assert sorted(path.name for path, _ in summary.failed) == ["broken.jpg", "empty.png"]
    assert all(name in reason for name, reason in ((p.name, r) for p, r in summary.failed))
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{p.stem}.png" for p in good)

    argv = ["--input", str(photo_dir), "--output", str(tmp_path / "cli"), "--device", "cpu",
            "--checkpoint", str(balanced_checkpoint)]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "broken.jpg" in err and "empty.png" in err and "3 written" in err


@pytest.mark.parametrize("fmt", ["png", "coco"])
def test_cancel_keeps_finished_files_only(segmenter, photo_dir: Path, tmp_path: Path, fmt: str) -> None:
    cancel = threading.Event()
    out = tmp_path / "out"
    summary = export_images([photo_dir], out, segmenter, fmt=fmt, progress=lambda *a: cancel.set(), cancel=cancel)
    assert summary.cancelled and summary.written == 1 and summary.failed == []
    assert _leftovers(out) == []
    if fmt == "png":
        assert len(list(out.iterdir())) == 1
    else:
        assert len(json.loads((out / COCO_FILE).read_text())["images"]) == 1


def test_keyboard_interrupt_leaves_no_partial_file(segmenter, photo_dir: Path, tmp_path: Path) -> None:
    def interrupt(done: int, total: int, path: Path) -> None:
        raise KeyboardInterrupt

    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        export_images([photo_dir], out, segmenter, fmt="coco", progress=interrupt)
    assert list(out.iterdir()) == []  # the COCO file is written only at the end
    with pytest.raises(KeyboardInterrupt):
        export_images([photo_dir], out, segmenter, progress=interrupt)
    assert _leftovers(out) == [] and len(list(out.iterdir())) == 1


def test_cli_end_to_end(balanced_checkpoint: Path, photo_dir: Path, tmp_path: Path, capsys) -> None:
    photos = _photos(photo_dir)
    out = tmp_path / "out"
    argv = ["--input", str(photos[0]), str(photo_dir), "--output", str(out), "--format", "color",
            "--checkpoint", str(balanced_checkpoint), "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{p.stem}.png" for p in photos)
    printed = capsys.readouterr()
    assert "3 written" in printed.out
    assert f"model {balanced_checkpoint} on cpu" in printed.err  # says which model it used
    assert main([*argv, "--skip-existing"]) == 0
    assert "3 skipped" in capsys.readouterr().out
    assert main(["--input", str(photo_dir), "--output", str(out), "--checkpoint", str(tmp_path / "none.safetensors")]) == 2
    assert "none.safetensors" in capsys.readouterr().err
