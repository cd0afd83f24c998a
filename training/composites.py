"""Several pets in one photo: deterministic composites made by pasting other photos' pets beside a base pet.

A composite keeps a base photo with its own pet and background; the pets of 1-2 other photos are
cut out by their sure-pet pixels (labels 1/2, never the void border), scaled to about the base
pet's size and pasted beside it with little overlap. Every random choice (partners, sizes,
positions) comes from an RNG keyed by the photo names (:func:`keyed_rng`), so the same inputs give
identical arrays. Along each pasted pet's seam a thin band is void (255): hard cut edges are not
judged.

The result is an *instance* map: 0 background, ``k`` = pet ``k`` (1 the base pet, 2.. the pasted
ones, later pets drawn on top of earlier ones), 255 void. :func:`instance_target` turns it into the
click protocol's binary target for one pet, the other pets being background.

:func:`compose` works on arrays and is what a copy-paste augmentation can reuse;
:func:`split_composites` builds the benchmark's composites from a data split.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import cv2
import numpy as np

from models.classes import CAT, DOG, VOID
from training.data import Sample, load_sample

SEAM_WIDTH = 2  # void pixels on each side of a pasted pet's edge
MAX_OVERLAP = 0.05  # largest share of a pasted pet allowed over pets (or void) already there
SIZE_JITTER = (0.85, 1.15)  # pasted pet's linear size relative to the base pet's
CANDIDATES = 64  # random positions tried per scale
SCALE_STEP = 0.8  # shrink factor when no position fits
SCALE_TRIES = 8


@dataclass
class Composite:
    """One composite photo: ``rgb`` HxWx3 uint8, ``instances`` HxW uint8 (0 bg, k pet k, 255 void).

    ``stems[k - 1]`` and ``classes[k - 1]`` (1 cat, 2 dog) are pet ``k``'s source photo and class;
    ``scales`` and ``overlaps`` the pasted pets' scale factors and overlap shares (1.0 / 0.0 for the base).
    """

    name: str
    rgb: np.ndarray
    instances: np.ndarray
    stems: list[str]
    classes: list[int]
    scales: list[float] = field(default_factory=list)
    overlaps: list[float] = field(default_factory=list)

    @property
    def pets(self) -> int:
        return len(self.stems)


@dataclass
class Cutout:
    """A pet cut out of its photo: ``rgb`` crop, ``alpha`` (sure-pet pixels) and its class."""

    rgb: np.ndarray
    alpha: np.ndarray
    label: int


def keyed_rng(*names: str, seed: int = 0) -> np.random.Generator:
    """An RNG that depends only on ``seed`` and the ``names`` (e.g. photo stems), not on run order."""
    digest = hashlib.sha256("\n".join([str(seed), *names]).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def pet_label(labels: np.ndarray) -> int:
    """The photo's pet class (1 cat, 2 dog): the more frequent of the two."""
    return CAT if np.count_nonzero(labels == CAT) >= np.count_nonzero(labels == DOG) else DOG


def cut_out(rgb: np.ndarray, labels: np.ndarray) -> Cutout | None:
    """The photo's sure-pet pixels (labels 1/2, void excluded), cropped to their box; None without any."""
    alpha = (labels == CAT) | (labels == DOG)
    ys, xs = np.nonzero(alpha)
    if xs.size == 0:
        return None
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    return Cutout(rgb[y0:y1, x0:x1].copy(), alpha[y0:y1, x0:x1].copy(), pet_label(labels))


def _scaled(cut: Cutout, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """``cut``'s rgb and alpha resized by ``scale`` (at least 1x1)."""
    h, w = cut.alpha.shape
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    rgb = cv2.resize(cut.rgb, size, interpolation=interpolation)
    alpha = cv2.resize(cut.alpha.astype(np.float32), size, interpolation=cv2.INTER_LINEAR) > 0.5
    return rgb, alpha


def _place(alpha: np.ndarray, occupied: np.ndarray, anchor: tuple[float, float], rng: np.random.Generator,
           max_overlap: float) -> tuple[tuple[int, int] | None, float, tuple[int, int]]:
    """Pick a top-left corner for ``alpha`` in an image whose taken pixels are ``occupied``.

    Returns ``(corner or None, overlap share, best corner)``: the corner is the acceptable one
    (overlap <= ``max_overlap``) whose centre is nearest ``anchor`` (x, y), None when none is.
    """
    (h, w), (height, width) = alpha.shape, occupied.shape
    area = max(1, int(np.count_nonzero(alpha)))
    ys = rng.integers(0, height - h + 1, CANDIDATES)
    xs = rng.integers(0, width - w + 1, CANDIDATES)
    overlaps = np.array([np.count_nonzero(occupied[y:y + h, x:x + w] & alpha) / area for y, x in zip(ys, xs)])
    distance = np.hypot(xs + w / 2 - anchor[0], ys + h / 2 - anchor[1])
    best = int(np.argmin(overlaps))
    ok = np.flatnonzero(overlaps <= max_overlap)
    if ok.size == 0:
        return None, float(overlaps[best]), (int(ys[best]), int(xs[best]))
    pick = int(ok[np.argmin(distance[ok])])
    return (int(ys[pick]), int(xs[pick])), float(overlaps[pick]), (int(ys[pick]), int(xs[pick]))


def _seam(alpha: np.ndarray, width: int) -> np.ndarray:
    """The band of ``width`` pixels on each side of ``alpha``'s edge."""
    kernel = np.ones((2 * width + 1, 2 * width + 1), np.uint8)
    mask = alpha.astype(np.uint8)
    return cv2.dilate(mask, kernel).astype(bool) & ~cv2.erode(mask, kernel).astype(bool)


def compose(base_rgb: np.ndarray, base_labels: np.ndarray, cutouts: Sequence[Cutout], rng: np.random.Generator,
            seam: int = SEAM_WIDTH, max_overlap: float = MAX_OVERLAP) -> tuple[np.ndarray, np.ndarray, list[float],
                                                                               list[float]]:
    """Paste ``cutouts`` beside the base photo's pet; returns ``(rgb, instances, scales, overlaps)``.

    Each cutout is scaled so its pet area is about the base pet's (times a jittered factor,
    shrunk to fit the photo), then placed at the position, among random candidates, nearest the
    base pet with at most ``max_overlap`` of it over pets or void already there; with no such
    position it shrinks by :data:`SCALE_STEP` and tries again, and after :data:`SCALE_TRIES`
    shrinks it takes the least-overlapping position. ``instances``: 0 background, 1 the base pet,
    ``k + 2`` cutout ``k``, 255 void (the base's own void and each pasted pet's seam).
    """
    rgb = base_rgb.copy()
    instances = np.where((base_labels == CAT) | (base_labels == DOG), 1, 0).astype(np.uint8)
    instances[base_labels == VOID] = VOID
    height, width = instances.shape
    base_area = max(1, int(np.count_nonzero(instances == 1)))
    ys, xs = np.nonzero(instances == 1)
    anchor = (float(xs.mean()), float(ys.mean())) if xs.size else (width / 2, height / 2)
    scales, overlaps = [1.0], [0.0]
    for k, cut in enumerate(cutouts, start=2):
        h, w = cut.alpha.shape
        scale = np.sqrt(base_area / max(1, np.count_nonzero(cut.alpha))) * rng.uniform(*SIZE_JITTER)
        scale = min(scale, 0.95 * height / h, 0.95 * width / w)
        for attempt in range(SCALE_TRIES + 1):
            pet_rgb, alpha = _scaled(cut, scale)
            corner, overlap, best = _place(alpha, instances != 0, anchor, rng, max_overlap)
            if corner is not None:
                break
            if attempt < SCALE_TRIES:
                scale *= SCALE_STEP
        y, x = corner or best
        ph, pw = alpha.shape
        region = (slice(y, y + ph), slice(x, x + pw))
        rgb[region][alpha] = pet_rgb[alpha]
        instances[region][alpha] = k
        full = np.zeros_like(alpha, shape=instances.shape)
        full[region] = alpha
        instances[_seam(full, seam)] = VOID
        scales.append(float(scale))
        overlaps.append(overlap)
    return rgb, instances, scales, overlaps


def instance_target(instances: np.ndarray, k: int) -> np.ndarray:
    """The click protocol's target for pet ``k``: 1 pet ``k``, 0 background and the other pets, 255 void."""
    target = (instances == k).astype(np.uint8)
    target[instances == VOID] = VOID
    return target


def make_composite(base: Sample, partners: Sequence[Sample], seed: int = 0) -> Composite:
    """The composite of ``base`` with the pets of ``partners`` pasted beside its pet (see :func:`compose`)."""
    rgb, labels = load_sample(base)
    cutouts, stems = [], [base.stem]
    for partner in partners:
        cut = cut_out(*load_sample(partner))
        if cut is not None:
            cutouts.append(cut)
            stems.append(partner.stem)
    rng = keyed_rng(*stems, seed=seed)
    out_rgb, instances, scales, overlaps = compose(rgb, labels, cutouts, rng)
    return Composite("+".join(stems), out_rgb, instances, stems, [pet_label(labels)] + [c.label for c in cutouts],
                     scales, overlaps)


def choose_partners(base: Sample, pool: Sequence[Sample], count: int, seed: int = 0) -> list[Sample]:
    """``count`` distinct photos of ``pool`` other than ``base``, chosen by an RNG keyed by ``base.stem``."""
    others = sorted((s for s in pool if s.stem != base.stem), key=lambda s: s.stem)
    picks = keyed_rng(base.stem, seed=seed).choice(len(others), size=min(count, len(others)), replace=False)
    return [others[int(i)] for i in picks]


def split_composites(bases: Sequence[Sample], pool: Sequence[Sample], pets: int = 2,
                     seed: int = 0) -> Iterator[Composite]:
    """A composite of ``pets`` pets for each base photo, partners drawn from ``pool`` (e.g. the whole split)."""
    if pets < 1:
        raise ValueError(f"a composite needs at least one pet, got {pets}")
    for base in bases:
        yield make_composite(base, choose_partners(base, pool, pets - 1, seed), seed)
