"""Training state for an exact ``--resume``, stored without pickle, and where ``--resume`` finds it.

Optimizer moments and RNG states go into a safetensors file (:data:`STATE_NAME` in the run
folder) as tensors; scalars, the scaler and everything JSON-able (epoch, step, best score,
history, the run's options by argparse dest) go into its metadata.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.errors import one_line
from models.files import atomic_path
from training.fit.errors import FitError

# The leading dot keeps the app's checkpoint discovery from listing it as an unusable model.
STATE_NAME = ".last.state.safetensors"


def resolve_resume(resume: str | None, out: str | None) -> Path | None:
    """The run folder that ``--resume`` (with ``--out``) names, or None to start fresh."""
    if resume is None:
        return None
    if resume == "auto":
        if out is None:
            raise FitError("bare --resume needs --out (the run folder to continue)")
        run = Path(out)
    else:
        run = Path(resume)
        if run.is_file():
            run = run.parent
    if (run / STATE_NAME).is_file():
        return run
    if resume == "auto":
        return None  # nothing saved yet: start fresh in --out
    raise FitError(f"--resume {resume}: no resume state ({STATE_NAME}) in {run}")


def saved_options(header: dict[str, Any], run: Path) -> dict[str, Any]:
    """The options (by argparse dest) that the resume state ``header`` of run folder ``run`` saved.

    States saved before runs wrote their default encoder into the options have ``encoder: null``
    for an architecture that takes one; they trained the encoder that their ``last.safetensors``
    config names (none named: the builders' own default, scratch).
    """
    from models.checkpoint import CheckpointError, read_metadata
    from models.registry import ARCHITECTURES

    options = dict(header["args"])
    arch = ARCHITECTURES.get(options.get("arch"))
    if options.get("encoder") is None and arch is not None and "encoder" in arch.options:
        try:
            config = read_metadata(run / "last.safetensors").get("config") or {}
        except CheckpointError as error:
            raise FitError(f"--resume {run}: {error}") from None
        options["encoder"] = config.get("encoder") or "scratch"
    return options


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """torch (CPU and CUDA), numpy and Python RNG states as tensors plus JSON-able values."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = state
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["rng.numpy.keys"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    py_version, py_state, py_gauss = random.getstate()
    meta = {
        "numpy": [kind, int(pos), int(has_gauss), float(cached)],
        "python": [py_version, list(py_state), py_gauss],
    }
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(tensors["rng.torch"])
    cuda = sorted(k for k in tensors if k.startswith("rng.cuda."))
    if cuda and torch.cuda.is_available():
        for key in cuda:
            index = int(key.rsplit(".", 1)[1])
            if index < torch.cuda.device_count():
                torch.cuda.set_rng_state(tensors[key], index)
    kind, pos, has_gauss, cached = meta["numpy"]
    keys = tensors["rng.numpy.keys"].numpy().astype(np.uint32)
    np.random.set_state((kind, keys, pos, has_gauss, cached))
    py_version, py_state, py_gauss = meta["python"]
    random.setstate((py_version, tuple(py_state), py_gauss))


def save_train_state(path: Path, optimizer: torch.optim.Optimizer, scaler, info: dict[str, Any]) -> None:
    """Optimizer tensors + RNG tensors in a safetensors file; scalars/JSON in its metadata."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    opt = optimizer.state_dict()
    for pid, state in opt["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"opt.{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[key] = value
    rng_tensors, rng_meta = rng_state()
    tensors.update(rng_tensors)
    header = {
        "optimizer": {"param_groups": opt["param_groups"], "scalars": scalars},
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        "rng": rng_meta,
        **info,
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"petseg_train_state": json.dumps(header)})


def read_train_state(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and header written by :func:`save_train_state`; FitError if damaged."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            header = json.loads((f.metadata() or {})["petseg_train_state"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as error:  # safetensors, JSON and key errors alike mean a damaged file
        raise FitError(f"{path}: unreadable resume state ({one_line(error)})") from None
    return tensors, header


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], header: dict[str, Any]) -> None:
    """Load the optimizer state saved by :func:`save_train_state` back into ``optimizer``."""
    saved = header["optimizer"]
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    for pid, values in saved["scalars"].items():
        state.setdefault(int(pid), {}).update(values)
    optimizer.load_state_dict({"state": state, "param_groups": saved["param_groups"]})
