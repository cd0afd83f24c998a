"""Per-epoch validation on this rank's share of the held-out photos, scored at their own resolution.

Semantic models: cross-class mIoU from a confusion matrix. The prompt model: IoU after 1 and 3
simulated clicks (:func:`training.prompt_training.simulate_eval_clicks`). Sums are all-reduced, so
every rank returns the same numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from models.classes import CLASS_NAMES, VOID
from training.fit.config import ONE_AND_THREE_CLICKS, FitConfig
from training.fit.runtime import Runtime, batch_to_device
from training.metrics import ConfusionMatrix


@dataclass
class ValSet:
    """The validation photos at model size, and (for this rank's share) their labels at full size."""

    dataset: Any
    masks: list[np.ndarray]  # original-resolution label masks
    boxes: list[Any]  # Letterbox per image
    indices: list[int]  # this rank's share


def build_val_set(samples: Sequence[Any], size: int, normalization: dict[str, list[float]], rt: Runtime,
                  composites: bool = False) -> ValSet:
    """The validation photos at ``size`` px, with this rank's label masks at full resolution.

    ``composites`` (the prompt model trained with ``--copy-paste``): every other photo also
    appears as a two-pet composite (:func:`training.composites.split_composites`, partners from
    the validation photos) whose target is its first or its second pet by turns, so that the
    best epoch is chosen on single and multi-pet photos alike.
    """
    from training.data import SegmentationDataset, load_labels
    from models.geometry import letterbox_params

    if composites:
        return _composite_val_set(samples, size, normalization, rt)
    dataset = SegmentationDataset(samples, size, normalization, augment=None)
    indices = list(range(rt.rank, len(samples), rt.world))
    masks: list = [None] * len(samples)
    boxes: list = [None] * len(samples)
    for i in indices:
        masks[i] = load_labels(samples[i])
        boxes[i] = letterbox_params(masks[i].shape[0], masks[i].shape[1], size)
    return ValSet(dataset, masks, boxes, indices)


def _composite_val_set(samples: Sequence[Any], size: int, normalization: dict[str, list[float]],
                       rt: Runtime) -> ValSet:
    """The validation photos and composites of every other one, held in memory."""
    from models.geometry import letterbox_params
    from training.composites import instance_target, split_composites
    from training.data import ArrayDataset, load_sample

    pairs = [load_sample(s) for s in samples]
    for i, composite in enumerate(split_composites(samples[::2], samples, pets=2)):
        pet = 1 + i % composite.pets
        pairs.append((composite.rgb, instance_target(composite.instances, pet)))
    masks = [labels for _, labels in pairs]
    boxes = [letterbox_params(m.shape[0], m.shape[1], size) for m in masks]
    return ValSet(ArrayDataset(pairs, size, normalization), masks, boxes, list(range(rt.rank, len(pairs), rt.world)))


def _val_batches(val: ValSet, batch_size: int) -> torch.utils.data.DataLoader:
    subset = torch.utils.data.Subset(val.dataset, val.indices)
    return torch.utils.data.DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=0)


@torch.no_grad()
def validate_semantic(model: nn.Module, val: ValSet, criterion: nn.Module, cfg: FitConfig,
                      rt: Runtime) -> dict[str, Any]:
    """``val_loss``, ``miou`` and ``per_class_iou`` (None for a class absent everywhere)."""
    from models.geometry import unletterbox

    model.eval()
    matrix = np.zeros((3, 3), dtype=np.int64)
    loss_sum, batches = 0.0, 0
    for batch in _val_batches(val, cfg.batch_size):
        images, masks = batch_to_device(batch, rt.device, cfg.channels_last)
        with rt.autocast():
            logits = model(images)
        loss_sum += float(criterion(logits.float(), masks))
        batches += 1
        logits_np = logits.float().permute(0, 2, 3, 1).cpu().numpy()
        for k, index in enumerate(batch["index"].tolist()):
            target = val.masks[index]
            pred = unletterbox(np.ascontiguousarray(logits_np[k]), val.boxes[index]).argmax(-1)
            valid = target != VOID
            matrix += np.bincount(target[valid].astype(np.int64) * 3 + pred[valid], minlength=9).reshape(3, 3)
    reduced = rt.all_reduce_sum([loss_sum, batches, *matrix.ravel().tolist()])
    loss_sum, batches = reduced[0], reduced[1]
    confusion = ConfusionMatrix(num_classes=3)
    confusion.matrix = np.asarray(reduced[2:], dtype=np.int64).reshape(3, 3)
    iou, miou = confusion.iou(), confusion.labelled_mean_iou()
    return {
        "val_loss": loss_sum / max(batches, 1),
        "miou": 0.0 if np.isnan(miou) else miou,  # over the classes the masks hold
        "per_class_iou": {name: (None if np.isnan(v) else float(v)) for name, v in zip(CLASS_NAMES, iou)},
    }


@torch.no_grad()
def validate_prompt(model: nn.Module, val: ValSet, criterion: nn.Module, cfg: FitConfig,
                    rt: Runtime) -> dict[str, Any]:
    """``val_loss`` (after 3 clicks), ``iou_1click``, ``iou_3click`` and ``miou`` (= ``iou_3click``)."""
    from models.geometry import unletterbox
    from training.prompt_training import binary_target, simulate_eval_clicks

    model.eval()
    sums = np.zeros(3)  # iou after 1 click, after 3 clicks, images
    loss_sum, batches = 0.0, 0
    for batch in _val_batches(val, cfg.batch_size):
        images, masks = batch_to_device(batch, rt.device, cfg.channels_last)
        with rt.autocast():
            probs = simulate_eval_clicks(model, images, masks, clicks=3)
        eps = 1e-6
        p3 = probs[2].clamp(eps, 1 - eps)
        loss_sum += float(criterion(torch.log(p3 / (1 - p3)), binary_target(masks).cpu()))
        batches += 1
        for k, index in enumerate(batch["index"].tolist()):
            target = val.masks[index]
            valid = target != VOID
            obj = (target == 1) | (target == 2)
            for slot, click_probs in ((0, probs[0]), (1, probs[2])):
                pred = unletterbox(click_probs[k].numpy(), val.boxes[index]) > 0.5
                inter = np.count_nonzero(pred & obj & valid)
                union = np.count_nonzero((pred | obj) & valid)
                sums[slot] += inter / union if union else 1.0
            sums[2] += 1
    reduced = rt.all_reduce_sum([loss_sum, batches, *sums.tolist()])
    n = max(reduced[4], 1)
    iou1, iou3 = reduced[2] / n, reduced[3] / n
    return {"val_loss": reduced[0] / max(reduced[1], 1), "miou": iou3, "iou_1click": iou1, "iou_3click": iou3}


def selection_score(metrics: dict[str, Any], best_by: str) -> float:
    """The figure an epoch must beat to become the best: the validation mIoU (a prompt model's IoU
    after 3 clicks) or, with ``--best-by 1-and-3-clicks``, the mean of IoU after 1 and after 3 clicks."""
    if best_by == ONE_AND_THREE_CLICKS:
        return (metrics["iou_1click"] + metrics["iou_3click"]) / 2
    return metrics["miou"]
