"""The photos ``petseg-train fit`` trains and validates on, and how each epoch draws them.

:func:`prepare_samples` splits the labelled TrainVal photos into training and validation sets
(seeded; ``--limit`` for smoke runs) and :func:`check_samples` checks their masks up front; :func:`train_dataset` reads them augmented at model size;
:func:`loss_class_weights` gives ``--class-weights auto``'s loss
weights; :func:`train_sampler` gives each rank its share of the training photos per epoch, with
cats oversampled by ``--cat-boost`` (:class:`WeightedDistributedSampler`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.classes import SEMANTIC, VOID
from models.errors import one_line
from training.fit.config import FitConfig
from training.fit.errors import FitError
from training.fit.runtime import Runtime


@dataclass
class Data:
    """The training and validation photos (``training.data.Sample``) and a summary for the metadata."""

    train: list
    val: list
    summary: dict[str, Any]


def prepare_samples(cfg: FitConfig) -> Data:
    """The labelled TrainVal photos under ``--data``, split by ``--val-fraction`` and ``--seed``."""
    from training.data import detect_layout, find_samples, only_breed, train_val_split

    root = Path(cfg.data).expanduser()
    if not root.is_dir():
        raise FitError(f"--data {cfg.data}: no such folder")
    try:
        layout = detect_layout(root)
        samples = find_samples(root, "TrainVal")
        labelled = only_breed([s for s in samples if s.mask_path is not None], cfg.breed)
    except ValueError as error:
        raise FitError(one_line(error)) from None
    if not labelled:
        raise FitError(f"--data {cfg.data}: no labelled photos found")
    train, val = train_val_split(labelled, cfg.val_fraction, cfg.seed)
    if cfg.limit:
        rng = np.random.default_rng(cfg.seed)
        train = [train[i] for i in sorted(rng.permutation(len(train))[: cfg.limit])]
        val = [val[i] for i in sorted(rng.permutation(len(val))[: max(2, cfg.limit // 4)])]
    if not train:
        raise FitError("no training photos left after the validation split")
    if not val:
        raise FitError("no validation photos: raise --val-fraction or give more photos")

    def species(items):
        counts: dict[str, int] = {}
        for s in items:
            counts[s.species or "unknown"] = counts.get(s.species or "unknown", 0) + 1
        return dict(sorted(counts.items()))

    summary = {
        "data_root": str(root.resolve()),
        "layout": layout,
        "split": "TrainVal",
        "train_images": len(train),
        "val_images": len(val),
        "val_fraction": cfg.val_fraction,
        "split_seed": cfg.seed,
        "limit": cfg.limit,
        "breed": cfg.breed,
        "source_folder": cfg.source_folder,
        "species": {"train": species(train), "val": species(val)},
        "unlabelled_skipped": sum(1 for s in samples if s.mask_path is None),
    }
    return Data(train, val, summary)


def check_samples(data: Data, progress: bool) -> None:
    """FitError naming the first training or validation photo whose mask :func:`training.data.load_sample`
    would refuse (unreadable, values that are not labels, not the photo's size), before any training.

    Only the masks are decoded (the photos' sizes come from their headers); with ``progress`` a bar
    shows when this takes more than a few seconds.
    """
    from tqdm import tqdm

    from training.data import check_sample

    labelled = [("training", s) for s in data.train] + [("validation", s) for s in data.val]
    for kind, sample in tqdm(labelled, desc="checking masks", delay=3, disable=not progress, leave=False):
        try:
            check_sample(sample)
        except ValueError as error:  # ImageLoadError included
            raise FitError(f"{kind} data: {one_line(error)} ({sample.mask_path.parent})") from None


def train_dataset(cfg: FitConfig, data: Data,
                  normalization: dict[str, list[float]]) -> tuple[Any, torch.utils.data.Dataset]:
    """The ``--augment`` pipeline (None for ``none``) and the training photos at ``--size`` px through
    it (after ``--copy-paste``'s, when asked for)."""
    from training.data import SegmentationDataset

    augment = paste = None
    if cfg.augment != "none":
        from training.augment import build_augmentation

        augment = build_augmentation(cfg.augment, seed=cfg.seed)
    if cfg.copy_paste > 0:
        from training.copy_paste import CopyPaste

        paste = CopyPaste(data.train, cfg.copy_paste)
    return augment, SegmentationDataset(data.train, cfg.size, normalization, augment=augment, paste=paste)


def pixel_class_counts(samples: Sequence[Any]) -> list[int]:
    """Labelled pixels per class (background, cat, dog) over the samples' masks; void not counted."""
    from training.data import load_labels

    counts = np.zeros(3, dtype=np.int64)
    for s in samples:
        mask = load_labels(s)
        counts += np.bincount(mask[mask != VOID].ravel(), minlength=3)[:3]
    return counts.tolist()


def loss_class_weights(cfg: FitConfig, task: str, data: Data, rt: Runtime,
                       resume_header: dict[str, Any] | None) -> list[float] | None:
    """``--class-weights auto``: the saved run's weights, or new ones from the training masks."""
    from training.losses import class_weights_from_counts

    if task != SEMANTIC or cfg.class_weights != "auto":
        return None
    if resume_header is not None and resume_header.get("class_weights"):
        weights = resume_header["class_weights"]
    else:
        weights = class_weights_from_counts(pixel_class_counts(data.train))
    rt.log(f"class weights (background, cat, dog): {[round(w, 3) for w in weights]}")
    return weights


class WeightedDistributedSampler(torch.utils.data.Sampler):
    """Weighted sampling with replacement, one seeded draw per epoch, split across ranks."""

    def __init__(self, weights: Sequence[float], num_replicas: int, rank: int, seed: int) -> None:
        self.weights = torch.as_tensor(weights, dtype=torch.double)
        self.num_replicas, self.rank, self.seed = num_replicas, rank, seed
        self.num_samples = math.ceil(len(self.weights) / num_replicas)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        total = self.num_samples * self.num_replicas
        indices = torch.multinomial(self.weights, total, replacement=True, generator=g).tolist()
        return iter(indices[self.rank :: self.num_replicas])

    def __len__(self) -> int:
        return self.num_samples


def train_sampler(cfg: FitConfig, rt: Runtime, data: Data,
                  train_ds: torch.utils.data.Dataset) -> torch.utils.data.Sampler:
    """This rank's share of the training photos each epoch (cats oversampled with --cat-boost)."""
    from training.data import sample_weights

    if cfg.cat_boost != 1.0:
        return WeightedDistributedSampler(sample_weights(data.train, cfg.cat_boost), rt.world, rt.rank, cfg.seed)
    return torch.utils.data.DistributedSampler(
        train_ds, num_replicas=rt.world, rank=rt.rank, shuffle=True, seed=cfg.seed, drop_last=False
    )
