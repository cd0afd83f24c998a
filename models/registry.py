"""The architectures PetSeg can build: one plain table, and what each entry knows about itself.

Checkpoints store the architecture name and the builder's keyword config, so :func:`build_model`
can rebuild any model. Training reads the rest of an entry (its task, its training phases, the
options it takes and the pretrained weights it can start from) instead of testing names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable

from torch import nn

from models.architectures.autoencoder import Autoencoder
from models.architectures.clip import ClipSegmenter, ClipUNet
from models.architectures.prompt_unet import PromptUNet
from models.architectures.unet import UNet
from models.classes import PROMPT, SEMANTIC

# Training phases, in the order a run goes through them.
RECONSTRUCTION = "reconstruction"  # the autoencoder's pre-training: MSE on its own input
SEGMENTATION = "segmentation"  # the task's own loss; validated each epoch

# Pretrained weights an architecture can start from.
NO_PRETRAINED = "none"
IMAGENET_ENCODER = "imagenet_encoder"  # ImageNet EfficientNet-Lite0 when config encoder is effnet_lite0
CLIP_RN50 = "clip_rn50"  # the frozen OpenAI CLIP RN50 tower: a weights file must be given


@dataclass(frozen=True)
class Architecture:
    """One buildable architecture and what training needs to know about it."""

    name: str
    task: str  # SEMANTIC or PROMPT
    builder: Callable[..., nn.Module]
    phases: tuple[str, ...] = (SEGMENTATION,)
    pretrained: str = NO_PRETRAINED
    options: tuple[str, ...] = ("base", "depth")  # builder keywords that training options may set
    default_config: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


ARCHITECTURES: Mapping[str, Architecture] = MappingProxyType({
    a.name: a
    for a in (
        Architecture("unet", SEMANTIC, UNet, pretrained=IMAGENET_ENCODER, options=("base", "depth", "encoder"),
                     default_config=MappingProxyType({"encoder": "effnet_lite0"})),
        Architecture("autoencoder", SEMANTIC, Autoencoder, phases=(RECONSTRUCTION, SEGMENTATION)),
        Architecture("clip", SEMANTIC, ClipSegmenter, pretrained=CLIP_RN50),
        Architecture("clip_unet", SEMANTIC, ClipUNet, pretrained=CLIP_RN50),
        Architecture("prompt_unet", PROMPT, PromptUNet, pretrained=IMAGENET_ENCODER,
                     options=("base", "depth", "encoder", "context"), default_config=MappingProxyType({"encoder": "effnet_lite0"})),
    )
})


def get_architecture(name: str) -> Architecture:
    """The architecture ``name``; raises KeyError naming the known ones."""
    try:
        return ARCHITECTURES[name]
    except (KeyError, TypeError):
        raise KeyError(f"unknown architecture {name!r} (known: {', '.join(sorted(ARCHITECTURES))})") from None


def architecture_names(task: str | None = None) -> list[str]:
    """Names of the architectures, optionally only those of one task."""
    return sorted(n for n, a in ARCHITECTURES.items() if task is None or a.task == task)


def build_model(name: str, config: dict[str, Any]) -> nn.Module:
    """Build architecture ``name`` from its keyword ``config`` (as stored in checkpoints)."""
    return get_architecture(name).builder(**config)
