"""The epoch loop: each phase with a fresh optimizer, each epoch trained, validated, saved and logged."""

from __future__ import annotations

import math
import random
import sys
import time
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from models.classes import PROMPT
from models.registry import RECONSTRUCTION, SEGMENTATION
from training.fit import model_setup
from training.fit.config import REPLAY_TOLERANCE
from training.fit.errors import FitError
from training.fit.mixing import try_mixtures
from training.fit.parent import anchor_penalty
from training.fit.run import Phase, Progress, Run
from training.fit.run_log import RunLog, emit
from training.fit.runtime import batch_to_device
from training.fit.saving import save_epoch, save_mixture, write_errors
from training.fit.schedule import lr_at
from training.fit.state import restore_optimizer, set_rng_state
from training.fit.validation import selection_score, validate_prompt, validate_semantic


def start_phase(run: Run, index: int,
                resume: tuple[dict[str, torch.Tensor], dict[str, Any]] | None) -> tuple[Phase, int]:
    """Phase ``index`` ready to train, and its first epoch. With ``resume`` (the saved state's
    tensors and header) the optimizer, scaler and RNGs continue exactly where the saved run stopped."""
    cfg, rt, model = run.cfg, run.rt, run.model
    name, epochs = run.phases[index]
    model_setup.configure_phase(model, run.arch, name, run.config, cfg.freeze_encoder)
    step_module = model_setup.step_module(model, run.arch, name, cfg.first_prompt_loss > 0)
    params = model_setup.trainable_parameters(model)
    if rt.distributed:
        step_module = nn.parallel.DistributedDataParallel(
            step_module, device_ids=[rt.device.index] if rt.device.type == "cuda" else None
        )
    use_scaler = rt.precision == "fp16"
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
    total_steps = run.steps_per_epoch * epochs
    warmup_steps = min(int(round(cfg.warmup_epochs * run.steps_per_epoch)), total_steps // 2)
    phase = Phase(name, index, epochs, step_module, params, optimizer, scaler, total_steps, warmup_steps)
    if resume is None:
        return phase, 0
    tensors, header = resume
    restore_optimizer(optimizer, tensors, header)
    if use_scaler and header.get("scaler"):
        scaler.load_state_dict(header["scaler"])
    set_rng_state(tensors, header["rng"])
    if epochs != header.get("phase_epochs", epochs):
        rt.log(f"note: {name} now runs {epochs} epochs (was {header['phase_epochs']}); "
               "the cosine schedule is stretched from here on")
    return phase, header["phase_epoch"]


def validate_parent(run: Run, progress: Progress) -> None:
    """``--init-from``: the parent's validation metrics, before any training, become the best to beat."""
    row: dict[str, Any] = {}
    metrics = _validate(run, row)
    progress.parent = {key: row[key] for key in ("val_miou", "iou_1click", "iou_3click", "replay_miou") if key in row}
    progress.best = metrics["score"]
    kept = "" if "replay_miou" not in row else (
        f" and keep the replayed photos' mIoU {row['replay_miou']:.4f} within {REPLAY_TOLERANCE}")
    run.rt.log(f"the starting model (--init-from) scores {run.cfg.score_name} {metrics['score']:.4f} on the photos kept aside; "
               f"an epoch must beat it{kept} to be saved as best.safetensors")
    emit(run, "parent", **progress.parent)


def train_phase(run: Run, phase: Phase, first_epoch: int, progress: Progress, run_log: RunLog) -> bool:
    """Train, validate and save each epoch of ``phase`` from ``first_epoch``; True when the run
    stops before its end (early stop or --stop-after-epochs)."""
    rt = run.rt
    for epoch in range(first_epoch, phase.epochs):
        t0 = time.time()
        train_loss, train_steps, lr = _train_epoch(run, phase, epoch)
        row: dict[str, Any] = {
            "epoch": len(progress.history) + 1, "phase": phase.name, "train_loss": round(train_loss, 6),
            "lr": lr, "world_size": rt.world, "train_steps": train_steps,
        }
        metrics = _validate(run, row) if phase.name == SEGMENTATION else {}
        row["seconds"] = round(time.time() - t0, 2)
        improved = progress.record(row, metrics, epoch)
        if rt.main:
            with write_errors(run):
                save_epoch(run, phase, epoch, metrics, improved, progress)
                run_log.update(progress.history)
            rt.log(_epoch_summary(run, phase, epoch, train_loss, metrics, row, progress) + f" [{row['seconds']:.1f} s]")
            emit(run, "epoch", phase=phase.name, epoch=epoch + 1, epochs=phase.epochs, improved=improved,
                 **{key: row[key] for key in ("train_loss", "val_miou", "iou_1click", "replay_miou", "seconds")
                    if key in row})
        if rt.distributed:
            dist.barrier()
        reason = _stop_reason(run, phase, epoch, progress)
        if reason:
            rt.log(reason)
            return True
    return False


def mix_with_parent(run: Run, phase: Phase, progress: Progress) -> None:
    """``--mix-parent``: the last epoch's weights mixed back with the starting model's, each mixture
    judged like an epoch (:mod:`training.fit.mixing`)."""
    def judged(alpha: float, row: dict[str, Any], metrics: dict[str, Any], improved: bool) -> None:
        if not run.rt.main:
            return
        if improved:
            with write_errors(run):
                save_mixture(run, phase, metrics, progress)
        verdict = f"{run.cfg.score_name} {metrics['score']:.4f}{_replay_note(row, progress)}{' (best)' if improved else ''}"
        run.rt.log(f"mixed with the starting model, {alpha:.2f} of the fine-tuned change kept: {verdict}")
        emit(run, "mix", alpha=alpha, improved=improved,
             **{key: row[key] for key in ("val_miou", "iou_1click", "replay_miou") if key in row})

    try_mixtures(run.model, run.parent_weights, progress, lambda row: _validate(run, row), judged)


def _train_epoch(run: Run, phase: Phase, epoch: int) -> tuple[float, int, float]:
    """One pass over this rank's training photos; returns the mean loss and the step count over
    all ranks, and the last learning rate."""
    cfg, rt = run.cfg, run.rt
    epoch_seed = cfg.seed * 100003 + epoch + 1000 * phase.index
    run.sampler.set_epoch(epoch + 1000 * phase.index)
    loader = torch.utils.data.DataLoader(
        run.train_ds, batch_size=cfg.batch_size, sampler=run.sampler, num_workers=cfg.workers,
        drop_last=run.drop_last, pin_memory=rt.device.type == "cuda",
        generator=torch.Generator().manual_seed(epoch_seed), persistent_workers=False,
    )
    if cfg.workers == 0 and hasattr(run.augment, "compose"):
        # in-process augmentation: reseed per epoch so that --resume continues exactly
        # (in workers, training.augment reseeds from the worker seed, itself per-epoch seeded)
        run.augment.compose.set_random_seed(epoch_seed % 2**32)
    run.model.train()
    if cfg.freeze_norm:
        for module in run.model.modules():
            if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)):
                module.eval()
    loss_sum, steps = 0.0, 0
    batches, bar = loader, None
    if rt.main and not cfg.no_progress:
        from tqdm import tqdm

        batches = bar = tqdm(loader, desc=f"{phase.name[:5]} {epoch + 1}/{phase.epochs}", leave=False,
                             dynamic_ncols=True, file=sys.stderr)
    for i, batch in enumerate(batches):
        lr = lr_at(epoch * run.steps_per_epoch + i, phase.total_steps, phase.warmup_steps, cfg.lr)
        for group in phase.optimizer.param_groups:
            group["lr"] = lr
        images, masks = batch_to_device(batch, rt.device, cfg.channels_last)
        with rt.autocast():
            loss = _batch_loss(run, phase, images, masks)
        phase.optimizer.zero_grad(set_to_none=True)
        phase.scaler.scale(loss).backward()
        if cfg.grad_clip > 0:
            phase.scaler.unscale_(phase.optimizer)
            torch.nn.utils.clip_grad_norm_(phase.params, cfg.grad_clip)
        phase.scaler.step(phase.optimizer)
        phase.scaler.update()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FitError(f"training diverged (loss {value}) at {phase.name} epoch {epoch + 1}; lower --lr")
        loss_sum += value
        steps += 1
        if bar is not None:
            bar.set_postfix(loss=f"{value:.4f}", lr=f"{lr:.2e}")
        emit(run, "step", phase=phase.name, epoch=epoch + 1, epochs=phase.epochs, step=i + 1,
             steps=len(loader), loss=round(value, 5))
    if bar is not None:
        bar.close()
    loss_sum, steps = rt.all_reduce_sum([loss_sum, steps])
    return loss_sum / max(steps, 1), int(steps), lr


def _batch_loss(run: Run, phase: Phase, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """The phase's loss on one batch (the prompt model draws its click rounds and seed here)."""
    if run.arch.task == PROMPT:
        rounds = random.randint(0, max(0, run.cfg.clicks_rounds))
        seed = int(np.random.randint(2**31 - 1))
        logits, target, first_logits = phase.step_module(images, masks, rounds, seed)
        loss = run.criterion(logits, target)
        if first_logits is not None:
            loss = loss + run.cfg.first_prompt_loss * run.criterion(first_logits, target)
    elif phase.name == RECONSTRUCTION:
        recon = phase.step_module(images)
        loss = nn.functional.mse_loss(recon.float(), images.float())
    elif run.teacher is not None:
        with torch.no_grad():
            parent_logits = run.teacher(images)
        loss = run.criterion(phase.step_module(images), masks, parent_logits)
    else:
        loss = run.criterion(phase.step_module(images), masks)
    if run.cfg.anchor:
        loss = loss + anchor_penalty(run.model, run.parent_weights, run.cfg.anchor)
    return loss


def _validate(run: Run, row: dict[str, Any]) -> dict[str, Any]:
    """The epoch's validation metrics; their log columns go into ``row`` (with ``--replay``, also
    ``replay_miou``: the mIoU on the replayed photos kept aside)."""
    validate = validate_prompt if run.arch.task == PROMPT else validate_semantic
    metrics = validate(run.model, run.val, run.criterion, run.cfg, run.rt)
    if run.arch.task == PROMPT:
        row.update(iou_1click=round(metrics["iou_1click"], 5), iou_3click=round(metrics["iou_3click"], 5))
    else:
        for name, value in metrics["per_class_iou"].items():
            row[f"iou_{name}"] = None if value is None else round(value, 5)
    row.update(val_loss=round(metrics["val_loss"], 6), val_miou=round(metrics["miou"], 5))
    metrics["score"] = selection_score(metrics, run.cfg.best_by)
    if run.replay_val is not None:
        row["replay_miou"] = round(validate(run.model, run.replay_val, run.criterion, run.cfg, run.rt)["miou"], 5)
    return metrics


def _epoch_summary(run: Run, phase: Phase, epoch: int, train_loss: float, metrics: dict[str, Any],
                   row: dict[str, Any], progress: Progress) -> str:
    """The epoch's line on stderr (without its duration)."""
    summary = f"{phase.name} epoch {epoch + 1}/{phase.epochs}: train loss {train_loss:.4f}"
    if metrics:
        summary += f", val loss {metrics['val_loss']:.4f}, val mIoU {metrics['miou']:.4f}"
        if run.arch.task == PROMPT:
            summary += f" (IoU @1 click {metrics['iou_1click']:.4f})"
        summary += _replay_note(row, progress)
    return summary


def _replay_note(row: dict[str, Any], progress: Progress) -> str:
    """", replayed photos' mIoU ... (forgets)" for a log line, when ``row`` has one ("" otherwise)."""
    if row.get("replay_miou") is None:
        return ""
    return f", replayed photos' mIoU {row['replay_miou']:.4f}{' (forgets)' if progress.forgets(row) else ''}"


def _stop_reason(run: Run, phase: Phase, epoch: int, progress: Progress) -> str | None:
    """Why the run stops after this epoch (early stop, --stop-after-epochs), or None."""
    cfg = run.cfg
    if phase.name == SEGMENTATION and cfg.patience and epoch + 1 - progress.best_epoch >= cfg.patience:
        return (f"early stop: no better val mIoU for {cfg.patience} epochs "
                f"(best {progress.best:.4f} at epoch {progress.best_epoch})")
    last_epoch = epoch + 1 == phase.epochs and phase.index == len(run.phases) - 1
    if cfg.stop_after_epochs and progress.epochs_this_run >= cfg.stop_after_epochs and not last_epoch:
        return f"stopping after {progress.epochs_this_run} epochs as asked; continue with --resume {run.out}"
    return None
