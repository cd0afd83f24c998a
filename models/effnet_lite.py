"""EfficientNet-Lite0 feature extractor in plain PyTorch (no timm, no torchvision).

It reproduces timm's ``tf_efficientnet_lite0`` with ``features_only=True`` exactly: the same
modules under the same names (``conv_stem``, ``bn1``, ``blocks.S.B.conv_pw`` ...), TensorFlow
"same" padding on the stride-2 convolutions, BatchNorm eps 1e-3 and ReLU6. So checkpoints
trained with timm's definition load unchanged, and the packaged app needs neither timm nor
torchvision. ``tests/test_models.py`` checks the outputs against timm.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-3
STEM_CHANNELS = 32
# One row per stage: (repeats, kernel, stride, expansion, output channels).
STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
FEATURE_STAGES = (0, 1, 2, 4, 6)  # the last stage before each stride change: 1/2 .. 1/32


class SamePadConv2d(nn.Conv2d):
    """A strided convolution with TensorFlow "same" padding (the extra pixel goes right/bottom)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, kernel, stride in zip(reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride)):
            total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


def conv(in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """A bias-free convolution: symmetric padding at stride 1, "same" padding when strided."""
    if stride == 1:
        return nn.Conv2d(in_channels, out_channels, kernel, 1, kernel // 2, groups=groups, bias=False)
    return SamePadConv2d(in_channels, out_channels, kernel, stride, groups=groups, bias=False)


class BatchNormAct(nn.BatchNorm2d):
    """BatchNorm followed by ReLU6 (or nothing); its parameters are plain BatchNorm2d ones."""

    def __init__(self, channels: int, activate: bool = True) -> None:
        super().__init__(channels, eps=BN_EPS)
        self.act = nn.ReLU6(inplace=True) if activate else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(super().forward(x))


class MobileBlock(nn.Module):
    """timm's ``DepthwiseSeparableConv`` (expansion 1) or ``InvertedResidual`` block.

    [1x1 expansion +] depthwise conv + 1x1 projection, each followed by BatchNorm (ReLU6 except
    after the projection), with a skip connection when the shapes match. Modules are registered
    under timm's names and in timm's order, which the ImageNet weight mapping relies on.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_channels * expansion
        expand = expansion != 1
        convs = [("conv_pw", conv(in_channels, hidden, 1), True)] if expand else []
        convs.append(("conv_dw", conv(hidden, hidden, kernel, stride, groups=hidden), True))
        convs.append(("conv_pwl" if expand else "conv_pw", conv(hidden, out_channels, 1), False))
        self.order: list[str] = []
        for index, (name, layer, activate) in enumerate(convs, start=1):
            self.add_module(name, layer)
            self.add_module(f"bn{index}", BatchNormAct(layer.out_channels, activate))
            self.order += [name, f"bn{index}"]
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for name in self.order:
            out = getattr(self, name)(out)
        return out + x if self.residual else out


class EfficientNetLite0Features(nn.Module):
    """The stem and the stages of EfficientNet-Lite0 up to feature level ``depth`` (1..5).

    ``forward`` returns the output of each stage in ``FEATURE_STAGES[:depth]``.
    """

    def __init__(self, depth: int = 5) -> None:
        super().__init__()
        if not 1 <= depth <= len(FEATURE_STAGES):
            raise ValueError(f"effnet_lite0 depth must be 1..{len(FEATURE_STAGES)}, not {depth}")
        self.feature_stages = FEATURE_STAGES[:depth]
        self.conv_stem = conv(3, STEM_CHANNELS, 3, stride=2)
        self.bn1 = BatchNormAct(STEM_CHANNELS)
        stages, channels = [], STEM_CHANNELS
        for repeats, kernel, stride, expansion, out_channels in STAGES[: self.feature_stages[-1] + 1]:
            blocks = []
            for index in range(repeats):
                blocks.append(MobileBlock(channels, out_channels, kernel, stride if index == 0 else 1, expansion))
                channels = out_channels
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.Sequential(*stages)
        self.channels = [STAGES[i][-1] for i in self.feature_stages]
        self.reductions = [2 ** (level + 1) for level in range(depth)]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.bn1(self.conv_stem(x))
        features = []
        for index, stage in enumerate(self.blocks):
            x = stage(x)
            if index in self.feature_stages:
                features.append(x)
        return features
