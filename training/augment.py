"""Training-time augmentation at model size (albumentations 2.x).

Geometric transforms move the mask with the photo (nearest-neighbour, uncovered mask pixels
become void 255, uncovered photo pixels black). Photometric transforms (colour, contrast down to
x0.1, brightness +-45/255, blur, Gaussian and salt-and-pepper noise) touch the photo only.
Coarse dropout paints black squares on the photo and keeps the mask: a pet partly hidden is
still that pet, which is what the robustness study's occlusion test expects.
"""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np
from torch.utils.data import get_worker_info

from models.classes import VOID

STRENGTHS = ("none", "light", "strong")

_GEOMETRY = {"interpolation": cv2.INTER_LINEAR, "mask_interpolation": cv2.INTER_NEAREST}
_BORDER = {"border_mode": cv2.BORDER_CONSTANT, "fill": 0, "fill_mask": VOID}


def _light() -> list[A.BasicTransform]:
    return [
        A.HorizontalFlip(p=0.5),
        A.Affine(scale=(0.9, 1.1), translate_percent=(-0.05, 0.05), rotate=(-10, 10), p=0.5, **_GEOMETRY, **_BORDER),
        A.ColorJitter(brightness=0, contrast=(0.8, 1.2), saturation=(0.8, 1.2), hue=(-0.02, 0.02), p=0.5),
        A.RandomBrightnessContrast(brightness_limit=20 / 255, contrast_limit=0, p=0.3),
    ]


def _strong() -> list[A.BasicTransform]:
    return [
        A.HorizontalFlip(p=0.5),
        A.Affine(
            scale=(0.7, 1.3), translate_percent=(-0.12, 0.12), rotate=(-25, 25), shear=(-8, 8), p=0.7,
            **_GEOMETRY, **_BORDER,
        ),
        A.OneOf(
            [
                A.ElasticTransform(alpha=40, sigma=6, approximate=True, p=1, **_GEOMETRY, **_BORDER),
                A.GridDistortion(num_steps=5, distort_limit=0.25, p=1, **_GEOMETRY, **_BORDER),
            ],
            p=0.25,
        ),
        # ColorJitter's contrast blends towards the mean grey, so x0.1 keeps the mean brightness.
        A.ColorJitter(brightness=0, contrast=(0.1, 1.4), saturation=(0.5, 1.5), hue=(-0.05, 0.05), p=0.7),
        A.RandomBrightnessContrast(brightness_limit=45 / 255, contrast_limit=0, p=0.5),
        A.GaussianBlur(blur_limit=(3, 7), sigma_limit=(0.3, 2.5), p=0.2),
        A.GaussNoise(std_range=(0.02, 0.12), p=0.25),
        A.SaltAndPepper(amount=(0.002, 0.03), p=0.15),
        A.CoarseDropout(
            num_holes_range=(1, 6), hole_height_range=(0.05, 0.2), hole_width_range=(0.05, 0.2),
            fill=0, fill_mask=None, p=0.3,
        ),
    ]


class Augmentation:
    """``augment(image HxWx3 uint8, mask HxW uint8) -> (image, mask)``, random on every call.

    In a DataLoader worker the random state is reseeded from the worker's seed, so forked
    workers do not repeat each other's augmentations.
    """

    def __init__(self, transforms: list[A.BasicTransform], seed: int | None = None) -> None:
        self.compose = A.Compose(transforms, seed=seed)
        self._worker_seed: int | None = None

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        worker = get_worker_info()
        if worker is not None and worker.seed != self._worker_seed:
            self._worker_seed = worker.seed
            self.compose.set_random_seed(worker.seed % 2**32)
        out = self.compose(image=image, mask=mask)
        return out["image"], out["mask"]


def build_augmentation(strength: str = "strong", seed: int | None = None) -> Augmentation:
    """The augmentation for ``strength`` ("none", "light" or "strong"); ``seed`` fixes its random sequence."""
    if strength not in STRENGTHS:
        raise ValueError(f"unknown augmentation strength {strength!r}; choose from {', '.join(STRENGTHS)}")
    transforms = {"none": list, "light": _light, "strong": _strong}[strength]()
    return Augmentation(transforms, seed)
