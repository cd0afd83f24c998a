"""Find every PetSeg checkpoint the app can offer, and say for each whether it loads.

Searched, in this order: the bundled ``resources/checkpoints``, the user's data folder, the
folders listed in ``PETSEG_CHECKPOINTS``, and training output folders (``PETSEG_RUNS`` or
``./runs`` plus the user's ``runs`` folder).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.checkpoint import PICKLE_SUFFIXES, SUFFIX, CheckpointError, read_metadata

BUNDLED, USER, ENVIRONMENT, TRAINING = "bundled", "user", "PETSEG_CHECKPOINTS", "training"


def resources_dir() -> Path:
    """The ``resources`` folder, in a source tree, an installed package or a PyInstaller bundle."""
    bundle_root = getattr(sys, "_MEIPASS", None)
    if bundle_root:
        return Path(bundle_root) / "resources"
    return Path(__file__).resolve().parent.parent / "resources"


def user_data_dir() -> Path:
    """The platform's per-user data folder for PetSeg."""
    if sys.platform.startswith("win"):
        base = Path(os.environ.get("APPDATA", Path.home() / "AppData" / "Roaming"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "petseg"


def search_folders() -> list[tuple[str, Path]]:
    """The (source, folder) pairs searched for checkpoints, in priority order."""
    folders = [(BUNDLED, resources_dir() / "checkpoints"), (USER, user_data_dir() / "checkpoints")]
    for entry in os.environ.get("PETSEG_CHECKPOINTS", "").split(os.pathsep):
        if entry.strip():
            folders.append((ENVIRONMENT, Path(entry.strip()).expanduser()))
    runs = os.environ.get("PETSEG_RUNS")
    run_roots = [Path(runs).expanduser()] if runs else [Path.cwd() / "runs"]
    run_roots.append(user_data_dir() / "runs")
    folders.extend((TRAINING, root) for root in run_roots)
    return folders


@dataclass(frozen=True)
class CheckpointEntry:
    """One discovered checkpoint file: where it came from, its metadata, or why it is unusable."""

    path: Path
    source: str
    metadata: dict[str, Any] | None
    error: str | None
    name: str = ""  # how menus name it: the path under its search folder (training runs nest)

    @property
    def loadable(self) -> bool:
        return self.error is None

    @property
    def task(self) -> str | None:
        return self.metadata["task"] if self.metadata else None

    @property
    def label(self) -> str:
        """The file name; for training output its path under the runs folder (runs all hold
        best.safetensors, and studies nest runs of the same name)."""
        return self.name or self.path.name

    def describe(self) -> str:
        """A one-line description for menus and logs."""
        if self.error:
            return f"{self.label} [{self.source}] unusable: {self.error}"
        meta = self.metadata or {}
        miou = (meta.get("metrics") or {}).get("miou")
        score = f", val mIoU {miou:.3f}" if isinstance(miou, (int, float)) else ""
        return f"{self.label} [{self.source}] {meta['arch']} ({meta['task']}, {meta['input_size']} px{score})"


def inspect_checkpoint(path: Path, source: str, name: str = "") -> CheckpointEntry:
    """Read ``path``'s metadata, turning any problem into a one-line reason; ``name``: its label."""
    try:
        return CheckpointEntry(path, source, read_metadata(path), None, name)
    except CheckpointError as error:
        return CheckpointEntry(path, source, None, str(error), name)


def discover_checkpoints(task: str | None = None) -> list[CheckpointEntry]:
    """Every checkpoint in the search folders (optionally only loadable ones of ``task``)."""
    entries: list[CheckpointEntry] = []
    seen: set[Path] = set()
    suffixes = (SUFFIX, *PICKLE_SUFFIXES)
    for source, folder in search_folders():
        if not folder.is_dir():
            continue
        pattern = "**/*" if source == TRAINING else "*"
        for path in sorted(folder.glob(pattern)):
            if path.suffix.lower() not in suffixes or not path.is_file() or path.name.startswith("."):
                continue
            resolved = path.resolve()
            if resolved in seen:
                continue
            seen.add(resolved)
            entries.append(inspect_checkpoint(path, source, path.relative_to(folder).as_posix()))
    if task is not None:
        entries = [e for e in entries if e.loadable and e.task == task]
    return entries
