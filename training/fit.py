"""``petseg-train fit``: train any registered architecture on labelled pet photos.

One command trains, validates each epoch on the seeded validation split of TrainVal (never
Test), and writes into ``--out`` (default ``runs/<arch>-<time>``, where the app's discovery looks):

- ``last.safetensors`` each epoch and ``best.safetensors`` (best validation mIoU; for the prompt
  model the mean IoU after 3 simulated clicks), in the PetSeg checkpoint format with full metadata;
- ``.last.state.safetensors``: everything else ``--resume`` needs (optimizer moments, scaler,
  RNG states, epoch, step, best score, history), in safetensors (never pickle): tensors in the
  file, scalars and JSON in its metadata. The leading dot keeps the app's checkpoint discovery
  from listing it as an unusable model;
- ``log.csv`` (one row per epoch) and ``curves.png`` (loss and IoU curves).

The same command scales out under ``torchrun --nproc_per_node N`` (DistributedDataParallel,
NCCL on CUDA, gloo on CPU; ``--batch-size`` is per process; only rank 0 writes).
"""

from __future__ import annotations

import argparse
import inspect
import math
import os
import random
import shlex
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from models.errors import one_line
from training.fit_data import (
    Data,
    FitError,
    loss_class_weights,
    prepare_samples,
    train_dataset,
    train_sampler,
)
from training.run_log import RunLog
from training.runtime import (
    Runtime,
    autocast_context,
    batch_to_device,
    cpu_has_fast_bf16,
    hardware_summary,
    setup_runtime,
)
from training.train_state import (
    read_train_state,
    restore_optimizer,
    save_train_state,
    set_rng_state,
)
from training.validation import ValSet, build_val_set, validate_prompt, validate_semantic

ARCHS = ("unet", "autoencoder", "clip", "clip_unet", "prompt_unet")
CLIP_ARCHS = ("clip", "clip_unet")
STATE_NAME = ".last.state.safetensors"


# --------------------------------------------------------------------------- arguments


def add_fit_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``fit`` subcommand's options."""
    p = parser
    p.add_argument("--arch", required=True, choices=ARCHS, help="architecture to train")
    p.add_argument("--data", required=True, help="pet data root (processed, Oxford or images+masks layout)")
    p.add_argument("--out", default=None, help="output folder (default runs/<arch>-<YYYYmmdd-HHMMSS>)")
    p.add_argument("--epochs", type=int, default=30, help="training epochs (segmentation phase)")
    p.add_argument("--batch-size", type=int, default=8, help="images per step (per process under torchrun)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak AdamW learning rate")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--warmup-epochs", type=float, default=1.0, help="linear warm-up length (then cosine)")
    p.add_argument("--grad-clip", type=float, default=1.0, help="gradient norm clip (0 = off)")
    p.add_argument("--size", type=int, default=256, help="square model input in pixels (multiple of 32)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="data loader worker processes")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N")
    p.add_argument(
        "--resume", nargs="?", const="auto", default=None, metavar="RUN",
        help="continue a run: a run folder or its last.safetensors (bare --resume: --out's; "
        "starts fresh when there is nothing to resume yet)",
    )
    p.add_argument("--encoder", choices=("scratch", "effnet_lite0"), default="scratch",
                   help="unet/prompt_unet encoder: from scratch or ImageNet EfficientNet-Lite0")
    p.add_argument("--base", type=int, default=None, help="model base width (architecture default if omitted)")
    p.add_argument("--depth", type=int, default=None, help="model depth (architecture default if omitted)")
    p.add_argument("--clip-weights", default=None, metavar="PATH|openai|none",
                   help="clip/clip_unet: RN50 weights file, 'openai' (open_clip cache), or 'none' "
                   "(random init: tests and smoke runs only)")
    p.add_argument("--loss", choices=("ce_dice", "focal_dice", "ce"), default="ce_dice",
                   help="semantic loss (the prompt model always uses BCE + Dice)")
    p.add_argument("--class-weights", choices=("none", "auto"), default="none",
                   help="auto: inverse-sqrt pixel frequency over the training masks")
    p.add_argument("--cat-boost", type=float, default=1.0,
                   help="oversample cat photos by this factor (2 balances Oxford-IIIT Pet)")
    p.add_argument("--augment", choices=("none", "light", "strong"), default="strong")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast (CPU or CUDA)")
    p.add_argument("--no-amp", action="store_true", help="CUDA: disable fp16 autocast + GradScaler")
    p.add_argument("--channels-last", action="store_true", help="channels_last memory format")
    p.add_argument("--patience", type=int, default=0, help="early stop after N epochs without a better val mIoU (0 = off)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="share of TrainVal held out for validation")
    p.add_argument("--limit", type=int, default=None,
                   help="use only N training images (and at most max(2, N//4) validation images): smoke runs")
    p.add_argument("--ae-epochs", type=int, default=10, help="autoencoder: reconstruction (phase 1) epochs")
    p.add_argument("--clicks-rounds", type=int, default=3, help="prompt_unet: max corrective click rounds per batch")
    p.add_argument("--stop-after-epochs", type=int, default=None, metavar="N",
                   help="stop this invocation after N epochs (continue later with --resume)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")


# Options a resumed run takes from the command line when given there; all others come from
# the saved run (changing them would not continue the same training).
RESUME_OVERRIDABLE = {"epochs", "patience", "data", "workers"}  # workers: the augmentation seeds depend on it
# Options of one invocation only: never taken from the saved run.
INVOCATION_ONLY = {"device", "stop_after_epochs", "no_progress", "resume", "out", "explicit_options", "argv"}


# --------------------------------------------------------------------------- model


def model_config(args: argparse.Namespace) -> dict[str, Any]:
    """The builder config from the options, keeping only keywords the builder accepts."""
    from models.registry import get_architecture

    builder = get_architecture(args.arch).builder
    params = inspect.signature(builder).parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    wanted = {"base": args.base, "depth": args.depth}
    if args.arch in ("unet", "prompt_unet"):
        wanted["encoder"] = args.encoder
    config = {}
    for key, value in wanted.items():
        if value is None:
            continue
        if key in params or accepts_any:
            config[key] = value
        elif key != "encoder" or value != "scratch":
            raise FitError(f"--{key} is not an option of architecture {args.arch}")
    return config


def load_pretrained(model: nn.Module, args: argparse.Namespace, rt: Runtime) -> str:
    """Load pretrained weights the options ask for; returns a description for the metadata."""
    if args.arch in CLIP_ARCHS:
        source = args.clip_weights
        if source is None:
            raise FitError(
                f"{args.arch} needs --clip-weights: a local RN50 weights file, 'openai' (open_clip's "
                "cache), or 'none' for a random-init tower (tests and smoke runs only)"
            )
        if source.lower() == "none":
            if rt.main:
                bar = "!" * 78
                print(f"{bar}\nWARNING: --clip-weights none: the CLIP tower is RANDOMLY INITIALISED and "
                      f"frozen.\nThis model is only good for tests and smoke runs.\n{bar}", file=sys.stderr)
            return "none (random init)"
        try:
            model.load_pretrained(source)
        except Exception as error:  # the model's own message says what is missing and how to fix it
            raise FitError(one_line(error)) from None
        return source
    if getattr(args, "encoder", "scratch") == "effnet_lite0" and args.arch in ("unet", "prompt_unet"):
        if hasattr(model, "load_pretrained"):
            try:
                model.load_pretrained(None)
            except Exception as error:
                raise FitError(one_line(error)) from None
            return "effnet_lite0 imagenet"
    return "none"


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def configure_phase(model: nn.Module, arch: str, phase: str, config: dict[str, Any]) -> None:
    """Autoencoder: phase 1 trains encoder + reconstruction decoder; phase 2 the segmentation
    decoder on the frozen encoder (or fine-tunes it with config freeze_encoder=False).

    Parts a phase does not use get ``requires_grad=False`` so that neither AdamW nor DDP sees them.
    """
    if arch != "autoencoder":
        return
    if phase == "reconstruction":
        model.set_encoder_frozen(False)
        model.reconstruction.requires_grad_(True)
        model.decoder.requires_grad_(False)
    else:
        model.set_encoder_frozen(config.get("freeze_encoder", True))
        model.reconstruction.requires_grad_(False)
        model.decoder.requires_grad_(True)


class _Reconstruct(nn.Module):
    """Autoencoder phase 1 as a module whose forward DDP can wrap."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.reconstruct(images)


# --------------------------------------------------------------------------- schedule


def lr_at(step: int, total_steps: int, warmup_steps: int, base_lr: float) -> float:
    """Linear warm-up then cosine decay to 1% of ``base_lr``, per optimizer step."""
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    progress = min(max(progress, 0.0), 1.0)
    return base_lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress)))


# --------------------------------------------------------------------------- command


def _resolve_resume(args: argparse.Namespace) -> Path | None:
    """The run folder to resume from, or None to start fresh."""
    if args.resume is None:
        return None
    if args.resume == "auto":
        if args.out is None:
            raise FitError("bare --resume needs --out (the run folder to continue)")
        run = Path(args.out)
    else:
        run = Path(args.resume)
        if run.is_file():
            run = run.parent
    if (run / STATE_NAME).is_file():
        return run
    if args.resume == "auto":
        return None  # nothing saved yet: start fresh in --out
    raise FitError(f"--resume {args.resume}: no resume state ({STATE_NAME}) in {run}")


def run_fit(args: argparse.Namespace) -> int:
    """Train as ``args`` say; returns the exit code. Raises FitError for user errors."""
    started = time.time()
    args = argparse.Namespace(**vars(args))
    explicit = set(getattr(args, "explicit_options", ()) or ())
    resume_dir = _resolve_resume(args)
    resume_tensors, resume_header = None, None
    if resume_dir is not None:
        try:
            resume_tensors, resume_header = read_train_state(resume_dir / STATE_NAME)
        except ValueError as error:
            raise FitError(str(error)) from None
        saved = resume_header["args"]
        changed = []
        for key, value in saved.items():
            if key in INVOCATION_ONLY or (key in RESUME_OVERRIDABLE and key in explicit):
                continue
            if key in explicit and getattr(args, key, None) != value and key != "explicit_options":
                changed.append(key)
            setattr(args, key, value)
        args.out = str(resume_dir)
        if changed and os.environ.get("RANK", "0") == "0":
            names = ", ".join("--" + c.replace("_", "-") for c in changed)
            print(f"note: --resume keeps the run's saved {names} (only --epochs, --workers, --device, "
                  "--patience, --stop-after-epochs, --data can change)", file=sys.stderr)
    _check_args(args)
    rt = setup_runtime(args.device)
    try:
        return _fit(args, rt, started, resume_tensors, resume_header)
    finally:
        if rt.distributed and dist.is_initialized():
            dist.destroy_process_group()


def _check_args(args: argparse.Namespace) -> None:
    """FitError for option values (and a CUDA --device) that cannot work."""
    if args.size <= 0 or args.size % 32:
        raise FitError(f"--size {args.size}: must be a positive multiple of 32")
    if args.epochs < 1 or args.batch_size < 1:
        raise FitError("--epochs and --batch-size must be at least 1")
    if args.arch == "autoencoder" and args.ae_epochs < 0:
        raise FitError("--ae-epochs must be 0 or more")
    if not 0 < args.val_fraction < 1:
        raise FitError(f"--val-fraction {args.val_fraction}: must be between 0 and 1")
    if args.arch in CLIP_ARCHS and args.clip_weights is None:
        raise FitError(
            f"{args.arch} needs --clip-weights PATH|openai|none (a local open_clip RN50 weights file, "
            "'openai' from open_clip's cache, or 'none' for random init: tests and smoke runs only)"
        )
    if args.encoder != "scratch" and args.arch not in ("unet", "prompt_unet"):
        raise FitError(f"--encoder {args.encoder} is only for unet and prompt_unet")
    if args.device != "auto" and torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        raise FitError(f"--device {args.device}: CUDA is not available here")


# --------------------------------------------------------------------------- the training loop


@dataclass
class Run:
    """What every epoch of one ``fit`` invocation shares; built once by :func:`_build_run`."""

    args: argparse.Namespace
    rt: Runtime
    task: str  # the architecture's task: "semantic" or "prompt"
    out: Path
    data: Data
    config: dict[str, Any]
    model: nn.Module
    pretrained: str
    augment: Any  # training.augment's pipeline, or None
    train_ds: torch.utils.data.Dataset
    val: ValSet
    class_weights: list[float] | None
    criterion: nn.Module
    sampler: torch.utils.data.Sampler
    steps_per_epoch: int
    drop_last: bool
    phases: list[tuple[str, int]]  # (name, epochs): the autoencoder's reconstruction, then segmentation
    started: float  # time.time() when this invocation started
    prior_seconds: float  # time spent by the invocations this one resumes
    hardware: dict[str, Any]
    command: str


@dataclass
class Progress:
    """The run's record so far: saved in the resume state, advanced by every epoch."""

    history: list[dict[str, Any]] = field(default_factory=list)  # one log row per epoch
    best: float = -1.0  # best validation mIoU
    best_epoch: int = 0  # its epoch within the segmentation phase
    start_phase: int = 0  # where this invocation starts: a phase index...
    start_epoch: int = 0  # ...and the epochs already done in that phase
    epochs_this_run: int = 0

    @classmethod
    def saved(cls, header: dict[str, Any]) -> Progress:
        """The progress recorded in a resume state's header."""
        return cls(header["history"], header["best"], header["best_epoch"],
                   start_phase=header["phase_index"], start_epoch=header["phase_epoch"])

    def record(self, row: dict[str, Any], metrics: dict[str, Any], epoch: int) -> bool:
        """Add an epoch's log row; True when its validation mIoU is the best so far."""
        self.history.append(row)
        improved = row["phase"] == "segmentation" and metrics["miou"] > self.best
        if improved:
            self.best, self.best_epoch = metrics["miou"], epoch + 1
        self.epochs_this_run += 1
        return improved


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


def _fit(args: argparse.Namespace, rt: Runtime, started: float, resume_tensors: dict[str, torch.Tensor] | None,
         resume_header: dict[str, Any] | None) -> int:
    """Build the run, then train its phases epoch by epoch (from the resume state when given)."""
    run = _build_run(args, rt, started, resume_header)
    progress = Progress() if resume_header is None else Progress.saved(resume_header)
    if resume_header is not None and not _load_saved_weights(run, progress):
        return 0
    _announce(run)
    run_log = RunLog(run.out)
    for index in range(progress.start_phase, len(run.phases)):
        resuming = resume_header is not None and index == progress.start_phase
        phase, first_epoch = _start_phase(run, index, (resume_tensors, resume_header) if resuming else None)
        if _train_phase(run, phase, first_epoch, progress, run_log):
            break
    if rt.main:
        run_log.finish(progress.history)
    rt.log(f"done: best val mIoU {progress.best:.4f} (epoch {progress.best_epoch}); checkpoints in {run.out}")
    return 0


def _build_run(args: argparse.Namespace, rt: Runtime, started: float, resume_header: dict[str, Any] | None) -> Run:
    """Seed, then find the photos and build the model, datasets, loss and sampler (in this order:
    the model's initial weights come from the seeded RNG)."""
    from models.registry import get_architecture
    from training.losses import build_loss

    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    random.seed(args.seed)
    task = get_architecture(args.arch).task
    data = prepare_samples(args)
    out = _output_folder(args, rt)
    config, model, pretrained = _build_model(args, rt, resume_header)
    if rt.main:
        out.mkdir(parents=True, exist_ok=True)
    model.to(rt.device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)

    augment, train_ds = train_dataset(args, data, model.normalization)
    val = build_val_set(data.val, args.size, model.normalization, rt)
    class_weights = loss_class_weights(args, task, data, rt, resume_header)
    criterion = build_loss(args.loss, task, class_weights).to(rt.device)
    sampler = train_sampler(args, rt, data, train_ds)
    drop_last = len(sampler) >= args.batch_size
    steps_per_epoch = max(1, len(sampler) // args.batch_size) if drop_last else 1
    phases = [("reconstruction", args.ae_epochs)] if args.arch == "autoencoder" and args.ae_epochs > 0 else []
    phases.append(("segmentation", args.epochs))
    return Run(
        args, rt, task, out, data, config, model, pretrained, augment, train_ds, val, class_weights, criterion,
        sampler, steps_per_epoch, drop_last, phases, started,
        prior_seconds=float((resume_header or {}).get("seconds", 0.0)),
        hardware=hardware_summary(rt, args),
        command=" ".join(shlex.quote(a) for a in getattr(args, "argv", None) or sys.argv),
    )


def _output_folder(args: argparse.Namespace, rt: Runtime) -> Path:
    """--out, or ``runs/<arch>-<YYYYmmdd-HHMMSS>`` with one time stamp for all ranks; kept in args.out."""
    out = Path(args.out) if args.out else Path("runs") / f"{args.arch}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    if rt.distributed:
        holder = [str(out)]
        dist.broadcast_object_list(holder, src=0)
        out = Path(holder[0])
    args.out = str(out)
    return out


def _build_model(args: argparse.Namespace, rt: Runtime,
                 resume_header: dict[str, Any] | None) -> tuple[dict[str, Any], nn.Module, str]:
    """The builder config, the model with any pretrained weights, and where those came from."""
    from models.registry import build_model

    config = model_config(args)
    try:
        model = build_model(args.arch, config)
    except FitError:
        raise
    except Exception as error:
        raise FitError(f"cannot build {args.arch} with {config}: {one_line(error)}") from None
    pretrained = load_pretrained(model, args, rt) if resume_header is None else resume_header.get("pretrained", "none")
    return config, model, pretrained


def _load_saved_weights(run: Run, progress: Progress) -> bool:
    """Resuming: load the run's last weights; False (said on stderr) when it has already finished."""
    from safetensors.torch import load_file

    run.model.load_state_dict(load_file(str(run.out / "last.safetensors"), device="cpu"))
    phase_name, phase_total = run.phases[progress.start_phase]
    done = progress.start_phase == len(run.phases) - 1 and progress.start_epoch >= phase_total
    patience = run.args.patience
    stopped = phase_name == "segmentation" and patience and progress.start_epoch - progress.best_epoch >= patience
    if done or stopped:
        run.rt.log(f"{run.out}: this run already finished ({'early stop' if stopped else 'all epochs'}); "
                   f"best val mIoU {progress.best:.4f} at epoch {progress.best_epoch}")
        return False
    run.rt.log(f"resuming {run.out} at {phase_name} epoch {progress.start_epoch + 1}")
    return True


def _announce(run: Run) -> None:
    """Say what is trained on what, and warn when --bf16 would be emulated on this CPU."""
    args, rt = run.args, run.rt
    rt.log(f"{args.arch} {run.config}: {run.data.summary['train_images']} train / {run.data.summary['val_images']} "
           f"val photos at {args.size} px on {run.hardware['device']} x{rt.world} ({run.hardware['precision']}); "
           f"writing {run.out}")
    if args.bf16 and rt.device.type == "cpu" and not cpu_has_fast_bf16():
        rt.log(f"WARNING: --bf16: this CPU ({torch.backends.cpu.get_cpu_capability()}) has no native bfloat16 "
               "(AVX512-BF16/AMX); bf16 autocast is emulated and MUCH slower (measured 10-37x on AVX2). "
               "Use --channels-last alone.")


def _start_phase(run: Run, index: int,
                 resume: tuple[dict[str, torch.Tensor], dict[str, Any]] | None) -> tuple[Phase, int]:
    """Phase ``index`` ready to train, and its first epoch. With ``resume`` (the saved state's
    tensors and header) the optimizer, scaler and RNGs continue exactly where the saved run stopped."""
    from training.prompt_training import PromptTrainingStep

    args, rt, model = run.args, run.rt, run.model
    name, epochs = run.phases[index]
    configure_phase(model, args.arch, name, run.config)
    if run.task == "prompt":
        step_module: nn.Module = PromptTrainingStep(model)
    elif name == "reconstruction":
        step_module = _Reconstruct(model)
    else:
        step_module = model
    params = trainable_parameters(model)
    if rt.distributed:
        step_module = nn.parallel.DistributedDataParallel(
            step_module, device_ids=[rt.device.index] if rt.device.type == "cuda" else None
        )
    use_scaler = rt.device.type == "cuda" and not args.no_amp and not args.bf16
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
    total_steps = run.steps_per_epoch * epochs
    warmup_steps = min(int(round(args.warmup_epochs * run.steps_per_epoch)), total_steps // 2)
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


def _train_phase(run: Run, phase: Phase, first_epoch: int, progress: Progress, run_log: RunLog) -> bool:
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
        metrics = _validate(run, row) if phase.name == "segmentation" else {}
        row["seconds"] = round(time.time() - t0, 2)
        improved = progress.record(row, metrics, epoch)
        if rt.main:
            _save_epoch(run, phase, epoch, metrics, improved, progress)
            run_log.update(progress.history)
            rt.log(_epoch_summary(run, phase, epoch, train_loss, metrics) + f" [{row['seconds']:.1f} s]")
        if rt.distributed:
            dist.barrier()
        reason = _stop_reason(run, phase, epoch, progress)
        if reason:
            rt.log(reason)
            return True
    return False


def _train_epoch(run: Run, phase: Phase, epoch: int) -> tuple[float, int, float]:
    """One pass over this rank's training photos; returns the mean loss and the step count over
    all ranks, and the last learning rate."""
    args, rt = run.args, run.rt
    epoch_seed = args.seed * 100003 + epoch + 1000 * phase.index
    run.sampler.set_epoch(epoch + 1000 * phase.index)
    loader = torch.utils.data.DataLoader(
        run.train_ds, batch_size=args.batch_size, sampler=run.sampler, num_workers=args.workers,
        drop_last=run.drop_last, pin_memory=rt.device.type == "cuda",
        generator=torch.Generator().manual_seed(epoch_seed), persistent_workers=False,
    )
    if args.workers == 0 and hasattr(run.augment, "compose"):
        # in-process augmentation: reseed per epoch so that --resume continues exactly
        # (in workers, training.augment reseeds from the worker seed, itself per-epoch seeded)
        run.augment.compose.set_random_seed(epoch_seed % 2**32)
    run.model.train()
    loss_sum, steps = 0.0, 0
    batches, bar = loader, None
    if rt.main and not args.no_progress:
        from tqdm import tqdm

        batches = bar = tqdm(loader, desc=f"{phase.name[:5]} {epoch + 1}/{phase.epochs}", leave=False,
                             dynamic_ncols=True, file=sys.stderr)
    for i, batch in enumerate(batches):
        lr = lr_at(epoch * run.steps_per_epoch + i, phase.total_steps, phase.warmup_steps, args.lr)
        for group in phase.optimizer.param_groups:
            group["lr"] = lr
        images, masks = batch_to_device(batch, rt.device, args.channels_last)
        with autocast_context(rt.device, args):
            loss = _batch_loss(run, phase, images, masks)
        phase.optimizer.zero_grad(set_to_none=True)
        phase.scaler.scale(loss).backward()
        if args.grad_clip > 0:
            phase.scaler.unscale_(phase.optimizer)
            torch.nn.utils.clip_grad_norm_(phase.params, args.grad_clip)
        phase.scaler.step(phase.optimizer)
        phase.scaler.update()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FitError(f"training diverged (loss {value}) at {phase.name} epoch {epoch + 1}; lower --lr")
        loss_sum += value
        steps += 1
        if bar is not None:
            bar.set_postfix(loss=f"{value:.4f}", lr=f"{lr:.2e}")
    if bar is not None:
        bar.close()
    loss_sum, steps = rt.all_reduce_sum([loss_sum, steps])
    return loss_sum / max(steps, 1), int(steps), lr


def _batch_loss(run: Run, phase: Phase, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """The phase's loss on one batch (the prompt model draws its click rounds and seed here)."""
    if run.task == "prompt":
        rounds = random.randint(0, max(0, run.args.clicks_rounds))
        seed = int(np.random.randint(2**31 - 1))
        logits, target = phase.step_module(images, masks, rounds, seed)
        return run.criterion(logits, target)
    if phase.name == "reconstruction":
        recon = phase.step_module(images)
        return nn.functional.mse_loss(recon.float(), images.float())
    return run.criterion(phase.step_module(images), masks)


def _validate(run: Run, row: dict[str, Any]) -> dict[str, Any]:
    """The epoch's validation metrics; their log columns go into ``row``."""
    if run.task == "prompt":
        metrics = validate_prompt(run.model, run.val, run.criterion, run.args, run.rt)
        row.update(iou_1click=round(metrics["iou_1click"], 5), iou_3click=round(metrics["iou_3click"], 5))
    else:
        metrics = validate_semantic(run.model, run.val, run.criterion, run.args, run.rt)
        for name, value in metrics["per_class_iou"].items():
            row[f"iou_{name}"] = None if value is None else round(value, 5)
    row.update(val_loss=round(metrics["val_loss"], 6), val_miou=round(metrics["miou"], 5))
    return metrics


def _save_epoch(run: Run, phase: Phase, epoch: int, metrics: dict[str, Any], improved: bool,
                progress: Progress) -> None:
    """Rank 0: ``last.safetensors`` (and ``best.safetensors`` when ``improved``), then the resume state."""
    from models.checkpoint import make_metadata, save_checkpoint

    args = run.args
    meta_metrics = {k: v for k, v in metrics.items() if k != "val_loss"}
    meta_metrics["val_loss"] = metrics.get("val_loss")
    metadata = make_metadata(
        args.arch, run.config, args.size, run.model.normalization,
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
        "args": {k: v for k, v in vars(args).items() if k not in ("explicit_options", "argv", "func")},
        "history": progress.history, "best": progress.best, "best_epoch": progress.best_epoch,
        "phase_index": phase.index, "phase_epoch": epoch + 1, "phase_epochs": phase.epochs,
        "global_step": (epoch + 1) * run.steps_per_epoch, "class_weights": run.class_weights,
        "pretrained": run.pretrained, "seconds": metadata["seconds"], "world_size": run.rt.world,
    }
    save_train_state(run.out / STATE_NAME, phase.optimizer, phase.scaler, info)


def _training_metadata(run: Run, phase: Phase, epoch: int, progress: Progress) -> dict[str, Any]:
    """The checkpoint metadata's ``training`` section: data, phase, epoch and the options that matter."""
    args, prompt = run.args, run.task == "prompt"
    return {
        **run.data.summary,
        "phase": phase.name,
        "epoch": epoch + 1,
        "epochs": phase.epochs,
        "ae_epochs": args.ae_epochs if args.arch == "autoencoder" else None,
        "total_epochs_done": len(progress.history),
        "best_epoch": progress.best_epoch,
        "loss": "bce_dice" if prompt else args.loss,
        "class_weights": run.class_weights,
        "cat_boost": args.cat_boost,
        "augment": args.augment,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "clicks_rounds": args.clicks_rounds if prompt else None,
        "pretrained": run.pretrained,
        "encoder": run.config.get("encoder"),
    }


def _epoch_summary(run: Run, phase: Phase, epoch: int, train_loss: float, metrics: dict[str, Any]) -> str:
    """The epoch's line on stderr (without its duration)."""
    summary = f"{phase.name} epoch {epoch + 1}/{phase.epochs}: train loss {train_loss:.4f}"
    if metrics:
        summary += f", val loss {metrics['val_loss']:.4f}, val mIoU {metrics['miou']:.4f}"
        if run.task == "prompt":
            summary += f" (IoU @1 click {metrics['iou_1click']:.4f})"
    return summary


def _stop_reason(run: Run, phase: Phase, epoch: int, progress: Progress) -> str | None:
    """Why the run stops after this epoch (early stop, --stop-after-epochs), or None."""
    args = run.args
    if phase.name == "segmentation" and args.patience and epoch + 1 - progress.best_epoch >= args.patience:
        return (f"early stop: no better val mIoU for {args.patience} epochs "
                f"(best {progress.best:.4f} at epoch {progress.best_epoch})")
    last_epoch = epoch + 1 == phase.epochs and phase.index == len(run.phases) - 1
    if args.stop_after_epochs and progress.epochs_this_run >= args.stop_after_epochs and not last_epoch:
        return f"stopping after {progress.epochs_this_run} epochs as asked; continue with --resume {run.out}"
    return None
