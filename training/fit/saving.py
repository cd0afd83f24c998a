"""What rank 0 writes after every epoch: ``last.safetensors``, ``best.safetensors`` and the resume state,
replaced together or not at all, and the one-line error when writing them fails (a full disk)."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from models.classes import PROMPT
from models.errors import one_line
from models.registry import RECONSTRUCTION
from training.fit.errors import FitError
from training.fit.run import Phase, Progress, Run
from training.fit.state import STATE_NAME, save_train_state


def save_epoch(run: Run, phase: Phase, epoch: int, metrics: dict[str, Any], improved: bool,
               progress: Progress) -> None:
    """``last.safetensors`` (and ``best.safetensors`` when ``improved``) and the resume state: all
    written first, then renamed into place, so that a failed write leaves the last epoch's files."""
    from models.checkpoint import save_checkpoint

    metadata = _metadata(run, phase, epoch, metrics, progress)
    names = ["last.safetensors", STATE_NAME] + (["best.safetensors"] if improved else [])
    with staged([run.out / name for name in names]) as (last, state, *best):
        for path in (last, *best):
            save_checkpoint(path, run.model, metadata)
        save_train_state(state, phase.optimizer, phase.scaler, _state_info(run, phase, epoch, metadata, progress))


def save_mixture(run: Run, phase: Phase, metrics: dict[str, Any], progress: Progress) -> None:
    """``best.safetensors`` from the model's current weights, a mixture with the starting model's
    (``progress.mixed``, see :mod:`training.fit.mixing`); the last epoch's files stay as they are."""
    from models.checkpoint import save_checkpoint

    metadata = _metadata(run, phase, phase.epochs - 1, metrics, progress)
    with staged([run.out / "best.safetensors"]) as (best,):
        save_checkpoint(best, run.model, metadata)


def _metadata(run: Run, phase: Phase, epoch: int, metrics: dict[str, Any], progress: Progress) -> dict[str, Any]:
    from models.checkpoint import make_metadata

    cfg = run.cfg
    meta_metrics = {k: v for k, v in metrics.items() if k != "val_loss"}
    meta_metrics["val_loss"] = metrics.get("val_loss")
    return make_metadata(
        cfg.arch, run.config, cfg.size, run.model.normalization,
        training=_training_metadata(run, phase, epoch, progress),
        metrics=meta_metrics,
        command=run.command,
        seconds=round(time.time() - run.started + run.prior_seconds, 1),
        hardware=run.hardware,
    )


@contextmanager
def staged(paths: list[Path]) -> Iterator[list[Path]]:
    """Hidden temporary paths (same suffix) beside ``paths``, renamed onto them together when the
    block succeeds; when it fails, the temporary files are removed and ``paths`` are untouched."""
    temps = [p.with_name(f".{p.stem.lstrip('.')}-{secrets.token_hex(8)}.tmp{p.suffix}") for p in paths]
    try:
        yield temps
        for temp, path in zip(temps, paths):
            os.replace(temp, path)
    finally:
        for temp in temps:
            temp.unlink(missing_ok=True)


@contextmanager
def write_errors(run: Run) -> Iterator[None]:
    """A failed write of the run's files (a full disk, a lost drive: OSError, or safetensors' own
    error) as a one-line FitError saying how to continue."""
    from safetensors import SafetensorError

    try:
        yield
    except (OSError, SafetensorError) as error:
        reason = getattr(error, "strerror", None) or one_line(error)
        raise FitError(
            f"cannot write {getattr(error, 'filename', None) or run.out}: {reason}; the last finished "
            f"epoch's files are intact; continue with: {run.cfg.resume_command()}"
        ) from None


def _state_info(run: Run, phase: Phase, epoch: int, metadata: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """The resume state's JSON: options, history, position in the run."""
    cfg = run.cfg
    return {
        "args": cfg.options(),  # by argparse dest, as --resume reads them
        "history": progress.history, "best": progress.best, "best_epoch": progress.best_epoch,
        "parent": progress.parent,
        "phase_index": phase.index, "phase_epoch": epoch + 1, "phase_epochs": phase.epochs,
        "global_step": (epoch + 1) * run.steps_per_epoch, "class_weights": run.class_weights,
        "pretrained": run.pretrained, "seconds": metadata["seconds"], "world_size": run.rt.world,
    }


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
        "copy_paste": cfg.copy_paste if prompt else None,
        "first_prompt_loss": cfg.first_prompt_loss if prompt else None,
        "best_by": cfg.best_by if prompt else None,
        "init_from": cfg.init_from,
        "parent_val": progress.parent,
        "freeze_encoder": cfg.freeze_encoder,
        "anchor": cfg.anchor,
        "mixed_with_parent": progress.mixed,  # the share of the fine-tuned change kept (best.safetensors only)
    }
