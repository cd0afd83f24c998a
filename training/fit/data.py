"""The photos ``petseg-train fit`` trains and validates on, and how each epoch draws them.

:func:`prepare_samples` splits the labelled TrainVal photos into training and validation sets
(seeded; ``--limit`` for smoke runs) and :func:`check_samples` checks their masks up front; :func:`train_dataset` reads them augmented at model size;
:func:`loss_class_weights` gives ``--class-weights auto``'s loss
weights; :func:`train_sampler` gives each rank its share of the training photos per epoch, with
cats oversampled by ``--cat-boost`` and ``--replay``'s photos mixed in (:class:`WeightedDistributedSampler`).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.classes import CLASS_NAMES, SEMANTIC, VOID
from models.errors import one_line
from training.fit.config import REPLAY_VAL_PHOTOS, FitConfig
from training.fit.errors import FitError
from training.fit.runtime import Runtime


@dataclass
class Data:
    """The training and validation photos (``training.data.Sample``) and a summary for the metadata;
    ``replay``: ``--replay``'s photos, drawn into every epoch beside ``train``; ``replay_val``: more
    of them kept aside, on which no epoch may fall far below the starting model (forgetting)."""

    train: list
    val: list
    summary: dict[str, Any]
    replay: list = field(default_factory=list)
    replay_val: list = field(default_factory=list)


def prepare_samples(cfg: FitConfig) -> Data:
    """The labelled TrainVal photos under ``--data``, split by ``--val-fraction`` and ``--seed``; with
    ``--replay``, that folder's other TrainVal photos, :data:`REPLAY_VAL_PHOTOS` of them kept aside."""
    from training.data import detect_layout, find_samples, only_breed, train_val_split

    root = Path(cfg.data).expanduser()
    if not root.is_dir():
        raise FitError(f"--data {cfg.data}: no such folder")
    try:
        layout = detect_layout(root)
        samples = find_samples(root, "TrainVal")
        labelled = only_breed([s for s in samples if s.mask_path is not None], cfg.breed)
        replay = _replay_samples(cfg, {s.stem for s in labelled}) if cfg.replay else []
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
    replay_train, replay_val = ([], []) if not replay else train_val_split(
        replay, REPLAY_VAL_PHOTOS / len(replay), cfg.seed)
    if replay:
        summary["replay"] = {"root": str(Path(cfg.replay).expanduser().resolve()), "photos": len(replay_train),
                             "val_photos": len(replay_val), "ratio": cfg.replay_ratio}
    return Data(train, val, summary, replay_train, replay_val)


def _replay_samples(cfg: FitConfig, taken: set[str]) -> list:
    """``--replay``'s labelled TrainVal photos, less those of ``taken`` (``--data``'s) and of ``--breed``."""
    from training.data import breed_of, find_samples

    labelled = [s for s in find_samples(Path(cfg.replay).expanduser(), "TrainVal") if s.mask_path is not None]
    pool = [s for s in labelled if s.stem not in taken
            and (cfg.breed is None or breed_of(s.stem).lower() != cfg.breed.lower())]
    if len(pool) < 2 * REPLAY_VAL_PHOTOS:
        left_out = len(labelled) - len(pool)
        why = f" ({left_out} more are the photos trained on or --breed's)" if left_out else ""
        raise ValueError(f"--replay {cfg.replay}: {len(pool)} labelled photos to replay{why}; "
                         f"at least {2 * REPLAY_VAL_PHOTOS} are needed")
    return pool


def check_samples(data: Data, progress: bool) -> None:
    """FitError naming the first training or validation photo whose mask :func:`training.data.load_sample`
    would refuse (unreadable, values that are not labels, not the photo's size), before any training.

    Only the masks are decoded (the photos' sizes come from their headers); with ``progress`` a bar
    shows when this takes more than a few seconds.
    """
    from tqdm import tqdm

    from training.data import check_sample

    labelled = ([("training", s) for s in data.train + data.replay]
                + [("validation", s) for s in data.val + data.replay_val])
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
    return augment, SegmentationDataset(data.train + data.replay, cfg.size, normalization, augment=augment,
                                        paste=paste)


def replay_weights(own: Sequence[Any], replay: Sequence[Any], ratio: float, cat_boost: float) -> list[float]:
    """Sampling weights of ``own + replay`` for an epoch of ``ratio`` replayed photos per own photo,
    in which cats and dogs come in the replayed data's own proportions (cats weighed ``cat_boost``).

    A user's folder is mostly of one species; replayed at random beside it, the epoch would be too,
    and the model would learn that every pet is that species. So the replayed photos make up the
    difference: for a folder of dogs they are mostly cats. Own photos are drawn uniformly.
    """
    from training.data import sample_weights

    species = [s.species or "unknown" for s in replay]
    members = Counter(species)
    boosted: Counter[str] = Counter()
    for group, weight in zip(species, sample_weights(replay, cat_boost)):
        boosted[group] += weight
    own_counts = Counter(_own_species(s) for s in own)  # each mask read once
    total = sum(boosted.values())
    need = {g: max(0.0, boosted[g] / total * (1 + ratio) * len(own) - own_counts[g]) for g in members}
    scale = ratio * len(own) / (sum(need.values()) or 1.0)
    return [1.0] * len(own) + [need[g] * scale / members[g] for g in species]


def _own_species(sample: Any) -> str:
    """A photo's species from its mask (the more frequent pet class): a user's file names say nothing."""
    from training.composites import pet_label
    from training.data import load_labels

    return CLASS_NAMES[pet_label(load_labels(sample))]


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
        weights = class_weights_from_counts(pixel_class_counts(data.train + data.replay))
    rt.log(f"class weights (background, cat, dog): {[round(w, 3) for w in weights]}")
    return weights


class WeightedDistributedSampler(torch.utils.data.Sampler):
    """Weighted sampling with replacement, one seeded draw of ``draws`` items (default: as many as
    there are weights) per epoch, split across ranks."""

    def __init__(self, weights: Sequence[float], num_replicas: int, rank: int, seed: int,
                 draws: int | None = None) -> None:
        self.weights = torch.as_tensor(weights, dtype=torch.double)
        self.num_replicas, self.rank, self.seed = num_replicas, rank, seed
        self.num_samples = math.ceil((draws or len(self.weights)) / num_replicas)
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
    """This rank's share of the training photos each epoch (cats oversampled with --cat-boost).

    With ``--replay`` an epoch draws ``--replay-ratio`` replayed photos per training photo beside
    them, fresh ones each epoch (:func:`replay_weights`).
    """
    from training.data import sample_weights

    if data.replay:
        weights = replay_weights(data.train, data.replay, cfg.replay_ratio, cfg.cat_boost)
        draws = round(len(data.train) * (1 + cfg.replay_ratio))
        return WeightedDistributedSampler(weights, rt.world, rt.rank, cfg.seed, draws)
    if cfg.cat_boost != 1.0:
        return WeightedDistributedSampler(sample_weights(data.train, cfg.cat_boost), rt.world, rt.rank, cfg.seed)
    return torch.utils.data.DistributedSampler(
        train_ds, num_replicas=rt.world, rank=rt.rank, shuffle=True, seed=cfg.seed, drop_last=False
    )
