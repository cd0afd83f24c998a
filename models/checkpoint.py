"""The PetSeg checkpoint format: safetensors weights with JSON metadata inside.

Only safetensors files are ever read, so loading a checkpoint never executes code. The metadata
(stored under the ``petseg`` key of the safetensors header) rebuilds the model through the
registry and tells the app what the model is: task, classes, input size and normalisation.
"""

from __future__ import annotations

import json
import math
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
MIN_INPUT_SIZE, MAX_INPUT_SIZE = 32, 1024  # model input sides a checkpoint may declare
_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2,
                "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


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
    raw = (_read_header(path).get("__metadata__") or {}).get(METADATA_KEY)
    if not isinstance(raw, str):
        raise CheckpointError(f"{path.name}: safetensors file without PetSeg metadata")
    try:
        metadata = json.loads(raw)
    except (json.JSONDecodeError, RecursionError):
        raise CheckpointError(f"{path.name}: PetSeg metadata is not valid JSON") from None
    _check_metadata(metadata, path.name)
    return metadata


def parameter_count(path: str | Path) -> int:
    """The number of weights in the checkpoint ``path``, from its (checked) header; nothing is loaded."""
    header = _read_header(Path(path))
    return sum(math.prod(info["shape"]) for key, info in header.items() if key != "__metadata__")


def _read_header(path: Path) -> dict[str, Any]:
    """The safetensors header of ``path``, its tensor table checked against the file's size."""
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
    if not isinstance(header, dict) or not isinstance(header.get("__metadata__") or {}, dict):
        raise CheckpointError(f"{path.name}: corrupt safetensors header")
    _check_tensor_table(header, path.stat().st_size - 8 - header_len, path.name)
    return header


def _check_tensor_table(header: dict[str, Any], data_bytes: int, name: str) -> None:
    """Every tensor the header declares must have a valid shape and lie inside the file, with as
    many bytes as its shape needs: a truncated file or a declared 4 TB tensor fails here, before
    anything is allocated."""
    for key, info in header.items():
        if key == "__metadata__":
            continue
        shape = info.get("shape") if isinstance(info, dict) else None
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if not (_int_list(shape) and _int_list(offsets) and len(offsets) == 2 and 0 <= offsets[0] <= offsets[1]):
            raise CheckpointError(f"{name}: corrupt safetensors header (tensor {key})")
        if offsets[1] > data_bytes:
            raise CheckpointError(f"{name}: truncated: tensor {key} needs {offsets[1]} bytes of data, "
                                  f"the file holds {data_bytes}")
        itemsize = _DTYPE_BYTES.get(info.get("dtype"))
        if itemsize is None or math.prod(shape) * itemsize != offsets[1] - offsets[0]:
            raise CheckpointError(f"{name}: tensor {key} declares {info.get('dtype')} {shape} "
                                  f"but stores {offsets[1] - offsets[0]} bytes")


def _int_list(value: Any) -> bool:
    return isinstance(value, list) and all(type(v) is int and v >= 0 for v in value)


def _finite_triple(value: Any) -> bool:
    return (isinstance(value, list) and len(value) == 3
            and all(type(v) in (int, float) and math.isfinite(v) for v in value))


def _check_metadata(metadata: Any, name: str) -> None:
    """The metadata's types and values against what loading and inference rely on."""
    if not isinstance(metadata, dict):
        raise CheckpointError(f"{name}: PetSeg metadata is not a JSON object")
    missing = [k for k in REQUIRED_KEYS if k not in metadata]
    if missing:
        raise CheckpointError(f"{name}: metadata lacks {', '.join(missing)}")
    try:
        architecture = get_architecture(metadata["arch"])
    except KeyError as error:
        raise CheckpointError(f"{name}: {error.args[0]}") from None
    if not isinstance(metadata["config"], dict):
        raise CheckpointError(f"{name}: metadata config is not a JSON object")
    if metadata["task"] != architecture.task:
        raise CheckpointError(f"{name}: task {metadata['task']!r} does not match architecture "
                              f"{architecture.name} (a {architecture.task} model)")
    size = metadata["input_size"]
    if type(size) is not int or not MIN_INPUT_SIZE <= size <= MAX_INPUT_SIZE or size % 32:
        raise CheckpointError(f"{name}: input_size {size!r} is not a multiple of 32 between "
                              f"{MIN_INPUT_SIZE} and {MAX_INPUT_SIZE}")
    norm = metadata["normalization"]
    if not (isinstance(norm, dict) and _finite_triple(norm.get("mean")) and _finite_triple(norm.get("std"))
            and all(v > 0 for v in norm["std"])):
        raise CheckpointError(f"{name}: normalization must hold mean and std as 3 finite numbers, std > 0")
    for key in ("metrics", "training", "hardware"):
        if not isinstance(metadata.get(key) or {}, dict):
            raise CheckpointError(f"{name}: metadata {key} is not a JSON object")


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
