"""Where and how a training process runs: device, torchrun ranks, autocast and hardware facts."""

from __future__ import annotations

import contextlib
import os
import platform
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ContextManager

import torch
import torch.distributed as dist

from training.fit.errors import FitError


@dataclass
class Runtime:
    """This process's place in the run: its rank among ``world`` processes and its device."""

    rank: int
    world: int
    local_rank: int
    device: torch.device
    distributed: bool
    precision: str = "fp32"  # "bf16" or "fp16" (autocast dtype; fp16 with a GradScaler) or "fp32" (no autocast)

    @property
    def main(self) -> bool:
        """Rank 0: the process that logs and writes files."""
        return self.rank == 0

    def log(self, message: str) -> None:
        """Print ``message`` to stderr on the main process only."""
        if self.main:
            print(message, file=sys.stderr, flush=True)

    def all_reduce_sum(self, values: list[float]) -> list[float]:
        """``values`` summed element-wise over all processes (unchanged in a single process)."""
        if not self.distributed:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device if self.device.type == "cuda" else "cpu")
        dist.all_reduce(t)
        return t.cpu().tolist()

    def check_on_main(self, check: Callable[[], None]) -> None:
        """Run ``check`` on the main process only; a FitError it raises is raised on every process."""
        message = None
        if self.main:
            try:
                check()
            except FitError as error:
                message = str(error)
        if self.distributed:
            holder = [message]
            dist.broadcast_object_list(holder, src=0)
            message = holder[0]
        if message is not None:
            raise FitError(message)

    def autocast(self) -> ContextManager[Any]:
        """Autocast to ``precision`` on this device (nothing for fp32)."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16 if self.precision == "bf16" else torch.float16)


def setup_runtime(device_arg: str, bf16: bool = False, no_amp: bool = False) -> Runtime:
    """Detect torchrun (WORLD_SIZE/RANK/LOCAL_RANK), pick the device, init the process group.

    ``device_arg`` is ``auto`` (CUDA when available) or a torch device that exists here. The
    precision is bfloat16 with ``bf16``, else float16 on CUDA unless ``no_amp``, else fp32.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_arg == "auto":
        device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(device_arg)
        if device.type == "cuda" and device.index is None and world > 1:
            device = torch.device(f"cuda:{local_rank}")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    distributed = world > 1
    if distributed and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    precision = "bf16" if bf16 else ("fp16" if device.type == "cuda" and not no_amp else "fp32")
    return Runtime(rank, world, local_rank, device, distributed, precision)


def batch_to_device(batch: dict[str, torch.Tensor], device: torch.device,
                    channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """A loader batch's images (channels_last if asked) and label masks, on ``device``."""
    images = batch["image"].to(device, non_blocking=True)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, batch["mask"].to(device, non_blocking=True)


def cpu_has_fast_bf16() -> bool:
    """Whether oneDNN has native bfloat16 kernels on this CPU (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # older or unusual builds
        return False


def hardware_summary(rt: Runtime, channels_last: bool) -> dict[str, Any]:
    """Device, software versions and precision, for the checkpoint metadata."""
    info = {
        "device": str(rt.device),
        "world_size": rt.world,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "precision": rt.precision,
        "channels_last": bool(channels_last),
    }
    if rt.device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(rt.device)
    return info
