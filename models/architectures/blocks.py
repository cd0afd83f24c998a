"""Building blocks shared by the architectures: the U-Net decoder and the encoder-model base."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.encoders import ConvBNReLU, DoubleConv, Encoder


class UpBlock(nn.Module):
    """Upsample x2 (1x1 conv + bilinear, or a transposed conv), concatenate the skip, DoubleConv."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, bilinear: bool = True) -> None:
        super().__init__()
        if bilinear:  # reduce the channels at low resolution first: cheaper than convolving after
            self.up: nn.Module = nn.Sequential(
                ConvBNReLU(in_channels, out_channels, kernel_size=1),
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            )
        else:
            self.up = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)
        self.conv = DoubleConv(out_channels + skip_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        x = self.up(x)
        return self.conv(x if skip is None else torch.cat([x, skip], dim=1))


class UNetDecoder(nn.Module):
    """U-Net decoder and 1x1 head over an encoder's features, shallowest first.

    One UpBlock per feature level below the deepest, with base*2**k channels (base at the
    shallowest level). The logits come out at the shallowest level's resolution and are
    resized bilinearly to the requested size. ``skips=False`` ignores the shallower features
    (a plain decoder, e.g. for image reconstruction).
    """

    def __init__(
        self,
        encoder_channels: list[int],
        base: int,
        out_channels: int,
        bilinear: bool = True,
        skips: bool = True,
    ) -> None:
        super().__init__()
        widths = [base * 2**k for k in reversed(range(len(encoder_channels) - 1))]
        skip_channels = encoder_channels[-2::-1] if skips else [0] * len(widths)
        inputs = [encoder_channels[-1], *widths[:-1]]
        self.skips = skips
        self.blocks = nn.ModuleList(
            UpBlock(c_in, c_skip, c_out, bilinear) for c_in, c_skip, c_out in zip(inputs, skip_channels, widths)
        )
        self.head = nn.Conv2d(widths[-1] if widths else encoder_channels[-1], out_channels, kernel_size=1)

    def forward(self, features: list[torch.Tensor], size: tuple[int, int] | torch.Size) -> torch.Tensor:
        """Logits of size ``size`` from the encoder ``features``."""
        x = features[-1]
        for block, skip in zip(self.blocks, reversed(features[:-1])):
            x = block(x, skip if self.skips else None)
        x = self.head(x)
        if tuple(x.shape[-2:]) != tuple(size):
            x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
        return x


class EncoderModel(nn.Module):
    """Base of models built around one (possibly pretrained) encoder.

    ``normalization`` is the encoder's (what inputs must be normalised with), and
    ``load_pretrained(source)`` loads the encoder's pretrained weights (None: its default source).
    """

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.normalization = encoder.normalization

    def load_pretrained(self, source: str | None = None) -> None:
        """Load the encoder's pretrained weights from ``source``."""
        self.encoder.load_pretrained(source)
