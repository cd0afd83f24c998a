"""Finding labelled pet photos on disk, splitting them, and serving them to a model.

Three layouts are recognised (:func:`detect_layout`):

- ``"processed"``: ``<root>/<split>/color/*.jpg`` with ``<root>/<split>/label/*.png`` (0 background,
  1 cat, 2 dog, 255 void); ``root`` may also be the split folder itself.
- ``"oxford"``: the original Oxford-IIIT Pet release, ``<root>/images/*.jpg`` with trimaps in
  ``<root>/annotations/trimaps/*.png`` (1 pet, 2 background, 3 border); the pet's species comes
  from ``annotations/list.txt`` or, without it, from the file name (capital first letter: cat).
  ``annotations/trainval.txt`` and ``test.txt`` choose the ``"TrainVal"`` / ``"Test"`` split
  (asking for a split without its list, when the other list exists, is an error).
- ``"folders"``: ``<root>/images/*`` with ``<root>/masks/*`` paired by file stem (a mask may also
  be called ``<stem>_mask.png``, as petseg-export names them).
- ``"annotated"``: a folder annotated in the app: photos with ``<stem>_mask.png`` (class indices)
  beside them; photos without a mask are not labelled, ``*_mask_colour.png`` previews are skipped.

Layouts without split lists hold one set of samples, returned for any ``split``.
Images without a mask are kept, with ``mask_path=None``: an annotator may want them, and
:class:`SegmentationDataset` refuses them up front, naming them, rather than dropping them
silently; filter with ``[s for s in samples if s.mask_path]`` to train on the rest.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from models.classes import BACKGROUND, CAT, CLASS_NAMES, DOG, VOID
from models.geometry import letterbox, to_model_tensor
from models.formats.core import photo_size
from models.images import IMAGE_SUFFIXES, load_mask, load_rgb

CLASS_INDEX = {CLASS_NAMES[CAT]: CAT, CLASS_NAMES[DOG]: DOG}
LABEL_VALUES = (BACKGROUND, CAT, DOG, VOID)
PROCESSED, OXFORD, FOLDERS, ANNOTATED = "processed", "oxford", "folders", "annotated"
MASK_SUFFIX, COLOUR_SUFFIX = "_mask", "_mask_colour"  # the app's mask files: <stem>_mask.png
OXFORD_SPLIT_FILES = {"trainval": "trainval.txt", "test": "test.txt"}
# cv2's INTER_NEAREST samples half a pixel off the centres INTER_LINEAR uses; the exact
# variant keeps resized masks aligned with the resized photos.
MASK_INTERPOLATION = cv2.INTER_NEAREST_EXACT

log = logging.getLogger(__name__)

Augment = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Sample:
    """One photo and its mask. ``species`` is "cat", "dog" or None (unknown).

    ``mask_format`` is "labels" (class indices) or "trimap" (Oxford trimap, turned into class
    indices with ``species`` by :func:`load_sample`); ``mask_path`` is None when no mask exists.
    """

    stem: str
    image_path: Path
    mask_path: Path | None
    species: str | None
    mask_format: str = "labels"


def _species_from_name(stem: str) -> str:
    """Oxford-IIIT Pet naming: cat breeds are capitalised (``Abyssinian_1``), dog breeds not."""
    return "cat" if stem[:1].isupper() else "dog"


def _images_in(folder: Path) -> dict[str, Path]:
    """Image files in ``folder`` by stem, skipping hidden files (e.g. macOS ``._`` copies)."""
    if not folder.is_dir():
        return {}
    files = (p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    return {p.stem: p for p in sorted(files)}


def _child_dir(parent: Path, name: str) -> Path | None:
    """The sub-folder of ``parent`` called ``name``, ignoring case."""
    exact = parent / name
    if exact.is_dir():
        return exact
    matches = [p for p in parent.iterdir() if p.is_dir() and p.name.lower() == name.lower()]
    return matches[0] if matches else None


def _is_processed_split(folder: Path) -> bool:
    return (folder / "color").is_dir() and (folder / "label").is_dir()


def detect_layout(root: str | Path) -> str:
    """Which data layout ``root`` holds: "processed", "oxford" or "folders"."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root}: not a folder")
    if _is_processed_split(root) or any(p.is_dir() and _is_processed_split(p) for p in root.iterdir()):
        return PROCESSED
    if (root / "images").is_dir() and (root / "annotations" / "trimaps").is_dir():
        return OXFORD
    if (root / "images").is_dir() and (root / "masks").is_dir():
        return FOLDERS
    if any(s.mask_path for s in _annotated_samples(root)):
        return ANNOTATED
    raise ValueError(
        f"{root}: no pet data found; looked for <split>/color + <split>/label (processed), "
        f"images + annotations/trimaps (Oxford-IIIT Pet release), images + masks, and photos "
        f"with <name>_mask.png beside them (a folder annotated in PetSeg)"
    )


def _processed_samples(root: Path, split: str) -> list[Sample]:
    if _is_processed_split(root):
        folder = root
    else:
        folder = _child_dir(root, split)
        if folder is None or not _is_processed_split(folder):
            found = sorted(p.name for p in root.iterdir() if p.is_dir() and _is_processed_split(p))
            raise ValueError(f"{root}: no split {split!r} (found {', '.join(found)})")
    masks = _images_in(folder / "label")
    return [
        Sample(stem, path, masks.get(stem), _species_from_name(stem))
        for stem, path in _images_in(folder / "color").items()
    ]


def _read_oxford_list(path: Path) -> dict[str, str]:
    """Species by stem from an Oxford list file (``Image CLASS-ID SPECIES BREED-ID``; 1 cat, 2 dog)."""
    species = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        fields = line.split()
        if len(fields) >= 3 and not line.startswith("#"):
            species[fields[0]] = "cat" if fields[2] == "1" else "dog"
    return species


def _oxford_samples(root: Path, split: str) -> list[Sample]:
    annotations = root / "annotations"
    images = _images_in(root / "images")
    trimaps = _images_in(annotations / "trimaps")
    list_file = annotations / "list.txt"
    species = _read_oxford_list(list_file) if list_file.is_file() else {}
    split_file = annotations / OXFORD_SPLIT_FILES.get(split.lower(), f"{split}.txt")
    stems = list(images)
    if not split_file.is_file() and any((annotations / name).is_file() for name in OXFORD_SPLIT_FILES.values()):
        raise ValueError(f"{root}: no split list {split_file.name} for split {split!r}")
    if split_file.is_file():
        listed = _read_oxford_list(split_file)
        absent = [stem for stem in listed if stem not in images]
        if absent:
            log.warning("%s lists %d images not in %s (e.g. %s)", split_file, len(absent), root / "images", absent[0])
        stems = [stem for stem in listed if stem in images]
        species = {**listed, **species}
    return [
        Sample(stem, images[stem], trimaps.get(stem), species.get(stem) or _species_from_name(stem), "trimap")
        for stem in sorted(stems)
    ]


def _folder_samples(root: Path) -> list[Sample]:
    masks = {stem.removesuffix(MASK_SUFFIX): path for stem, path in _images_in(root / "masks").items()}
    return [Sample(stem, path, masks.get(stem), None) for stem, path in _images_in(root / "images").items()]


def _annotated_samples(root: Path) -> list[Sample]:
    files = _images_in(root)
    photos = {stem: path for stem, path in files.items() if not stem.endswith((MASK_SUFFIX, COLOUR_SUFFIX))}
    masks = {stem.removesuffix(MASK_SUFFIX): path for stem, path in files.items()
             if stem.endswith(MASK_SUFFIX) and path.suffix.lower() == ".png"}
    return [Sample(stem, path, masks.get(stem), None) for stem, path in photos.items()]


def breed_of(stem: str) -> str:
    """The Oxford-IIIT Pet breed in a photo's name (``Bengal_12`` -> ``Bengal``)."""
    return stem.rsplit("_", 1)[0]


def only_breed(samples: Sequence[Sample], breed: str | None) -> list[Sample]:
    """The samples of ``breed`` (all of them for None); ValueError naming the breeds present when none is."""
    if breed is None:
        return list(samples)
    picked = [s for s in samples if breed_of(s.stem).lower() == breed.lower()]
    if not picked:
        present = sorted({breed_of(s.stem) for s in samples})
        raise ValueError(f"no photos of breed {breed!r} (there are: {', '.join(present[:40])})")
    return picked


def find_samples(root: str | Path, split: str = "TrainVal") -> list[Sample]:
    """All photos of ``split`` under ``root``, sorted by stem (see the module docstring)."""
    root = Path(root)
    layout = detect_layout(root)
    if layout == PROCESSED:
        return _processed_samples(root, split)
    if layout == OXFORD:
        return _oxford_samples(root, split)
    if layout == ANNOTATED:
        return _annotated_samples(root)
    return _folder_samples(root)


def train_val_split(
    samples: Sequence[Sample], val_fraction: float = 0.1, seed: int = 0
) -> tuple[list[Sample], list[Sample]]:
    """Split into (train, val), stratified by species, the same for the same samples and seed.

    Each species contributes ``round(count * val_fraction)`` samples to val; both lists are
    sorted by stem, and the result does not depend on the order of ``samples``.
    """
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    ordered = sorted(samples, key=lambda s: (s.stem, str(s.image_path)))
    val_ids: set[int] = set()
    for species in sorted({s.species or "" for s in ordered}):
        group = [i for i, s in enumerate(ordered) if (s.species or "") == species]
        picked = rng.permutation(len(group))[: round(len(group) * val_fraction)]
        val_ids.update(group[j] for j in picked)
    train = [s for i, s in enumerate(ordered) if i not in val_ids]
    val = [s for i, s in enumerate(ordered) if i in val_ids]
    return train, val


def _trimap_to_labels(trimap: np.ndarray, sample: Sample) -> np.ndarray:
    """Oxford trimap (1 pet, 2 background, 3 border) to labels (pet -> 1 cat / 2 dog, border -> void)."""
    if sample.species not in CLASS_INDEX:
        raise ValueError(f"{sample.image_path.name}: unknown species, cannot label the trimap")
    labels = np.full(trimap.shape, VOID, dtype=np.uint8)
    labels[trimap == 1] = CLASS_INDEX[sample.species]
    labels[trimap == 2] = 0
    return labels


def load_labels(sample: Sample) -> np.ndarray:
    """Read the sample's mask as labels (0 bg, 1 cat, 2 dog, 255 void), converting Oxford trimaps.

    Raises ValueError naming the file when the mask is missing or holds values that are not labels.
    """
    if sample.mask_path is None:
        raise ValueError(f"{sample.image_path.name}: no mask found for this image")
    mask = load_mask(sample.mask_path)
    if sample.mask_format == "trimap":
        return _trimap_to_labels(mask, sample)
    bad = np.setdiff1d(np.unique(mask), LABEL_VALUES)
    if bad.size:
        raise ValueError(f"{sample.mask_path.name}: mask values {bad.tolist()[:5]} are not labels (0, 1, 2, 255)")
    return mask


def load_sample(sample: Sample) -> tuple[np.ndarray, np.ndarray]:
    """Read ``(rgb HxWx3 uint8, mask HxW uint8)``; mask values are 0 bg, 1 cat, 2 dog, 255 void.

    Raises ValueError (ImageLoadError for unreadable files) naming the file when the mask is
    missing, unreadable, of another size than the photo, or holds values that are not labels.
    """
    mask = load_labels(sample)
    rgb = load_rgb(sample.image_path)
    _check_same_size(sample, mask, rgb.shape[1], rgb.shape[0])
    return rgb, mask


def check_sample(sample: Sample) -> None:
    """What :func:`load_sample` would refuse, without decoding the photo (its header gives its size).

    Raises ValueError naming the file; the mask, small, is decoded.
    """
    mask = load_labels(sample)
    height, width = photo_size(sample.image_path)
    _check_same_size(sample, mask, width, height)


def _check_same_size(sample: Sample, mask: np.ndarray, width: int, height: int) -> None:
    if mask.shape != (height, width):
        raise ValueError(
            f"{sample.mask_path.name}: mask is {mask.shape[1]}x{mask.shape[0]} but "
            f"{sample.image_path.name} is {width}x{height}"
        )


class SegmentationDataset(Dataset):
    """Letterboxed, optionally augmented, normalised samples for semantic segmentation.

    Items are ``{"image": 3xSxS float32, "mask": SxS int64 (padding 255), "index": int}``; the
    photo is resized with INTER_LINEAR and padded with 0, the mask with nearest-neighbour and
    padded with VOID, then ``paste(image, mask)`` (copy-paste, :mod:`training.copy_paste`) and
    ``augment(image, mask)`` run at model size before normalisation.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        size: int,
        normalization: dict[str, list[float]],
        augment: Augment | None = None,
        paste: Augment | None = None,
    ) -> None:
        unlabelled = [s.image_path.name for s in samples if s.mask_path is None]
        if unlabelled:
            raise ValueError(f"{len(unlabelled)} images have no mask (e.g. {', '.join(unlabelled[:3])})")
        self.samples = list(samples)
        self.size = size
        self.normalization = normalization
        self.augment = augment
        self.paste = paste

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        return model_item(*load_sample(self.samples[index]), index, self.size, self.normalization,
                          self.paste, self.augment)


class ArrayDataset(Dataset):
    """:class:`SegmentationDataset`'s items (no augmentation) from photos and label masks in memory."""

    def __init__(self, pairs: Sequence[tuple[np.ndarray, np.ndarray]], size: int,
                 normalization: dict[str, list[float]]) -> None:
        self.pairs = list(pairs)
        self.size = size
        self.normalization = normalization

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        return model_item(*self.pairs[index], index, self.size, self.normalization)


def model_item(rgb: np.ndarray, mask: np.ndarray, index: int, size: int, normalization: dict[str, list[float]],
               paste: Augment | None = None, augment: Augment | None = None) -> dict[str, torch.Tensor | int]:
    """A photo and its labels letterboxed to ``size``, through ``paste`` and ``augment``, normalised."""
    image, _ = letterbox(rgb, size, cv2.INTER_LINEAR, 0)
    mask, _ = letterbox(mask, size, MASK_INTERPOLATION, VOID)
    if paste is not None:
        image, mask = paste(image, mask)
    if augment is not None:
        image, mask = augment(image, mask)
    return {
        "image": to_model_tensor(image, normalization)[0],
        "mask": torch.from_numpy(mask.astype(np.int64)),
        "index": index,
    }


def sample_weights(samples: Sequence[Sample], cat_boost: float) -> list[float]:
    """Per-sample weights for WeightedRandomSampler: cats weigh ``cat_boost``, others 1.

    With the 2:1 dog skew of Oxford-IIIT Pet, ``cat_boost=2`` draws cats and dogs about equally.
    """
    if cat_boost <= 0:
        raise ValueError(f"cat_boost must be positive, got {cat_boost}")
    return [cat_boost if s.species == "cat" else 1.0 for s in samples]
