"""Segmentation losses: cross-entropy, focal and soft Dice (void ignored), and their combinations.

Semantic losses take ``logits`` Bx3xHxW and ``target`` BxHxW int64 with ``VOID`` (255) marking
pixels to ignore (the trimap border band and the letterbox padding). The binary loss for the
prompt model takes ``logits`` Bx1xHxW and ``target`` BxHxW with 1 object, 0 background, 255 void.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.classes import VOID

LOSS_NAMES = ("ce_dice", "focal_dice", "ce")


def _valid(target: torch.Tensor, ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(valid mask BxHxW bool, target with void replaced by 0 so that one_hot/gather work)."""
    valid = target != ignore_index
    return valid, torch.where(valid, target, torch.zeros_like(target))


def soft_dice_loss(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: int = VOID, eps: float = 1.0
) -> torch.Tensor:
    """1 - mean over classes of the soft Dice, pixels marked ``ignore_index`` excluded.

    Sums run over the whole batch (one Dice per class), which is stable for classes absent from
    single images (a batch of dogs still has background). Classes absent from the batch's target
    and predicted only weakly contribute little thanks to the smoothing ``eps``.
    """
    num_classes = logits.shape[1]
    valid, safe = _valid(target, ignore_index)
    probs = torch.softmax(logits.float(), dim=1)
    onehot = F.one_hot(safe, num_classes).permute(0, 3, 1, 2).float()
    weight = valid.unsqueeze(1).float()
    probs, onehot = probs * weight, onehot * weight
    dims = (0, 2, 3)
    intersection = (probs * onehot).sum(dims)
    denominator = probs.sum(dims) + onehot.sum(dims)
    dice = (2 * intersection + eps) / (denominator + eps)
    return 1 - dice.mean()


def focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    gamma: float = 2.0,
    weight: torch.Tensor | None = None,
    ignore_index: int = VOID,
) -> torch.Tensor:
    """Multi-class focal loss (Lin et al.), mean over valid pixels; ``weight`` per class (alpha)."""
    valid, safe = _valid(target, ignore_index)
    log_probs = torch.log_softmax(logits.float(), dim=1)
    log_pt = log_probs.gather(1, safe.unsqueeze(1)).squeeze(1)
    pt = log_pt.exp()
    loss = -((1 - pt) ** gamma) * log_pt
    if weight is not None:
        loss = loss * weight.to(loss.device, loss.dtype)[safe]
    loss = loss * valid
    return loss.sum() / valid.sum().clamp_min(1)


class SegmentationLoss(nn.Module):
    """``ce``, ``ce_dice`` or ``focal_dice`` for 3-class logits, void ignored everywhere."""

    def __init__(
        self,
        kind: str = "ce_dice",
        class_weights: Sequence[float] | torch.Tensor | None = None,
        dice_weight: float = 1.0,
        focal_gamma: float = 2.0,
        ignore_index: int = VOID,
    ) -> None:
        super().__init__()
        if kind not in LOSS_NAMES:
            raise ValueError(f"unknown loss {kind!r} (known: {', '.join(LOSS_NAMES)})")
        self.kind = kind
        self.dice_weight = dice_weight
        self.focal_gamma = focal_gamma
        self.ignore_index = ignore_index
        weights = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        self.register_buffer("class_weights", weights, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if self.kind == "focal_dice":
            main = focal_loss(logits, target, self.focal_gamma, self.class_weights, self.ignore_index)
        else:
            valid = target != self.ignore_index
            if not bool(valid.any()):  # an all-void batch: no signal, but keep the graph
                return logits.sum() * 0.0
            main = F.cross_entropy(logits, target, weight=self.class_weights, ignore_index=self.ignore_index)
        if self.kind == "ce":
            return main
        return main + self.dice_weight * soft_dice_loss(logits, target, self.ignore_index)


def binary_dice_loss(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: int = VOID, eps: float = 1.0
) -> torch.Tensor:
    """1 - soft Dice of the object channel, per image then averaged; void pixels excluded."""
    logits = logits.float().reshape(target.shape)
    valid = (target != ignore_index).float()
    fg = (target == 1).float() * valid
    probs = torch.sigmoid(logits) * valid
    dims = tuple(range(1, target.dim()))
    intersection = (probs * fg).sum(dims)
    denominator = probs.sum(dims) + fg.sum(dims)
    return 1 - ((2 * intersection + eps) / (denominator + eps)).mean()


class BinaryLoss(nn.Module):
    """BCE + Dice for the prompt model's object logits, void ignored."""

    def __init__(self, dice_weight: float = 1.0, ignore_index: int = VOID) -> None:
        super().__init__()
        self.dice_weight = dice_weight
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float().reshape(target.shape)
        valid = target != self.ignore_index
        fg = (target == 1).float()
        bce = F.binary_cross_entropy_with_logits(logits, fg, reduction="none")
        bce = (bce * valid).sum() / valid.sum().clamp_min(1)
        if self.dice_weight == 0:
            return bce
        return bce + self.dice_weight * binary_dice_loss(logits, target, self.ignore_index)


def class_weights_from_counts(counts: Sequence[float], power: float = 0.5, max_ratio: float = 10.0) -> list[float]:
    """Inverse-frequency class weights ``(1/freq)**power``, normalised to mean 1 and capped.

    ``power`` 0.5 (inverse square root) is gentler than plain inverse frequency, which over-weights
    rare classes so much that background boundaries suffer. Absent classes get the largest weight.
    """
    counts = np.asarray(counts, dtype=np.float64)
    freq = counts / max(counts.sum(), 1.0)
    present = freq > 0
    weights = np.ones_like(freq)
    weights[present] = freq[present] ** -power
    if present.any():
        weights[~present] = weights[present].max()
    weights = np.minimum(weights, weights.min() * max_ratio)
    weights = weights / weights.mean()
    return [float(w) for w in weights]


class SpeciesGuardLoss(nn.Module):
    """Fine-tuning a semantic model on photos of one species without drifting towards it.

    The labels teach pet versus background only: cross-entropy (void ignored) of the background
    logit against the *mean* of the cat and dog logits, whose gradient moves both alike and so
    never the split between them (pooling by logsumexp would push whichever species leads, and a
    folder of cats turned every dog into a cat: all-Test mIoU 0.919 -> 0.733). That split, on each
    true pet pixel, is distilled from the starting model's logits (KL divergence, times ``weight``).
    Without ``parent_logits`` (validation) only the first term.
    """

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        self.weight = weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor,
                parent_logits: torch.Tensor | None = None) -> torch.Tensor:
        logits = logits.float()
        pooled = torch.stack([logits[:, 0], logits[:, 1:].mean(dim=1)], dim=1)
        pet = (target == 1) | (target == 2)
        binary = torch.where(target == VOID, target, pet.long())
        if not bool((target != VOID).any()):
            return logits.sum() * 0.0
        loss = F.cross_entropy(pooled, binary, ignore_index=VOID)
        if parent_logits is not None and bool(pet.any()):
            teacher = F.softmax(parent_logits.float()[:, 1:], dim=1)
            kl = (teacher * (torch.log(teacher.clamp_min(1e-8)) - F.log_softmax(logits[:, 1:], dim=1))).sum(1)
            loss = loss + self.weight * kl[pet].mean()
        return loss


def build_loss(kind: str, task: str = "semantic", class_weights: Sequence[float] | None = None,
               species_guard: float = 0.0) -> nn.Module:
    """The training loss for ``task`` ("semantic" or "prompt"); the prompt model always uses BCE+Dice;
    ``species_guard`` > 0: :class:`SpeciesGuardLoss` instead of ``kind`` (fine-tuning)."""
    if task == "prompt":
        return BinaryLoss()
    if species_guard > 0:
        return SpeciesGuardLoss(species_guard)
    return SegmentationLoss(kind, class_weights=class_weights)
