"""``--init-from``: fine-tuning from a checkpoint (the parent).

:func:`with_parent` writes the parent's architecture options and input size into the config (so a
resumed run rebuilds the same model), :func:`load_parent` gives its weights, and
:func:`anchor_penalty` is ``--anchor``'s pull of the trained weights back towards them: the guard
against forgetting that needs none of the original training data (L2-SP, Li et al. 2018).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from models.checkpoint import CheckpointError, load_checkpoint, read_metadata
from training.fit.config import MODEL_OPTIONS, SCRATCH, FitConfig
from training.fit.errors import FitError


def with_parent(cfg: FitConfig) -> FitConfig:
    """``cfg`` with ``--init-from``'s options (encoder, base, depth, size) written in; FitError when
    the parent is no usable checkpoint of ``--arch`` or the command line asks for other options."""
    if cfg.init_from is None:
        return cfg
    name = Path(cfg.init_from).name
    try:
        meta = read_metadata(cfg.init_from)
    except CheckpointError as error:
        raise FitError(f"--init-from: {error}") from None
    if meta["arch"] != cfg.arch:
        raise FitError(f"--init-from {name} is a {meta['arch']} checkpoint; give --arch {meta['arch']}")
    unknown = sorted(set(meta["config"]) - set(MODEL_OPTIONS))
    if unknown:
        raise FitError(f"--init-from {name}: its config option {unknown[0]!r} is not one fit can set")
    values = {**meta["config"], "size": int(meta["input_size"])}
    if "encoder" in cfg.architecture.options:
        values.setdefault("encoder", SCRATCH)  # a config without one was built with the builders' own
    conflicts = [key for key, value in values.items() if key in cfg.explicit and getattr(cfg, key) != value]
    if conflicts:
        flags = ", ".join(f"--{key.replace('_', '-')} {values[key]}" for key in conflicts)
        raise FitError(f"--init-from {name} was trained with {flags}; leave those options out to fine-tune it")
    return replace(cfg, **values)


def parent_arch(path: str) -> str:
    """The architecture of checkpoint ``path`` (FitError when it cannot be read)."""
    try:
        return read_metadata(path)["arch"]
    except CheckpointError as error:
        raise FitError(f"--init-from: {error}") from None


def load_parent(cfg: FitConfig) -> dict[str, torch.Tensor]:
    """The parent checkpoint's weights (FitError naming the file when it cannot be read)."""
    try:
        parent, _ = load_checkpoint(cfg.init_from)
    except CheckpointError as error:
        raise FitError(f"--init-from: {error}") from None
    return {key: value.detach().clone() for key, value in parent.state_dict().items()}


def add_new_layers(parent: dict[str, torch.Tensor], model: nn.Module, name: str) -> None:
    """Give ``parent`` (in place) ``model``'s freshly built ``--context`` layers when it has none:
    they start as no change, so the grown parent computes what the parent did. FitError naming
    checkpoint ``name`` when the two differ in anything else."""
    fresh = model.state_dict()
    odd = [key for key in parent if key not in fresh]
    odd += [key for key in fresh if key not in parent and not key.startswith("context.")]
    if odd:
        raise FitError(f"--init-from {name}: its weights do not fit this model ({odd[0]!r})")
    parent.update({key: value.detach().clone() for key, value in fresh.items() if key not in parent})


def anchor_penalty(model: nn.Module, start: dict[str, torch.Tensor], strength: float) -> torch.Tensor:
    """``strength / 2`` times the squared distance of the trainable weights from ``start``."""
    terms = [(param.float() - start[name].to(param.device, torch.float32)).pow(2).sum()
             for name, param in model.named_parameters() if param.requires_grad]
    return 0.5 * strength * torch.stack(terms).sum()
