"""petseg-export under torchrun: which process this is, its device, and how the processes agree.

``torchrun --nproc_per_node N [--nnodes M] -m petseg_desktop.export ...`` starts WORLD_SIZE processes
with RANK and LOCAL_RANK set. Each plans the same export, segments every WORLD_SIZE-th photo of the
sorted list from its RANK on, on its own device, and writes those masks itself (distinct names,
atomic files). :class:`RankGroup` does the little talking there is, over a gloo process group even
on GPUs (only small Python objects travel: setup problems, summaries, COCO entries): everybody's
setup problems before the first photo, and everybody's results gathered on rank 0 at the end, each
wait bounded by a timeout. A single process (no torchrun) makes no process group at all.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType
from typing import Any, TypeVar

from models.errors import one_line
from petseg_desktop.export_files import ExportSetupError

RANK_TIMEOUT_S = 600.0  # default wait for the other processes, at the start and at the end
T = TypeVar("T")


class RankTimeout(RuntimeError):
    """The other processes did not all answer in time (one is stuck, or died without torchrun noticing)."""


class ReportedByRankZero(Exception):
    """Raised on ranks other than 0 when rank 0 reports the outcome for all; ``code`` is the exit status."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


@dataclass(frozen=True)
class Ranks:
    """This process's place among the export's processes (one, without torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> Ranks:
        """From torchrun's RANK, WORLD_SIZE and LOCAL_RANK (absent: a single process)."""
        env = os.environ
        return cls(int(env.get("RANK", "0")), int(env.get("WORLD_SIZE", "1")), int(env.get("LOCAL_RANK", "0")))

    @property
    def main(self) -> bool:
        """Rank 0: the process that prints, merges and writes annotations.json."""
        return self.rank == 0

    def device(self, requested: str | None) -> str | None:
        """The device this process uses: with several processes, no ``--device`` or ``cuda`` means
        ``cuda:LOCAL_RANK`` when CUDA is present (a GPU each); anything else is used as given."""
        if self.world == 1 or requested not in (None, "cuda"):
            return requested
        import torch

        return f"cuda:{self.local_rank}" if torch.cuda.is_available() else requested


def fingerprint(items: Any) -> str:
    """A short digest of ``repr(items)``: equal on processes that planned the same export."""
    return hashlib.sha256(repr(items).encode()).hexdigest()[:16]


class RankGroup:
    """The processes of one export talking over gloo (a no-op for a single process).

    Use as a context manager: entering joins the process group, leaving destroys it. Every wait is
    bounded by ``timeout_s`` and raises :class:`RankTimeout`; when a process dies, torchrun stops
    the others.
    """

    def __init__(self, ranks: Ranks, timeout_s: float = RANK_TIMEOUT_S) -> None:
        self.ranks = ranks
        self.timeout_s = timeout_s
        self.distributed = ranks.world > 1

    def __enter__(self) -> RankGroup:
        if self.distributed:
            import torch.distributed as dist

            try:
                dist.init_process_group("gloo", timeout=timedelta(seconds=self.timeout_s))
            except (RuntimeError, ValueError) as error:  # no MASTER_ADDR, a peer that never came, ...
                raise ExportSetupError(f"rank {self.ranks.rank}: cannot join the other processes: {one_line(error)}") from None
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        if self.distributed:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()

    def _wait_for_all(self, where: str) -> None:
        """Block until every process is here; RankTimeout naming the late ones after ``timeout_s``."""
        import torch.distributed as dist

        try:
            dist.monitored_barrier(timeout=timedelta(seconds=self.timeout_s), wait_all_ranks=True)
        except RuntimeError as error:
            raise RankTimeout(f"not every process reached {where} within {self.timeout_s:.0f} s ({one_line(error)})") from None

    def agree_on_setup(self, problem: str | None, plan_digest: str | None) -> None:
        """Before the first photo: stop every process when any had a setup ``problem`` (one line) or
        they planned different exports (``plan_digest`` of :func:`fingerprint`). Rank 0 then raises
        ExportSetupError naming the problems, the others :class:`ReportedByRankZero`."""
        if not self.distributed:
            return
        import torch.distributed as dist

        self._wait_for_all("the first photo")
        reports: list[Any] = [None] * self.ranks.world
        dist.all_gather_object(reports, (problem, plan_digest))
        problems = {rank: text for rank, (text, _) in enumerate(reports) if text}
        message = None
        if len(set(problems.values())) == 1 and len(problems) == self.ranks.world:
            message = next(iter(problems.values()))  # the same on every process: say it once
        elif problems:
            message = "; ".join(f"rank {rank}: {text}" for rank, text in problems.items())
        elif len({digest for _, digest in reports}) > 1:
            message = (
                "the processes do not see the same photos and outputs: give every one the same --input "
                "and --output, on a file system all nodes share"
            )
        if message is None:
            return
        if self.ranks.main:
            raise ExportSetupError(message)
        raise ReportedByRankZero(2)

    def gather(self, item: T) -> list[T] | None:
        """Every process's ``item`` in rank order on rank 0, None elsewhere, once all have one."""
        if not self.distributed:
            return [item]
        import torch.distributed as dist

        self._wait_for_all("the end of its photos")
        items: list[Any] | None = [None] * self.ranks.world if self.ranks.main else None
        dist.gather_object(item, items, dst=0)
        return items

    def share_outcome(self, code: int | None) -> int:
        """Rank 0's exit status ``code`` on every process (others pass None), so that all exit alike
        and none before rank 0 has written annotations.json and its report."""
        if not self.distributed:
            assert code is not None
            return code
        import torch.distributed as dist

        holder = [code]
        dist.broadcast_object_list(holder, src=0)
        return int(holder[0])
