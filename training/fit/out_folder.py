"""The run folder (``--out``): named, made and checked writable before training, and not left
behind empty when the run fails before writing anything into it."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import torch.distributed as dist

from models.errors import one_line
from training.fit.config import FitConfig
from training.fit.errors import FitError
from training.fit.runtime import Runtime


def out_path(cfg: FitConfig, rt: Runtime) -> Path:
    """--out, or ``runs/<arch>-<YYYYmmdd-HHMMSS>`` with one time stamp for all ranks."""
    out = Path(cfg.out) if cfg.out else Path("runs") / f"{cfg.arch}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    if rt.distributed:
        holder = [str(out)]
        dist.broadcast_object_list(holder, src=0)
        out = Path(holder[0])
    return out


@contextmanager
def run_folder(out: Path, rt: Runtime) -> Iterator[None]:
    """Make ``out`` (on the main process) and check that a file can be written and removed there
    (FitError on every process if not); when the block fails, remove the folders made here if
    they are still empty."""
    made: list[Path] = []
    rt.check_on_main(lambda: made.extend(_make_writable(out)))
    try:
        yield
    except BaseException:
        _remove_empty(made)
        raise


def _make_writable(out: Path) -> list[Path]:
    """Make ``out`` and its missing parents and write a probe file there; the folders made, deepest first."""
    missing = [p for p in (out, *out.parents) if not p.exists()]
    if out.exists() and not out.is_dir():
        raise FitError(f"--out {out}: is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".petseg-probe-{secrets.token_hex(4)}"
        try:
            probe.write_bytes(b"probe")
        finally:
            probe.unlink(missing_ok=True)
    except OSError as error:
        _remove_empty(missing)
        raise FitError(f"--out {out}: cannot write there ({error.strerror or one_line(error)})") from None
    return missing


def _remove_empty(folders: list[Path]) -> None:
    """Remove ``folders`` (deepest first) that are empty; others stay."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            pass
