"""Data layouts, splits, samples, the training dataset and its augmentation, on real files."""

from __future__ import annotations

import csv
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from training.augment import build_augmentation
from training.data import (
    FOLDERS,
    OXFORD,
    PROCESSED,
    Sample,
    SegmentationDataset,
    detect_layout,
    find_samples,
    load_labels,
    load_sample,
    sample_weights,
    train_val_split,
)
from models.classes import MASK_PALETTE
from models.images import save_png_atomic

NORM = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
BLUE, RED, GREEN = (0, 0, 255), (255, 0, 0), (0, 255, 0)


def _photo(path: Path, h: int, w: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(len(path.name)).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)


def _mask(path: Path, labels: np.ndarray) -> None:
    save_png_atomic(path, labels.astype(np.uint8), palette=MASK_PALETTE)


def _blob(h: int, w: int, inside: int, outside: int, border: int) -> np.ndarray:
    """A centred rectangle of ``inside`` with a one-pixel ``border`` ring, on ``outside``."""
    labels = np.full((h, w), outside, np.uint8)
    labels[h // 4 - 1 : 3 * h // 4 + 1, w // 4 - 1 : 3 * w // 4 + 1] = border
    labels[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = inside
    return labels


@pytest.fixture
def processed_root(tmp_path: Path) -> Path:
    tmp_path = tmp_path / "processed"
    for split, stems in (("TrainVal", ["Bengal_1", "beagle_1", "beagle_2"]), ("Test", ["pug_9"])):
        for stem in stems:
            _photo(tmp_path / split / "color" / f"{stem}.jpg", 24, 32)
            _mask(tmp_path / split / "label" / f"{stem}.png", _blob(24, 32, 1 if stem[0].isupper() else 2, 0, 255))
    return tmp_path


@pytest.fixture
def oxford_root(tmp_path: Path) -> Path:
    tmp_path = tmp_path / "oxford"
    annotations = tmp_path / "annotations"
    for stem in ("Bengal_1", "beagle_1", "mystery_1", "pug_9"):
        _photo(tmp_path / "images" / f"{stem}.jpg", 20, 30)
        (annotations / "trimaps").mkdir(parents=True, exist_ok=True)
        Image.fromarray(_blob(20, 30, 1, 2, 3), "L").save(annotations / "trimaps" / f"{stem}.png")
    (annotations / "trimaps" / "._Bengal_1.png").write_bytes(b"\x00\x05macOS metadata")
    (annotations / "list.txt").write_text(
        "#Image CLASS-ID SPECIES BREED-ID\n#ID: 1:37 Class ids\n"
        "Bengal_1 6 1 6\nbeagle_1 11 2 2\nmystery_1 40 1 13\npug_9 26 2 17\n"
    )
    (annotations / "trainval.txt").write_text("Bengal_1 6 1 6\nbeagle_1 11 2 2\nmystery_1 40 1 13\n")
    (annotations / "test.txt").write_text("pug_9 26 2 17\n")
    return tmp_path


@pytest.fixture
def folders_root(tmp_path: Path) -> Path:
    tmp_path = tmp_path / "folders"
    _photo(tmp_path / "images" / "rex.jpg", 16, 16)
    _photo(tmp_path / "images" / "tom.png", 16, 20)
    _photo(tmp_path / "images" / "unlabelled.jpg", 16, 16)
    _mask(tmp_path / "masks" / "rex.png", _blob(16, 16, 2, 0, 255))
    Image.fromarray(_blob(16, 20, 1, 0, 0), "L").save(tmp_path / "masks" / "tom.bmp")
    return tmp_path


def test_layouts_are_detected(processed_root: Path, oxford_root: Path, folders_root: Path, pets_root: Path) -> None:
    assert detect_layout(processed_root) == PROCESSED
    assert detect_layout(processed_root / "Test") == PROCESSED
    assert detect_layout(pets_root) == PROCESSED
    assert detect_layout(oxford_root) == OXFORD
    assert detect_layout(folders_root) == FOLDERS


def test_unknown_layout_names_what_was_looked_for(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    with pytest.raises(ValueError) as error:
        detect_layout(tmp_path)
    for expected in ("color", "label", "trimaps", "masks", str(tmp_path)):
        assert expected in str(error.value)
    with pytest.raises(ValueError, match="not a folder"):
        find_samples(tmp_path / "nowhere")


def test_processed_layout_samples(processed_root: Path) -> None:
    samples = find_samples(processed_root, "TrainVal")
    assert [(s.stem, s.species) for s in samples] == [("Bengal_1", "cat"), ("beagle_1", "dog"), ("beagle_2", "dog")]
    assert all(s.mask_path == processed_root / "TrainVal" / "label" / f"{s.stem}.png" for s in samples)
    assert [s.stem for s in find_samples(processed_root, "test")] == ["pug_9"]  # split names ignore case
    assert [s.stem for s in find_samples(processed_root / "Test")] == ["pug_9"]  # root is the split folder
    with pytest.raises(ValueError, match="Valid"):
        find_samples(processed_root, "Valid")
    rgb, mask = load_sample(samples[1])
    assert rgb.shape == (24, 32, 3) and set(np.unique(mask)) == {0, 2, 255}


def test_real_data_samples_match_the_index(pets_root: Path) -> None:
    samples = find_samples(pets_root, "TrainVal")
    assert len(samples) == len(list((pets_root / "TrainVal" / "color").glob("*.jpg")))
    assert all(s.mask_path is not None and s.mask_path.is_file() for s in samples)
    with open(pets_root / "index.csv", newline="") as f:
        expected = Counter(row["species"] for row in csv.DictReader(f) if row["split"] == "TrainVal")
    assert Counter(s.species for s in samples) == expected


def test_oxford_layout_uses_split_lists_species_and_trimaps(oxford_root: Path) -> None:
    train = find_samples(oxford_root, "TrainVal")
    assert {s.stem: s.species for s in train} == {"Bengal_1": "cat", "beagle_1": "dog", "mystery_1": "cat"}
    assert [s.stem for s in find_samples(oxford_root, "Test")] == ["pug_9"]
    rgb, labels = load_sample(next(s for s in train if s.stem == "beagle_1"))
    np.testing.assert_array_equal(labels, _blob(20, 30, 2, 0, 255))  # pet -> dog, background -> 0, border -> void
    np.testing.assert_array_equal(load_labels(next(s for s in train if s.stem == "beagle_1")), labels)
    _, labels = load_sample(next(s for s in train if s.stem == "mystery_1"))
    assert set(np.unique(labels)) == {0, 1, 255}  # list.txt says cat despite the lower-case name
    with pytest.raises(ValueError, match="no split list"):
        find_samples(oxford_root, "Valid")


def test_oxford_layout_without_lists_falls_back_to_names(oxford_root: Path) -> None:
    for name in ("list.txt", "trainval.txt", "test.txt"):
        (oxford_root / "annotations" / name).unlink()
    samples = find_samples(oxford_root, "TrainVal")
    assert {s.stem: s.species for s in samples} == {
        "Bengal_1": "cat", "beagle_1": "dog", "mystery_1": "dog", "pug_9": "dog"
    }


def test_folders_layout_pairs_by_stem_and_reports_missing_masks(folders_root: Path) -> None:
    samples = find_samples(folders_root)
    assert [(s.stem, s.mask_path.name if s.mask_path else None) for s in samples] == [
        ("rex", "rex.png"), ("tom", "tom.bmp"), ("unlabelled", None)
    ]
    _, mask = load_sample(samples[1])
    assert set(np.unique(mask)) == {0, 1}
    with pytest.raises(ValueError, match="unlabelled.jpg"):
        load_sample(samples[2])
    with pytest.raises(ValueError, match="unlabelled.jpg"):
        SegmentationDataset(samples, 32, NORM)
    assert len(SegmentationDataset([s for s in samples if s.mask_path], 32, NORM)) == 2


def test_bad_masks_are_refused_naming_the_files(tmp_path: Path) -> None:
    _photo(tmp_path / "cat.jpg", 20, 30)
    _mask(tmp_path / "small.png", np.zeros((20, 20)))
    with pytest.raises(ValueError, match=r"small\.png.*20x20.*cat\.jpg.*30x20"):
        load_sample(Sample("cat", tmp_path / "cat.jpg", tmp_path / "small.png", "cat"))
    _mask(tmp_path / "odd.png", np.full((20, 30), 7))
    with pytest.raises(ValueError, match=r"odd\.png.*\[7\]"):
        load_sample(Sample("cat", tmp_path / "cat.jpg", tmp_path / "odd.png", "cat"))
    with pytest.raises(ValueError, match="gone.png"):
        load_sample(Sample("cat", tmp_path / "cat.jpg", tmp_path / "gone.png", "cat"))


def test_split_is_seeded_stratified_and_order_independent(pets_root: Path) -> None:
    samples = find_samples(pets_root, "TrainVal")
    train, val = train_val_split(samples, 0.1, seed=0)
    assert not {s.stem for s in train} & {s.stem for s in val}
    assert len(train) + len(val) == len(samples)
    species = Counter(s.species for s in samples)
    assert Counter(s.species for s in val) == {k: round(n * 0.1) for k, n in species.items()}
    shuffled = [samples[i] for i in np.random.default_rng(1).permutation(len(samples))]
    assert train_val_split(shuffled, 0.1, seed=0) == (train, val)
    assert train_val_split(samples, 0.1, seed=1)[1] != val
    with pytest.raises(ValueError):
        train_val_split(samples, 1.0)


def test_dataset_items_on_real_photos(pets_root: Path) -> None:
    samples = find_samples(pets_root, "Test")[:3]
    dataset = SegmentationDataset(samples, 64, NORM)
    for index in range(len(dataset)):
        item = dataset[index]
        image, mask = item["image"], item["mask"]
        assert item["index"] == index
        assert image.shape == (3, 64, 64) and image.dtype == torch.float32
        assert mask.shape == (64, 64) and mask.dtype == torch.int64
        assert set(mask.unique().tolist()) <= {0, 1, 2, 255}
        rgb, _ = load_sample(samples[index])
        if rgb.shape[0] != rgb.shape[1]:  # letterbox padding: void in the mask, black in the photo
            padded = (mask == 255).all(dim=1) if rgb.shape[0] < rgb.shape[1] else (mask == 255).all(dim=0)
            assert padded.any()
            assert torch.allclose(image[:, 0, 0], torch.tensor([-2.0, -2.0, -2.0]))
    augmented = SegmentationDataset(samples, 64, NORM, augment=build_augmentation("strong", seed=0))[0]
    assert augmented["image"].shape == (3, 64, 64) and augmented["mask"].dtype == torch.int64


def test_cat_boost_balances_the_sampler() -> None:
    samples = [Sample(f"s{i}", Path(f"s{i}.jpg"), None, species) for i, species in enumerate(["cat", "dog", "dog"])]
    assert sample_weights(samples, 2.0) == [2.0, 1.0, 1.0]
    sampler = WeightedRandomSampler(sample_weights(samples, 2.0), 4000, generator=torch.Generator().manual_seed(0))
    cat_share = np.mean([samples[i].species == "cat" for i in sampler])
    assert abs(cat_share - 0.5) < 0.03
    with pytest.raises(ValueError):
        sample_weights(samples, 0)


def _coloured_scene(size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """Blue background, a red cat on the left, a green dog lower right: colour encodes the class."""
    mask = np.zeros((size, size), np.uint8)
    mask[10:60, 8:40] = 1
    mask[50:90, 55:88] = 2
    image = np.array([BLUE, RED, GREEN], np.uint8)[mask]
    return image, mask


CHANNEL_OF_CLASS = np.array([2, 0, 1])  # background blue, cat red, dog green


def _agreement(image: np.ndarray, mask: np.ndarray) -> float:
    """Share of labelled pixels whose dominant colour channel is their class's colour."""
    labelled = mask != 255
    return float((image.argmax(axis=2)[labelled] == CHANNEL_OF_CLASS[mask[labelled]]).mean())


def _regions_match(image: np.ndarray, mask: np.ndarray) -> bool:
    """Whether each class's pixels, averaged, are dominated by the class's colour (robust to noise)."""
    present = [c for c in (0, 1, 2) if (mask == c).any()]
    return all(image[mask == c].astype(float).mean(0).argmax() == CHANNEL_OF_CLASS[c] for c in present)


@pytest.mark.parametrize("strength", ["light", "strong"])
def test_augmentation_keeps_photo_and_mask_aligned(strength: str) -> None:
    image, mask = _coloured_scene()
    augment = build_augmentation(strength, seed=0)
    scores, voids = [], 0
    for _ in range(40):
        out_image, out_mask = augment(image, mask)
        assert out_image.shape == image.shape and out_image.dtype == np.uint8
        assert out_mask.shape == mask.shape and out_mask.dtype == np.uint8
        assert set(np.unique(out_mask)) <= {0, 1, 2, 255}  # nearest neighbour: no blended labels
        assert _regions_match(out_image, out_mask)
        scores.append(_agreement(out_image, out_mask))
        voids += int((out_mask == 255).any())
    assert np.mean(scores) > 0.93  # noise, dropout and x0.1 contrast flip a few pixels, never the layout
    assert voids > 0  # shifted/rotated borders are void, not background


def test_augmentation_is_seeded_and_none_is_identity() -> None:
    image, mask = _coloured_scene()
    first = [build_augmentation("strong", seed=3)(image, mask) for _ in range(2)]
    np.testing.assert_array_equal(first[0][0], first[1][0])
    np.testing.assert_array_equal(first[0][1], first[1][1])
    out_image, out_mask = build_augmentation("none")(image, mask)
    np.testing.assert_array_equal(out_image, image)
    np.testing.assert_array_equal(out_mask, mask)
    with pytest.raises(ValueError, match="strong"):
        build_augmentation("extreme")


class _Repeated(Dataset):
    """The same scene every time, augmented: any two items should differ."""

    def __init__(self) -> None:
        self.augment = build_augmentation("strong", seed=0)
        self.image, self.mask = _coloured_scene(32)

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.from_numpy(self.augment(self.image, self.mask)[0])


def test_dataloader_workers_do_not_repeat_each_other() -> None:
    """Worker 0 makes items 0 and 2, worker 1 items 1 and 3: with repeated seeds both pairs would be
    equal (one pair can be by chance, on a busy machine it was once: two draws that changed nothing)."""
    items = list(DataLoader(_Repeated(), batch_size=1, num_workers=2, multiprocessing_context="fork"))
    assert not (torch.equal(items[0], items[1]) and torch.equal(items[2], items[3]))


def test_strong_augmentation_is_fast() -> None:
    image = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    mask = np.zeros((256, 256), np.uint8)
    augment = build_augmentation("strong", seed=0)
    timings = []
    for _ in range(30):
        start = time.perf_counter()
        augment(image, mask)
        timings.append(time.perf_counter() - start)
    assert np.median(timings) < 0.02  # a few ms on one core; generous for a busy test machine
