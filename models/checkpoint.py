"""The PetSeg checkpoint format: safetensors weights with JSON metadata inside.

Only safetensors files are ever read, so loading a checkpoint never executes code. The metadata
(stored under the ``petseg`` key of the safetensors header) rebuilds the model through the
registry and tells the app what the model is: task, classes, input size and normalisation.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from models.classes import CLASS_NAMES, PROMPT_CLASS_NAMES, SEMANTIC
from models.files import atomic_path
from models.registry import build_model, get_architecture
from models.version import __version__

FORMAT_VERSION = 1
METADATA_KEY = "petseg"
SUFFIX = ".safetensors"
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl")
REQUIRED_KEYS = ("arch", "config", "task", "input_size", "normalization")


class CheckpointError(Exception):
    """A checkpoint that cannot be used; ``str(error)`` is a one-line reason for the user."""


def make_metadata(
    arch: str,
    config: dict[str, Any],
    input_size: int,
    normalization: dict[str, list[float]],
    **extra: Any,
) -> dict[str, Any]:
    """Build the metadata dict for a checkpoint; ``extra`` holds training data, metrics, etc."""
    task = get_architecture(arch).task
    metadata = {
        "format_version": FORMAT_VERSION,
        "arch": arch,
        "config": config,
        "task": task,
        "class_names": list(CLASS_NAMES if task == SEMANTIC else PROMPT_CLASS_NAMES),
        "input_size": input_size,
        "normalization": normalization,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "package_version": __version__,
    }
    metadata.update(extra)
    return metadata


def save_checkpoint(path: str | Path, model: nn.Module, metadata: dict[str, Any]) -> Path:
    """Write ``model``'s weights and ``metadata`` atomically (temp file, then rename)."""
    path = Path(path)
    if path.suffix != SUFFIX:
        raise ValueError(f"checkpoint file names must end in {SUFFIX}: {path}")
    missing = [k for k in REQUIRED_KEYS if k not in metadata]
    if missing:
        raise ValueError(f"checkpoint metadata lacks {', '.join(missing)}")
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    header = {METADATA_KEY: json.dumps(metadata, sort_keys=True)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=header)
    return path


def _check_not_pickle(path: Path) -> None:
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(
            f"{path.name}: pickle-based checkpoint refused (it could run code); "
            f"PetSeg only loads {SUFFIX} files"
        )


def read_metadata(path: str | Path) -> dict[str, Any]:
    """Read and validate a checkpoint's metadata without loading its weights."""
    path = Path(path)
    _check_not_pickle(path)
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointError(f"{path.name}: file is empty or truncated")
            header_len = int.from_bytes(head, "little")
            if header_len <= 0 or header_len > min(path.stat().st_size - 8, 100_000_000):
                raise CheckpointError(f"{path.name}: not a safetensors file, or truncated")
            header = json.loads(f.read(header_len))
    except OSError as error:
        raise CheckpointError(f"{path.name}: cannot read ({error.strerror or error})") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"{path.name}: corrupt safetensors header") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path.name}: corrupt safetensors header")
    raw = (header.get("__metadata__") or {}).get(METADATA_KEY)
    if raw is None:
        raise CheckpointError(f"{path.name}: safetensors file without PetSeg metadata")
    try:
        metadata = json.loads(raw)
    except json.JSONDecodeError:
        raise CheckpointError(f"{path.name}: PetSeg metadata is not valid JSON") from None
    missing = [k for k in REQUIRED_KEYS if k not in metadata]
    if missing:
        raise CheckpointError(f"{path.name}: metadata lacks {', '.join(missing)}")
    try:
        get_architecture(metadata["arch"])
    except KeyError as error:
        raise CheckpointError(f"{path.name}: {error.args[0]}") from None
    return metadata


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model from ``path``'s metadata and load its weights, in eval mode on ``device``."""
    path = Path(path)
    metadata = read_metadata(path)
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path.name}: corrupt or truncated weights ({error})") from None
    try:
        model = build_model(metadata["arch"], metadata["config"])
    except Exception as error:  # a bad config can fail in many ways inside a builder
        raise CheckpointError(f"{path.name}: cannot build {metadata['arch']}: {error}") from None
    _load_weights(model, state, path.name, metadata["arch"])
    return model.to(device).eval(), metadata


def _load_weights(model: nn.Module, state: dict[str, torch.Tensor], name: str, arch: str) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if mismatched:
            k = mismatched[0]
            parts.append(
                f"{len(mismatched)} of another shape (e.g. {k}: file {tuple(state[k].shape)}, "
                f"model {tuple(expected[k].shape)})"
            )
        raise CheckpointError(f"{name}: weights do not match architecture {arch}: " + "; ".join(parts))
    model.load_state_dict(state)
