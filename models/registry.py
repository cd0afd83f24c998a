"""A small registry mapping architecture names to model builders.

Each architecture module registers its builder with :func:`register`; checkpoints store the
architecture name and the builder's keyword config, so :func:`build_model` can rebuild any model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

SEMANTIC = "semantic"  # image -> 3-class logits (background, cat, dog)
PROMPT = "prompt"  # image + prompt maps -> 1-channel object logits


@dataclass(frozen=True)
class Architecture:
    """A registered architecture: its name, task and builder."""

    name: str
    task: str
    builder: Callable[..., nn.Module]


_ARCHITECTURES: dict[str, Architecture] = {}


def register(name: str, task: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering ``builder`` under ``name`` for ``task`` (SEMANTIC or PROMPT)."""
    if task not in (SEMANTIC, PROMPT):
        raise ValueError(f"unknown task {task!r}")

    def decorate(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _ARCHITECTURES[name] = Architecture(name, task, builder)
        return builder

    return decorate


def _load_builtin_architectures() -> None:
    """Import the architecture modules so that they register themselves."""
    from models import architectures  # noqa: F401  (import for its side effect)


def get_architecture(name: str) -> Architecture:
    """Return the registered architecture ``name``; raises KeyError with the known names."""
    _load_builtin_architectures()
    try:
        return _ARCHITECTURES[name]
    except KeyError:
        known = ", ".join(sorted(_ARCHITECTURES))
        raise KeyError(f"unknown architecture {name!r} (known: {known})") from None


def architecture_names(task: str | None = None) -> list[str]:
    """Names of the registered architectures, optionally only those of one task."""
    _load_builtin_architectures()
    return sorted(n for n, a in _ARCHITECTURES.items() if task is None or a.task == task)


def build_model(name: str, config: dict[str, Any]) -> nn.Module:
    """Build architecture ``name`` from its keyword ``config`` (as stored in checkpoints)."""
    return get_architecture(name).builder(**config)
