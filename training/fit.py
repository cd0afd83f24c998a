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
import contextlib
import csv
import inspect
import io
import math
import os
import platform
import random
import shlex
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from models.files import atomic_path
from training.train_state import (
    read_train_state,
    restore_optimizer,
    save_train_state,
    set_rng_state,
)

ARCHS = ("unet", "autoencoder", "clip", "clip_unet", "prompt_unet")
CLIP_ARCHS = ("clip", "clip_unet")
CLASS_NAMES = ("background", "cat", "dog")
VOID = 255
STATE_NAME = ".last.state.safetensors"
PLOT_INTERVAL = 60.0  # seconds between curve plots during a run (always plotted at its end)
LOG_FIELDS = (
    "epoch", "phase", "train_loss", "val_loss", "val_miou",
    "iou_background", "iou_cat", "iou_dog", "iou_1click", "iou_3click",
    "lr", "seconds", "world_size", "train_steps",
)


class FitError(Exception):
    """A problem the user can fix; ``str(error)`` is a one-line message."""


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


# --------------------------------------------------------------------------- distributed


@dataclass
class Runtime:
    rank: int
    world: int
    local_rank: int
    device: torch.device
    distributed: bool

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_runtime(device_arg: str) -> Runtime:
    """Detect torchrun (WORLD_SIZE/RANK/LOCAL_RANK), pick the device, init the process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_arg == "auto":
        device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(device_arg)
        if device.type == "cuda" and device.index is None and world > 1:
            device = torch.device(f"cuda:{local_rank}")
        if device.type == "cuda" and not torch.cuda.is_available():
            raise FitError(f"--device {device_arg}: CUDA is not available here")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    distributed = world > 1
    if distributed and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Runtime(rank, world, local_rank, device, distributed)


def all_reduce_sum(values: list[float], rt: Runtime) -> list[float]:
    if not rt.distributed:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=rt.device if rt.device.type == "cuda" else "cpu")
    dist.all_reduce(t)
    return t.cpu().tolist()


def log(rt: Runtime, message: str) -> None:
    if rt.main:
        print(message, file=sys.stderr, flush=True)


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
            raise FitError(_one_line(error)) from None
        return source
    if getattr(args, "encoder", "scratch") == "effnet_lite0" and args.arch in ("unet", "prompt_unet"):
        if hasattr(model, "load_pretrained"):
            try:
                model.load_pretrained(None)
            except Exception as error:
                raise FitError(_one_line(error)) from None
            return "effnet_lite0 imagenet"
    return "none"


def _one_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return " ".join(text.split())


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


# --------------------------------------------------------------------------- data


@dataclass
class Data:
    train: list
    val: list
    summary: dict[str, Any]


def prepare_samples(args: argparse.Namespace) -> Data:
    from training.data import detect_layout, find_samples, train_val_split

    root = Path(args.data).expanduser()
    if not root.is_dir():
        raise FitError(f"--data {args.data}: no such folder")
    try:
        layout = detect_layout(root)
        samples = find_samples(root, "TrainVal")
    except ValueError as error:
        raise FitError(_one_line(error)) from None
    labelled = [s for s in samples if s.mask_path is not None]
    if not labelled:
        raise FitError(f"--data {args.data}: no labelled photos found")
    train, val = train_val_split(labelled, args.val_fraction, args.seed)
    if args.limit:
        rng = np.random.default_rng(args.seed)
        train = [train[i] for i in sorted(rng.permutation(len(train))[: args.limit])]
        val = [val[i] for i in sorted(rng.permutation(len(val))[: max(2, args.limit // 4)])]
    if not train:
        raise FitError("no training photos left after the validation split")
    if not val:
        raise FitError("no validation photos: raise --val-fraction or give more photos")

    def species(items):
        counts: dict[str, int] = {}
        for s in items:
            counts[s.species or "unknown"] = counts.get(s.species or "unknown", 0) + 1
        return dict(sorted(counts.items()))

    summary = {
        "data_root": str(root.resolve()),
        "layout": layout,
        "split": "TrainVal",
        "train_images": len(train),
        "val_images": len(val),
        "val_fraction": args.val_fraction,
        "split_seed": args.seed,
        "limit": args.limit,
        "species": {"train": species(train), "val": species(val)},
        "unlabelled_skipped": len(samples) - len(labelled),
    }
    return Data(train, val, summary)


def pixel_class_counts(samples) -> list[int]:
    from training.data import load_labels

    counts = np.zeros(3, dtype=np.int64)
    for s in samples:
        mask = load_labels(s)
        counts += np.bincount(mask[mask != VOID].ravel(), minlength=3)[:3]
    return counts.tolist()


class WeightedDistributedSampler(torch.utils.data.Sampler):
    """Weighted sampling with replacement, one seeded draw per epoch, split across ranks."""

    def __init__(self, weights, num_replicas: int, rank: int, seed: int) -> None:
        self.weights = torch.as_tensor(weights, dtype=torch.double)
        self.num_replicas, self.rank, self.seed = num_replicas, rank, seed
        self.num_samples = math.ceil(len(self.weights) / num_replicas)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        total = self.num_samples * self.num_replicas
        indices = torch.multinomial(self.weights, total, replacement=True, generator=g).tolist()
        return iter(indices[self.rank :: self.num_replicas])

    def __len__(self) -> int:
        return self.num_samples


# --------------------------------------------------------------------------- schedule


def lr_at(step: int, total_steps: int, warmup_steps: int, base_lr: float) -> float:
    """Linear warm-up then cosine decay to 1% of ``base_lr``, per optimizer step."""
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    progress = min(max(progress, 0.0), 1.0)
    return base_lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress)))


# --------------------------------------------------------------------------- steps


def cpu_has_fast_bf16() -> bool:
    """Whether oneDNN has native bfloat16 kernels on this CPU (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # older or unusual builds
        return False


def autocast_context(device: torch.device, args: argparse.Namespace):
    if args.bf16:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if device.type == "cuda" and not args.no_amp:
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def _to_device(batch: dict, device: torch.device, channels_last: bool):
    images = batch["image"].to(device, non_blocking=True)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, batch["mask"].to(device, non_blocking=True)


@dataclass
class ValSet:
    dataset: Any
    masks: list[np.ndarray]  # original-resolution label masks
    boxes: list[Any]  # Letterbox per image
    indices: list[int]  # this rank's share


def build_val_set(samples, size: int, normalization, rt: Runtime) -> ValSet:
    from training.data import SegmentationDataset, load_labels
    from training.geometry import letterbox_params

    dataset = SegmentationDataset(samples, size, normalization, augment=None)
    indices = list(range(rt.rank, len(samples), rt.world))
    masks: list = [None] * len(samples)
    boxes: list = [None] * len(samples)
    for i in indices:
        masks[i] = load_labels(samples[i])
        boxes[i] = letterbox_params(masks[i].shape[0], masks[i].shape[1], size)
    return ValSet(dataset, masks, boxes, indices)


def _val_batches(val: ValSet, batch_size: int):
    subset = torch.utils.data.Subset(val.dataset, val.indices)
    return torch.utils.data.DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=0)


@torch.no_grad()
def validate_semantic(model, val: ValSet, criterion, args, rt: Runtime) -> dict[str, Any]:
    from training.geometry import unletterbox

    model.eval()
    matrix = np.zeros((3, 3), dtype=np.int64)
    loss_sum, batches = 0.0, 0
    for batch in _val_batches(val, args.batch_size):
        images, masks = _to_device(batch, rt.device, args.channels_last)
        with autocast_context(rt.device, args):
            logits = model(images)
        loss_sum += float(criterion(logits.float(), masks))
        batches += 1
        logits_np = logits.float().permute(0, 2, 3, 1).cpu().numpy()
        for k, index in enumerate(batch["index"].tolist()):
            target = val.masks[index]
            pred = unletterbox(np.ascontiguousarray(logits_np[k]), val.boxes[index]).argmax(-1)
            valid = target != VOID
            matrix += np.bincount(target[valid].astype(np.int64) * 3 + pred[valid], minlength=9).reshape(3, 3)
    reduced = all_reduce_sum([loss_sum, batches, *matrix.ravel().tolist()], rt)
    loss_sum, batches = reduced[0], reduced[1]
    matrix = np.asarray(reduced[2:], dtype=np.float64).reshape(3, 3)
    tp = np.diag(matrix)
    union = matrix.sum(0) + matrix.sum(1) - tp
    iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
    present = ~np.isnan(iou)
    miou = float(iou[present].mean()) if present.any() else 0.0
    return {
        "val_loss": loss_sum / max(batches, 1),
        "miou": miou,
        "per_class_iou": {name: (None if np.isnan(v) else float(v)) for name, v in zip(CLASS_NAMES, iou)},
    }


@torch.no_grad()
def validate_prompt(model, val: ValSet, criterion, args, rt: Runtime) -> dict[str, Any]:
    from training.geometry import unletterbox
    from training.prompt_training import binary_target, simulate_eval_clicks

    model.eval()
    sums = np.zeros(3)  # iou after 1 click, after 3 clicks, images
    loss_sum, batches = 0.0, 0
    for batch in _val_batches(val, args.batch_size):
        images, masks = _to_device(batch, rt.device, args.channels_last)
        with autocast_context(rt.device, args):
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
    reduced = all_reduce_sum([loss_sum, batches, *sums.tolist()], rt)
    n = max(reduced[4], 1)
    iou1, iou3 = reduced[2] / n, reduced[3] / n
    return {"val_loss": reduced[0] / max(reduced[1], 1), "miou": iou3, "iou_1click": iou1, "iou_3click": iou3}


# --------------------------------------------------------------------------- outputs


def write_log(out: Path, history: list[dict[str, Any]]) -> None:
    with atomic_path(out / "log.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=LOG_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for row in history:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in LOG_FIELDS})


def write_curves(out: Path, history: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = list(range(1, len(history) + 1))
    fig, (ax_loss, ax_iou) = plt.subplots(1, 2, figsize=(10, 4))
    for phase in sorted({r["phase"] for r in history}):
        xs = [i for i, r in zip(epochs, history) if r["phase"] == phase]
        rows = [r for r in history if r["phase"] == phase]
        ax_loss.plot(xs, [r["train_loss"] for r in rows], marker="o", label=f"train ({phase})")
        vl = [(x, r["val_loss"]) for x, r in zip(xs, rows) if r.get("val_loss") is not None]
        if vl:
            ax_loss.plot(*zip(*vl), marker="s", label=f"val ({phase})")
    for key, label in (("val_miou", "val mIoU"), ("iou_background", "background"), ("iou_cat", "cat"),
                       ("iou_dog", "dog"), ("iou_1click", "IoU @1 click"), ("iou_3click", "IoU @3 clicks")):
        pts = [(x, r[key]) for x, r in zip(epochs, history) if r.get(key) not in (None, "")]
        if pts:
            ax_iou.plot(*zip(*pts), marker=".", label=label)
    ax_loss.set(xlabel="epoch (all phases)", ylabel="loss", title="loss")
    ax_iou.set(xlabel="epoch (all phases)", ylabel="IoU", title="validation IoU", ylim=(0, 1))
    for ax in (ax_loss, ax_iou):
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    with atomic_path(out / "curves.png") as tmp:
        tmp.write_bytes(buf.getvalue())


def hardware_summary(rt: Runtime, args: argparse.Namespace) -> dict[str, Any]:
    info = {
        "device": str(rt.device),
        "world_size": rt.world,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "precision": "bf16" if args.bf16 else ("fp16" if rt.device.type == "cuda" and not args.no_amp else "fp32"),
        "channels_last": bool(args.channels_last),
    }
    if rt.device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(rt.device)
    return info


# --------------------------------------------------------------------------- main loop


def _default_out(arch: str) -> Path:
    return Path("runs") / f"{arch}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


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


def _fit(args, rt: Runtime, started: float, resume_tensors, resume_header) -> int:
    from models.checkpoint import make_metadata, save_checkpoint
    from models.registry import build_model, get_architecture
    from training.data import SegmentationDataset, sample_weights
    from training.losses import build_loss, class_weights_from_counts
    from training.prompt_training import PromptTrainingStep

    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    random.seed(args.seed)
    task = get_architecture(args.arch).task
    data = prepare_samples(args)
    out = Path(args.out) if args.out else _default_out(args.arch)
    if rt.distributed:  # all ranks must agree on the default out folder's time stamp
        holder = [str(out)]
        dist.broadcast_object_list(holder, src=0)
        out = Path(holder[0])
    args.out = str(out)

    config = model_config(args)
    try:
        model = build_model(args.arch, config)
    except FitError:
        raise
    except Exception as error:
        raise FitError(f"cannot build {args.arch} with {config}: {_one_line(error)}") from None
    pretrained = load_pretrained(model, args, rt) if resume_header is None else resume_header.get("pretrained", "none")
    normalization = model.normalization
    if rt.main:
        out.mkdir(parents=True, exist_ok=True)
    model.to(rt.device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)

    augment = None
    if args.augment != "none":
        from training.augment import build_augmentation

        augment = build_augmentation(args.augment, seed=args.seed)
    train_ds = SegmentationDataset(data.train, args.size, normalization, augment=augment)
    val = build_val_set(data.val, args.size, normalization, rt)

    class_weights = None
    if task == "semantic" and args.class_weights == "auto":
        if resume_header is not None and resume_header.get("class_weights"):
            class_weights = resume_header["class_weights"]
        else:
            class_weights = class_weights_from_counts(pixel_class_counts(data.train))
        log(rt, f"class weights (background, cat, dog): {[round(w, 3) for w in class_weights]}")
    criterion = build_loss(args.loss, task, class_weights).to(rt.device)

    if args.cat_boost != 1.0:
        sampler = WeightedDistributedSampler(sample_weights(data.train, args.cat_boost), rt.world, rt.rank, args.seed)
    else:
        sampler = torch.utils.data.DistributedSampler(
            train_ds, num_replicas=rt.world, rank=rt.rank, shuffle=True, seed=args.seed, drop_last=False
        )
    steps_per_epoch = max(1, len(sampler) // args.batch_size) if len(sampler) >= args.batch_size else 1
    drop_last = len(sampler) >= args.batch_size

    phases: list[tuple[str, int]] = []
    if args.arch == "autoencoder" and args.ae_epochs > 0:
        phases.append(("reconstruction", args.ae_epochs))
    phases.append(("segmentation", args.epochs))

    history: list[dict[str, Any]] = []
    best = -1.0
    best_epoch = 0
    start_phase, start_epoch = 0, 0  # phase index, epochs done in it
    if resume_header is not None:
        history = resume_header["history"]
        best, best_epoch = resume_header["best"], resume_header["best_epoch"]
        start_phase, start_epoch = resume_header["phase_index"], resume_header["phase_epoch"]
        from safetensors.torch import load_file

        weights = load_file(str(out / "last.safetensors"), device="cpu")
        model.load_state_dict(weights)
        phase_name, phase_total = phases[start_phase]
        done = start_phase == len(phases) - 1 and start_epoch >= phase_total
        stopped = phase_name == "segmentation" and args.patience and start_epoch - best_epoch >= args.patience
        if done or stopped:
            log(rt, f"{out}: this run already finished ({'early stop' if stopped else 'all epochs'}); "
                    f"best val mIoU {best:.4f} at epoch {best_epoch}")
            return 0
        log(rt, f"resuming {out} at {phase_name} epoch {start_epoch + 1}")

    hardware = hardware_summary(rt, args)
    prior_seconds = float((resume_header or {}).get("seconds", 0.0))
    command = " ".join(shlex.quote(a) for a in getattr(args, "argv", None) or sys.argv)
    log(rt, f"{args.arch} {config}: {data.summary['train_images']} train / {data.summary['val_images']} val "
            f"photos at {args.size} px on {hardware['device']} x{rt.world} ({hardware['precision']}); writing {out}")
    use_scaler = rt.device.type == "cuda" and not args.no_amp and not args.bf16
    if args.bf16 and rt.device.type == "cpu" and not cpu_has_fast_bf16():
        log(rt, f"WARNING: --bf16: this CPU ({torch.backends.cpu.get_cpu_capability()}) has no native bfloat16 "
                "(AVX512-BF16/AMX); bf16 autocast is emulated and MUCH slower (measured 10-37x on AVX2). "
                "Use --channels-last alone.")
    epochs_this_run = 0
    stop = False
    last_plot, plotted = time.time(), 0

    for phase_index in range(start_phase, len(phases)):
        phase, phase_epochs = phases[phase_index]
        configure_phase(model, args.arch, phase, config)
        if task == "prompt":
            step_module: nn.Module = PromptTrainingStep(model)
        elif phase == "reconstruction":
            step_module = _Reconstruct(model)
        else:
            step_module = model
        params = trainable_parameters(model)
        wrapped = step_module
        if rt.distributed:
            wrapped = nn.parallel.DistributedDataParallel(
                step_module,
                device_ids=[rt.device.index] if rt.device.type == "cuda" else None,
                
            )
        optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
        scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
        total_steps = steps_per_epoch * phase_epochs
        warmup_steps = min(int(round(args.warmup_epochs * steps_per_epoch)), total_steps // 2)
        first_epoch = 0
        if resume_header is not None and phase_index == start_phase:
            restore_optimizer(optimizer, resume_tensors, resume_header)
            if use_scaler and resume_header.get("scaler"):
                scaler.load_state_dict(resume_header["scaler"])
            set_rng_state(resume_tensors, resume_header["rng"])
            first_epoch = start_epoch
            if phase_epochs != resume_header.get("phase_epochs", phase_epochs):
                log(rt, f"note: {phase} now runs {phase_epochs} epochs (was {resume_header['phase_epochs']}); "
                        "the cosine schedule is stretched from here on")
        if first_epoch >= phase_epochs:
            continue

        for epoch in range(first_epoch, phase_epochs):
            t0 = time.time()
            sampler.set_epoch(epoch + 1000 * phase_index)
            loader = torch.utils.data.DataLoader(
                train_ds, batch_size=args.batch_size, sampler=sampler, num_workers=args.workers,
                drop_last=drop_last, pin_memory=rt.device.type == "cuda",
                generator=torch.Generator().manual_seed(args.seed * 100003 + epoch + 1000 * phase_index),
                persistent_workers=False,
            )
            if args.workers == 0 and hasattr(augment, "compose"):
                # in-process augmentation: reseed per epoch so that --resume continues exactly
                # (in workers, training.augment reseeds from the worker seed, itself per-epoch seeded)
                augment.compose.set_random_seed((args.seed * 100003 + epoch + 1000 * phase_index) % 2**32)
            model.train()
            loss_sum, loss_n = 0.0, 0
            progress = loader
            if rt.main and not args.no_progress:
                from tqdm import tqdm

                progress = tqdm(loader, desc=f"{phase[:5]} {epoch + 1}/{phase_epochs}", leave=False,
                                dynamic_ncols=True, file=sys.stderr)
            for i, batch in enumerate(progress):
                step = epoch * steps_per_epoch + i
                lr = lr_at(step, total_steps, warmup_steps, args.lr)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                images, masks = _to_device(batch, rt.device, args.channels_last)
                with autocast_context(rt.device, args):
                    if task == "prompt":
                        rounds = random.randint(0, max(0, args.clicks_rounds))
                        seed = int(np.random.randint(2**31 - 1))
                        logits, target = wrapped(images, masks, rounds, seed)
                        loss = criterion(logits, target)
                    elif phase == "reconstruction":
                        recon = wrapped(images)
                        loss = nn.functional.mse_loss(recon.float(), images.float())
                    else:
                        loss = criterion(wrapped(images), masks)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if args.grad_clip > 0:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(params, args.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise FitError(f"training diverged (loss {value}) at {phase} epoch {epoch + 1}; lower --lr")
                loss_sum += value
                loss_n += 1
                if progress is not loader:
                    progress.set_postfix(loss=f"{value:.4f}", lr=f"{lr:.2e}")
            if progress is not loader:
                progress.close()
            train_loss_sum, train_n = all_reduce_sum([loss_sum, loss_n], rt)
            train_loss = train_loss_sum / max(train_n, 1)

            row: dict[str, Any] = {
                "epoch": len(history) + 1, "phase": phase, "train_loss": round(train_loss, 6),
                "lr": lr, "world_size": rt.world, "train_steps": int(train_n),
            }
            metrics: dict[str, Any] = {}
            if phase == "segmentation":
                if task == "prompt":
                    metrics = validate_prompt(model, val, criterion, args, rt)
                    row.update(iou_1click=round(metrics["iou_1click"], 5), iou_3click=round(metrics["iou_3click"], 5))
                else:
                    metrics = validate_semantic(model, val, criterion, args, rt)
                    for name, value in metrics["per_class_iou"].items():
                        row[f"iou_{name}"] = None if value is None else round(value, 5)
                row.update(val_loss=round(metrics["val_loss"], 6), val_miou=round(metrics["miou"], 5))
            row["seconds"] = round(time.time() - t0, 2)
            history.append(row)
            improved = phase == "segmentation" and metrics["miou"] > best
            if improved:
                best, best_epoch = metrics["miou"], epoch + 1
            epochs_this_run += 1

            if rt.main:
                meta_metrics = {k: v for k, v in metrics.items() if k != "val_loss"}
                meta_metrics["val_loss"] = metrics.get("val_loss")
                metadata = make_metadata(
                    args.arch, config, args.size, normalization,
                    training={
                        **data.summary,
                        "phase": phase,
                        "epoch": epoch + 1,
                        "epochs": phase_epochs,
                        "ae_epochs": args.ae_epochs if args.arch == "autoencoder" else None,
                        "total_epochs_done": len(history),
                        "best_epoch": best_epoch,
                        "loss": "bce_dice" if task == "prompt" else args.loss,
                        "class_weights": class_weights,
                        "cat_boost": args.cat_boost,
                        "augment": args.augment,
                        "batch_size": args.batch_size,
                        "lr": args.lr,
                        "seed": args.seed,
                        "clicks_rounds": args.clicks_rounds if task == "prompt" else None,
                        "pretrained": pretrained,
                        "encoder": config.get("encoder"),
                    },
                    metrics=meta_metrics,
                    command=command,
                    seconds=round(time.time() - started + prior_seconds, 1),
                    hardware=hardware,
                )
                save_checkpoint(out / "last.safetensors", model, metadata)
                if improved:
                    save_checkpoint(out / "best.safetensors", model, metadata)
                info = {
                    "args": {k: v for k, v in vars(args).items() if k not in ("explicit_options", "argv", "func")},
                    "history": history, "best": best, "best_epoch": best_epoch,
                    "phase_index": phase_index, "phase_epoch": epoch + 1, "phase_epochs": phase_epochs,
                    "global_step": (epoch + 1) * steps_per_epoch, "class_weights": class_weights,
                    "pretrained": pretrained, "seconds": metadata["seconds"], "world_size": rt.world,
                }
                save_train_state(out / STATE_NAME, optimizer, scaler, info)
                write_log(out, history)
                if time.time() - last_plot > PLOT_INTERVAL:  # matplotlib costs ~0.5 s a plot
                    write_curves(out, history)
                    last_plot = time.time()
                    plotted = len(history)
                summary = f"{phase} epoch {epoch + 1}/{phase_epochs}: train loss {train_loss:.4f}"
                if metrics:
                    summary += f", val loss {metrics['val_loss']:.4f}, val mIoU {metrics['miou']:.4f}"
                    if task == "prompt":
                        summary += f" (IoU @1 click {metrics['iou_1click']:.4f})"
                log(rt, summary + f" [{row['seconds']:.1f} s]")
            if rt.distributed:
                dist.barrier()

            if phase == "segmentation" and args.patience and epoch + 1 - best_epoch >= args.patience:
                log(rt, f"early stop: no better val mIoU for {args.patience} epochs (best {best:.4f} at epoch {best_epoch})")
                stop = True
                break
            last_epoch = epoch + 1 == phase_epochs and phase_index == len(phases) - 1
            if args.stop_after_epochs and epochs_this_run >= args.stop_after_epochs and not last_epoch:
                log(rt, f"stopping after {epochs_this_run} epochs as asked; continue with --resume {out}")
                stop = True
                break
        if stop:
            break
        resume_header = None  # later phases start fresh

    if rt.main and history and plotted != len(history):
        write_curves(out, history)
    log(rt, f"done: best val mIoU {best:.4f} (epoch {best_epoch}); checkpoints in {out}")
    return 0
