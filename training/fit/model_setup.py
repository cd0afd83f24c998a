"""The model a run trains, set up from its architecture's registry entry.

The entry says which options are builder keywords (``arch.options``, defaults in
``arch.default_config``), which pretrained weights the model can start from (``arch.pretrained``)
and which phases it trains (``arch.phases``); this module turns that into the builder config, the
model with its pretrained weights, each phase's epochs and the parts each phase trains.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.classes import PROMPT
from models.errors import one_line
from models.registry import CLIP_RN50, IMAGENET_ENCODER, RECONSTRUCTION, SEGMENTATION, Architecture, build_model
from training.fit.config import MODEL_OPTIONS, FitConfig
from training.fit.errors import FitError
from training.fit.parent import add_new_layers
from training.fit.runtime import Runtime


def model_config(cfg: FitConfig) -> dict[str, Any]:
    """The builder config: the model options the architecture takes, given or from its default_config."""
    arch = cfg.architecture
    config = {}
    for key in MODEL_OPTIONS:
        value = getattr(cfg, key)
        if value is None:
            value = arch.default_config.get(key)
        if key in arch.options and value is not None:
            config[key] = value
    return config


def build(cfg: FitConfig, rt: Runtime, resume_header: dict[str, Any] | None,
          parent: dict[str, torch.Tensor] | None) -> tuple[dict[str, Any], nn.Module, str]:
    """The builder config, the model with its starting weights (``parent``'s with ``--init-from``,
    else any pretrained ones), and where those came from (when resuming, the saved run's: its
    weights are loaded later)."""
    config = model_config(cfg)
    try:
        model = build_model(cfg.arch, config)
    except Exception as error:
        raise FitError(f"cannot build {cfg.arch} with {config}: {one_line(error)}") from None
    if parent is not None:
        add_new_layers(parent, model, Path(cfg.init_from).name)
    if resume_header is not None:
        return config, model, resume_header.get("pretrained", "none")
    if parent is not None:
        model.load_state_dict(parent)
        return config, model, f"{cfg.init_from} (--init-from)"
    return config, model, load_pretrained(model, cfg, config, rt)


def load_pretrained(model: nn.Module, cfg: FitConfig, config: dict[str, Any], rt: Runtime) -> str:
    """Load the pretrained weights the options ask for; returns a description for the metadata."""
    kind = cfg.architecture.pretrained
    if kind == CLIP_RN50:
        source = cfg.clip_weights  # FitConfig.check: given
        if source.lower() == "none":
            if rt.main:
                bar = "!" * 78
                print(f"{bar}\nWARNING: --clip-weights none: the CLIP tower is RANDOMLY INITIALISED and "
                      f"frozen.\nThis model is only good for tests and smoke runs.\n{bar}", file=sys.stderr)
            return "none (random init)"
        _load(model, source)
        return source
    if kind == IMAGENET_ENCODER and config.get("encoder") == "effnet_lite0":
        _load(model, None)
        return "effnet_lite0 imagenet"
    return "none"


def _load(model: nn.Module, source: str | None) -> None:
    try:
        model.load_pretrained(source)
    except Exception as error:  # the model's own message says what is missing and how to fix it
        raise FitError(one_line(error)) from None


def phase_plan(cfg: FitConfig) -> list[tuple[str, int]]:
    """(phase, epochs) for each phase of the architecture that has epochs to run."""
    epochs = {RECONSTRUCTION: cfg.ae_epochs, SEGMENTATION: cfg.epochs}
    return [(phase, epochs[phase]) for phase in cfg.architecture.phases if epochs[phase] > 0]


def configure_phase(model: nn.Module, arch: Architecture, phase: str, config: dict[str, Any],
                    freeze_encoder: bool = False) -> None:
    """The parts ``phase`` trains get ``requires_grad``, the others not (so neither AdamW nor DDP sees them).

    ``freeze_encoder`` (``--freeze-encoder``): the encoder is frozen (``Encoder.set_frozen``: no
    gradients, and eval mode, so its batch-norm statistics stay).

    An architecture with a reconstruction phase (an encoder, a ``reconstruction`` and a
    segmentation ``decoder``): reconstruction trains the encoder and the reconstruction decoder;
    segmentation the decoder on the frozen encoder (or fine-tunes it with config freeze_encoder=False).
    Other architectures train whatever their builder leaves trainable.
    """
    if RECONSTRUCTION not in arch.phases:
        if freeze_encoder:
            model.encoder.set_frozen(True)
        return
    reconstructing = phase == RECONSTRUCTION
    model.set_encoder_frozen(False if reconstructing else config.get("freeze_encoder", True))
    model.reconstruction.requires_grad_(reconstructing)
    model.decoder.requires_grad_(not reconstructing)


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters the current phase trains."""
    return [p for p in model.parameters() if p.requires_grad]


def step_module(model: nn.Module, arch: Architecture, phase: str, judge_first_prompt: bool = False) -> nn.Module:
    """The module whose forward one training step calls (the one DDP wraps); ``judge_first_prompt``:
    the prompt model's step also returns the initial prompt's prediction (``--first-prompt-loss``)."""
    if arch.task == PROMPT:
        from training.prompt_training import PromptTrainingStep

        return PromptTrainingStep(model, judge_first_prompt)
    if phase == RECONSTRUCTION:
        return _Reconstruct(model)
    return model


class _Reconstruct(nn.Module):
    """The reconstruction phase as a module whose forward DDP can wrap."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.reconstruct(images)
