"""U-Net for 3-class semantic segmentation (background, cat, dog), from scratch or on EfficientNet-Lite0.

Input sides must be multiples of ``2**depth`` (multiples of 32 always work: depth is at most 5,
and the effnet_lite0 encoder reduces by 32).
"""

from __future__ import annotations

import torch
from torch import nn

from models.architectures.blocks import EncoderModel, UNetDecoder
from models.encoders import build_encoder


class UNet(EncoderModel):
    """U-Net: encoder ``scratch`` (base*2**i channels, ``depth`` poolings) or ``effnet_lite0``.

    ``bilinear`` picks bilinear or transposed-conv upsampling; ``dropout`` (0 = none) is a
    Dropout2d on the bottleneck. Output: Bx``num_classes``xHxW logits.
    """

    def __init__(
        self,
        base: int = 32,
        depth: int | None = None,
        in_channels: int = 3,
        num_classes: int = 3,
        bilinear: bool = True,
        dropout: float = 0.0,
        encoder: str = "scratch",
    ) -> None:
        super().__init__(build_encoder(encoder, in_channels, base, depth))
        self.dropout = nn.Dropout2d(dropout)
        self.decoder = UNetDecoder(self.encoder.channels, base, num_classes, bilinear)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits for the normalised images ``x`` (Bx3xHxW)."""
        features = self.encoder(x)
        features[-1] = self.dropout(features[-1])
        return self.decoder(features, x.shape[-2:])
