"""Segmentation on frozen OpenAI CLIP RN50 features: a multi-scale decoder ("clip") and a U-Net
whose bottleneck is fused with CLIP's deep features ("clip_unet").

The CLIP tower is always frozen (no gradients, eval mode even in train mode) and random-init
until ``load_pretrained("openai" | path)``. Input sides must be multiples of 32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.architectures.blocks import EncoderModel, UNetDecoder
from models.encoders import ClipRN50Encoder, ConvBNReLU, ScratchEncoder


class ClipSegmenter(EncoderModel):
    """U-Net decoder over CLIP RN50's stem (1/2) and layer1..layer4 (1/4..1/32) features.

    ``depth`` < 5 uses only the shallower CLIP stages.
    """

    def __init__(self, base: int = 32, depth: int = 5, num_classes: int = 3, bilinear: bool = True) -> None:
        super().__init__(ClipRN50Encoder(depth))
        self.decoder = UNetDecoder(self.encoder.channels, base, num_classes, bilinear)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits for the CLIP-normalised images ``x``."""
        return self.decoder(self.encoder(x), x.shape[-2:])


class BottleneckFusion(nn.Module):
    """Fuse deep features into a bottleneck: 1x1-project each, resize, concatenate, 3x3 conv."""

    def __init__(self, deep_channels: list[int], channels: int) -> None:
        super().__init__()
        self.projections = nn.ModuleList(ConvBNReLU(c, channels, kernel_size=1) for c in deep_channels)
        self.fuse = ConvBNReLU(channels * (len(deep_channels) + 1), channels)

    def forward(self, bottleneck: torch.Tensor, deep: list[torch.Tensor]) -> torch.Tensor:
        size = bottleneck.shape[-2:]
        projected = [
            F.interpolate(projection(f), size=size, mode="bilinear", align_corners=False)
            for projection, f in zip(self.projections, deep)
        ]
        return self.fuse(torch.cat([bottleneck, *projected], dim=1))


class ClipUNet(EncoderModel):
    """A scratch U-Net (``base``, ``depth``) whose bottleneck is fused with CLIP layer3 and layer4.

    ``encoder`` is the frozen CLIP tower (it sets ``normalization`` and ``load_pretrained``);
    ``unet_encoder`` is the trainable U-Net encoder.
    """

    def __init__(self, base: int = 32, depth: int = 4, num_classes: int = 3, bilinear: bool = True) -> None:
        super().__init__(ClipRN50Encoder())
        self.unet_encoder = ScratchEncoder(3, base, depth)
        self.fusion = BottleneckFusion(self.encoder.channels[-2:], self.unet_encoder.channels[-1])
        self.decoder = UNetDecoder(self.unet_encoder.channels, base, num_classes, bilinear)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits for the CLIP-normalised images ``x``."""
        features = self.unet_encoder(x)
        features[-1] = self.fusion(features[-1], self.encoder(x)[-2:])
        return self.decoder(features, x.shape[-2:])
