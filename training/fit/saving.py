"""What rank 0 writes after every epoch: ``last.safetensors``, ``best.safetensors`` and the resume state."""

from __future__ import annotations

import time
from typing import Any

from models.classes import PROMPT
from models.registry import RECONSTRUCTION
from training.fit.run import Phase, Progress, Run
from training.fit.state import STATE_NAME, save_train_state


def save_epoch(run: Run, phase: Phase, epoch: int, metrics: dict[str, Any], improved: bool,
               progress: Progress) -> None:
    """``last.safetensors`` (and ``best.safetensors`` when ``improved``), then the resume state."""
    from models.checkpoint import make_metadata, save_checkpoint

    cfg = run.cfg
    meta_metrics = {k: v for k, v in metrics.items() if k != "val_loss"}
    meta_metrics["val_loss"] = metrics.get("val_loss")
    metadata = make_metadata(
        cfg.arch, run.config, cfg.size, run.model.normalization,
        training=_training_metadata(run, phase, epoch, progress),
        metrics=meta_metrics,
        command=run.command,
        seconds=round(time.time() - run.started + run.prior_seconds, 1),
        hardware=run.hardware,
    )
    save_checkpoint(run.out / "last.safetensors", run.model, metadata)
    if improved:
        save_checkpoint(run.out / "best.safetensors", run.model, metadata)
    info = {
        "args": cfg.options(),  # by argparse dest, as --resume reads them
        "history": progress.history, "best": progress.best, "best_epoch": progress.best_epoch,
        "phase_index": phase.index, "phase_epoch": epoch + 1, "phase_epochs": phase.epochs,
        "global_step": (epoch + 1) * run.steps_per_epoch, "class_weights": run.class_weights,
        "pretrained": run.pretrained, "seconds": metadata["seconds"], "world_size": run.rt.world,
    }
    save_train_state(run.out / STATE_NAME, phase.optimizer, phase.scaler, info)


def _training_metadata(run: Run, phase: Phase, epoch: int, progress: Progress) -> dict[str, Any]:
    """The checkpoint metadata's ``training`` section: data, phase, epoch and the options that matter."""
    cfg, prompt = run.cfg, run.arch.task == PROMPT
    return {
        **run.data.summary,
        "phase": phase.name,
        "epoch": epoch + 1,
        "epochs": phase.epochs,
        "ae_epochs": cfg.ae_epochs if RECONSTRUCTION in run.arch.phases else None,
        "total_epochs_done": len(progress.history),
        "best_epoch": progress.best_epoch,
        "loss": "bce_dice" if prompt else cfg.loss,
        "class_weights": run.class_weights,
        "cat_boost": cfg.cat_boost,
        "augment": cfg.augment,
        "batch_size": cfg.batch_size,
        "lr": cfg.lr,
        "seed": cfg.seed,
        "clicks_rounds": cfg.clicks_rounds if prompt else None,
        "pretrained": run.pretrained,
        "encoder": run.config.get("encoder"),
    }
