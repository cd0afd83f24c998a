"""One ``fit`` invocation's shared state: :class:`Run` (built once by :func:`build_run`), its
:class:`Progress` and the :class:`Phase` it trains."""

from __future__ import annotations

import random
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from models.classes import SEMANTIC
from models.registry import SEGMENTATION, Architecture
from training.fit import model_setup
from training.fit.config import REPLAY_TOLERANCE, FitConfig
from training.fit.parent import load_parent
from training.fit.data import Data, loss_class_weights, train_dataset, train_sampler
from training.fit.runtime import Runtime, cpu_has_fast_bf16, hardware_summary
from training.fit.validation import ValSet, build_val_set


@dataclass
class Run:
    """What every epoch of one ``fit`` invocation shares."""

    cfg: FitConfig  # out: the resolved output folder
    arch: Architecture
    rt: Runtime
    out: Path
    data: Data
    config: dict[str, Any]  # the builder config
    model: nn.Module
    pretrained: str
    augment: Any  # training.augment's pipeline, or None
    parent_weights: dict[str, torch.Tensor] | None  # --init-from's, kept for --anchor and --mix-parent
    teacher: nn.Module | None  # --species-guard: the starting model, frozen, whose cat/dog split is kept
    train_ds: torch.utils.data.Dataset
    val: ValSet
    replay_val: ValSet | None  # --replay: its photos kept aside, to measure forgetting on
    class_weights: list[float] | None
    criterion: nn.Module
    sampler: torch.utils.data.Sampler
    steps_per_epoch: int
    drop_last: bool
    phases: list[tuple[str, int]]  # (name, epochs), in the order they train
    started: float  # time.time() when this invocation started
    prior_seconds: float  # time spent by the invocations this one resumes
    hardware: dict[str, Any]
    command: str
    resumed: bool  # continuing a saved run


@dataclass
class Progress:
    """The run's record so far: saved in the resume state, advanced by every epoch."""

    history: list[dict[str, Any]] = field(default_factory=list)  # one log row per epoch
    best: float = -1.0  # best validation score (FitConfig.score_name: mIoU unless --best-by says otherwise)
    best_epoch: int = 0  # its epoch within the segmentation phase
    start_phase: int = 0  # where this invocation starts: a phase index...
    start_epoch: int = 0  # ...and the epochs already done in that phase
    epochs_this_run: int = 0
    parent: dict[str, Any] | None = None  # --init-from: the parent's validation metrics, the best to beat
    mixed: float | None = None  # --mix-parent: the winning mixture's alpha (best.safetensors is that mixture)

    @classmethod
    def saved(cls, header: dict[str, Any]) -> Progress:
        """The progress recorded in a resume state's header."""
        return cls(header["history"], header["best"], header["best_epoch"],
                   start_phase=header["phase_index"], start_epoch=header["phase_epoch"],
                   parent=header.get("parent"))

    def record(self, row: dict[str, Any], metrics: dict[str, Any], epoch: int) -> bool:
        """Add an epoch's log row; True when its validation score is the best so far (and, with
        ``--replay``, its mIoU on the replayed photos kept aside is within ``REPLAY_TOLERANCE`` of
        the starting model's)."""
        self.history.append(row)
        improved = row["phase"] == SEGMENTATION and self.beats(metrics["score"], row)
        if improved:
            self.best, self.best_epoch = metrics["score"], epoch + 1
        self.epochs_this_run += 1
        return improved

    def beats(self, score: float, row: dict[str, Any]) -> bool:
        """Whether validation ``score`` (its log ``row``) beats the best so far without forgetting."""
        return score > self.best and not self.forgets(row)

    def forgets(self, row: dict[str, Any]) -> bool:
        """True when the epoch's ``replay_miou`` fell more than ``REPLAY_TOLERANCE`` below the parent's."""
        start = (self.parent or {}).get("replay_miou")
        now = row.get("replay_miou")
        return start is not None and now is not None and now < start - REPLAY_TOLERANCE


@dataclass
class Phase:
    """One phase ready to train: the module a step calls (DDP-wrapped under torchrun), the
    parameters it trains, a fresh AdamW and GradScaler, and the learning-rate schedule's length."""

    name: str
    index: int
    epochs: int
    step_module: nn.Module
    params: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    total_steps: int
    warmup_steps: int


def build_run(cfg: FitConfig, rt: Runtime, data: Data, started: float, resume_header: dict[str, Any] | None) -> Run:
    """Seed, then build the model, datasets, loss and sampler for ``data`` (in this order: the
    model's initial weights come from the seeded RNG). ``cfg.out``: the run folder, made."""
    from training.losses import build_loss

    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    random.seed(cfg.seed)
    arch = cfg.architecture
    out = Path(cfg.out)
    kept = bool(cfg.anchor or cfg.mix_parent)  # the parent's weights are needed during or after training
    parent = load_parent(cfg) if cfg.init_from and (resume_header is None or kept or cfg.species_guard) else None
    config, model, pretrained = model_setup.build(cfg, rt, resume_header, parent)
    model.to(rt.device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)

    augment, train_ds = train_dataset(cfg, data, model.normalization)
    val = build_val_set(data.val, cfg.size, model.normalization, rt, composites=cfg.copy_paste > 0)
    replay_val = build_val_set(data.replay_val, cfg.size, model.normalization, rt) if data.replay_val else None
    class_weights = loss_class_weights(cfg, arch.task, data, rt, resume_header)
    guard = cfg.species_guard if arch.task == SEMANTIC and cfg.init_from else 0.0
    criterion = build_loss(cfg.loss, arch.task, class_weights, guard).to(rt.device)
    sampler = train_sampler(cfg, rt, data, train_ds)
    drop_last = len(sampler) >= cfg.batch_size
    steps_per_epoch = max(1, len(sampler) // cfg.batch_size) if drop_last else 1
    return Run(
        cfg, arch, rt, out, data, config, model, pretrained, augment, parent if kept else None,
        _teacher(cfg, config, parent, rt) if guard else None, train_ds, val, replay_val, class_weights, criterion,
        sampler, steps_per_epoch, drop_last, model_setup.phase_plan(cfg), started,
        prior_seconds=float((resume_header or {}).get("seconds", 0.0)),
        hardware=hardware_summary(rt, cfg.channels_last),
        command=" ".join(shlex.quote(a) for a in cfg.argv or sys.argv),
        resumed=resume_header is not None,
    )


def _teacher(cfg: FitConfig, config: dict[str, Any], parent: dict[str, torch.Tensor], rt: Runtime) -> nn.Module:
    """The starting model, frozen and in eval mode, for --species-guard's distillation."""
    from models.registry import build_model

    teacher = build_model(cfg.arch, config)
    teacher.load_state_dict(parent)
    return teacher.to(rt.device).eval().requires_grad_(False)


def load_saved_weights(run: Run, progress: Progress) -> bool:
    """Resuming: load the run's last weights; False (said on stderr) when it has already finished."""
    from safetensors.torch import load_file

    run.model.load_state_dict(load_file(str(run.out / "last.safetensors"), device="cpu"))
    phase_name, phase_total = run.phases[progress.start_phase]
    done = progress.start_phase == len(run.phases) - 1 and progress.start_epoch >= phase_total
    patience = run.cfg.patience
    stopped = phase_name == SEGMENTATION and patience and progress.start_epoch - progress.best_epoch >= patience
    if done or stopped:
        run.rt.log(f"{run.out}: this run already finished ({'early stop' if stopped else 'all epochs'}); "
                   f"best val mIoU {progress.best:.4f} at epoch {progress.best_epoch}")
        return False
    run.rt.log(f"resuming {run.out} at {phase_name} epoch {progress.start_epoch + 1}")
    return True


def announce(run: Run) -> None:
    """Say what is trained on what (and which encoder, and why), and warn when --bf16 would be emulated on this CPU."""
    cfg, rt = run.cfg, run.rt
    options = ", ".join(f"{key} {value}" for key, value in run.config.items())
    rt.log(f"{cfg.arch} ({options}): {run.data.summary['train_images']} photos to train on, "
           f"{run.data.summary['val_images']} kept aside to validate, at {cfg.size} px on "
           f"{run.hardware['device']} x{rt.world} ({run.hardware['precision']}); writing {run.out}")
    encoder = cfg.encoder_line(run.resumed)
    if encoder is not None:
        rt.log(encoder)
    if cfg.bf16 and rt.device.type == "cpu" and not cpu_has_fast_bf16():
        rt.log(f"WARNING: --bf16: this CPU ({torch.backends.cpu.get_cpu_capability()}) has no native bfloat16 "
               "(AVX512-BF16/AMX); bf16 autocast is emulated and MUCH slower (measured 10-37x on AVX2). "
               "Use --channels-last alone.")
