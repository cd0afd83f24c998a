"""``run_fit``: one ``petseg-train fit`` invocation, from its config to the trained run."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from training.fit.config import FitConfig
from training.fit.data import Data, check_samples, prepare_samples
from training.fit.errors import FitInterrupted
from training.fit.loop import mix_with_parent, start_phase, train_phase, validate_parent
from training.fit.parent import with_parent
from training.fit.out_folder import out_path, run_folder
from training.fit.run import Progress, announce, build_run, load_saved_weights
from training.fit.run_log import RunLog, emit
from training.fit.runtime import Runtime, setup_runtime
from training.fit.saving import write_errors
from training.fit.state import STATE_NAME, read_train_state, resolve_resume, saved_options


def run_fit(cfg: FitConfig) -> int:
    """Train as ``cfg`` says (continuing the saved run with ``--resume``); returns the exit code.
    Raises FitError for user errors."""
    started = time.time()
    resume_dir = resolve_resume(cfg.resume, cfg.out)
    resume_tensors, resume_header = None, None
    if resume_dir is not None:
        resume_tensors, resume_header = read_train_state(resume_dir / STATE_NAME)
        cfg, ignored = cfg.resumed(saved_options(resume_header, resume_dir), str(resume_dir))
        if ignored and os.environ.get("RANK", "0") == "0":
            names = ", ".join("--" + c.replace("_", "-") for c in ignored)
            print(f"note: --resume keeps the run's saved {names} (only --epochs, --workers, --device, "
                  "--patience, --stop-after-epochs, --data can change)", file=sys.stderr)
    cfg = with_parent(cfg).with_default_encoder()  # saved in the resume state: a resumed run builds the same model
    cfg.check()
    rt = setup_runtime(cfg.device, cfg.bf16, cfg.no_amp)
    try:
        return _fit(cfg, rt, started, resume_tensors, resume_header)
    finally:
        if rt.distributed and dist.is_initialized():
            dist.destroy_process_group()


def _fit(cfg: FitConfig, rt: Runtime, started: float, resume_tensors: dict[str, torch.Tensor] | None,
         resume_header: dict[str, Any] | None) -> int:
    """Check the photos' masks, then make the run folder (checked writable) and train in it; Ctrl-C
    becomes FitInterrupted saying how to continue."""
    data = prepare_samples(cfg)
    rt.check_on_main(lambda: check_samples(data, progress=not cfg.no_progress))
    cfg = replace(cfg, out=str(out_path(cfg, rt)))
    with run_folder(Path(cfg.out), rt):
        try:
            return _train(cfg, rt, data, started, resume_tensors, resume_header)
        except KeyboardInterrupt:
            raise FitInterrupted(cfg.resume_command()) from None


def _train(cfg: FitConfig, rt: Runtime, data: Data, started: float,
           resume_tensors: dict[str, torch.Tensor] | None, resume_header: dict[str, Any] | None) -> int:
    """Build the run, then train its phases epoch by epoch (from the resume state when given)."""
    run = build_run(cfg, rt, data, started, resume_header)
    progress = Progress() if resume_header is None else Progress.saved(resume_header)
    if resume_header is not None and not load_saved_weights(run, progress):
        return 0
    announce(run)
    if cfg.init_from and resume_header is None:
        validate_parent(run, progress)
    run_log = RunLog(run.out)
    for index in range(progress.start_phase, len(run.phases)):
        resuming = resume_header is not None and index == progress.start_phase
        phase, first_epoch = start_phase(run, index, (resume_tensors, resume_header) if resuming else None)
        if train_phase(run, phase, first_epoch, progress, run_log):
            break
    else:
        if cfg.mix_parent and progress.start_phase < len(run.phases):
            mix_with_parent(run, phase, progress)
    if rt.main:
        with write_errors(run):
            run_log.finish(progress.history)
    if rt.distributed:
        dist.barrier()  # no rank tears the process group down while rank 0 still writes
    if progress.mixed is not None:
        rt.log(f"done: best {cfg.score_name} {progress.best:.4f} (the last epoch mixed with the starting model, "
               f"{progress.mixed:.2f} of its change kept); checkpoints in {run.out}")
    elif progress.best_epoch:
        rt.log(f"done: best {cfg.score_name} {progress.best:.4f} (epoch {progress.best_epoch}); checkpoints in {run.out}")
    else:
        tried = "no epoch nor mixture" if cfg.mix_parent else "no epoch"
        rt.log(f"done: {tried} beat --init-from's {cfg.score_name} {progress.best:.4f}; no best.safetensors in {run.out}")
    emit(run, "done", best_val_miou=progress.best, best_epoch=progress.best_epoch, mixed=progress.mixed,
         parent=progress.parent, out=str(run.out))
    return 0
