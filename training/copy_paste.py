"""Copy-paste augmentation for the prompt model: other photos' pets pasted beside the photo's own,
one pet of them the target.

With probability ``probability`` a training photo (at model size, before the other augmentation)
gets the pets of one or two other training photos pasted beside its pet by
:func:`training.composites.compose`. One pet, drawn at random, stays the target with its class;
the others become background and their seams void. The model so learns that a click or a box
selects *that* pet, not every pet in the photo.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from models.classes import BACKGROUND, VOID
from training.composites import compose, cut_out, pet_label
from training.data import Sample, load_sample

MAX_PASTED = 2  # pets pasted into one photo: 1 or 2, equally likely


class CopyPaste:
    """``(image, mask) -> (image, mask)`` at model size; ``samples``: the training photos to take pets from."""

    def __init__(self, samples: Sequence[Sample], probability: float) -> None:
        self.samples = list(samples)
        self.probability = probability

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # torch's RNG: seeded per epoch in loader workers, and saved with the resume state in-process
        rng = np.random.default_rng(int(torch.randint(2**62, ())))
        if rng.random() >= self.probability or len(self.samples) < 2 or not ((mask == 1) | (mask == 2)).any():
            return image, mask
        cutouts = []
        for index in rng.choice(len(self.samples), size=int(rng.integers(1, MAX_PASTED + 1)), replace=False):
            cut = cut_out(*load_sample(self.samples[int(index)]))
            if cut is not None:
                cutouts.append(cut)
        rgb, instances, _, _ = compose(image, mask, cutouts, rng)
        classes = [pet_label(mask)] + [c.label for c in cutouts]
        target = int(rng.integers(1, len(classes) + 1))
        labels = np.full(mask.shape, BACKGROUND, dtype=np.uint8)
        labels[instances == target] = classes[target - 1]
        labels[instances == VOID] = VOID
        return rgb, labels
