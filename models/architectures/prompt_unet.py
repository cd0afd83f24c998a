"""Interactive (RITM-like) prompt U-Net: image + 4 prompt maps -> 1-channel object logits.

Built for latency: ``encode_image`` runs the heavy image encoder once per image, and
``decode(features, prompt_maps)`` runs per click: a light prompt encoder (one strided conv per
scale on the 4 maps, see :mod:`models.prompts`) whose features are added to the cached image
features at every scale, then the U-Net decoder. Cached features of batch 1 broadcast over a
batch of prompt maps. With ``context`` > 0, that many self-attention layers run over the deepest
fused map (:mod:`models.architectures.context`) so a click reaches the whole pet. Input sides must
be multiples of ``2**depth`` (32 always works).
"""

from __future__ import annotations

import torch
from torch import nn

from models.architectures.blocks import EncoderModel, UNetDecoder
from models.architectures.context import GlobalContext
from models.encoders import ConvBNReLU, build_encoder

PROMPT_CHANNELS = 4  # positive clicks, negative clicks, box, previous mask
MAX_PROMPT_WIDTH = 64


class PromptEncoder(nn.Module):
    """Prompt maps -> one feature map per encoder scale, with the encoder's channels.

    Each scale is one strided ConvBNReLU (at most 64 channels) from the previous scale, plus a
    1x1 projection onto the image feature channels.
    """

    def __init__(self, channels: list[int], reductions: list[int]) -> None:
        super().__init__()
        widths = [min(c, MAX_PROMPT_WIDTH) for c in channels]
        strides = [r // r_prev for r, r_prev in zip(reductions, [1, *reductions[:-1]])]
        self.stages = nn.ModuleList(
            ConvBNReLU(c_in, c_out, stride=s) for c_in, c_out, s in zip([PROMPT_CHANNELS, *widths[:-1]], widths, strides)
        )
        self.projections = nn.ModuleList(nn.Conv2d(w, c, kernel_size=1) for w, c in zip(widths, channels))

    def forward(self, prompt_maps: torch.Tensor) -> list[torch.Tensor]:
        features = []
        x = prompt_maps
        for stage, projection in zip(self.stages, self.projections):
            x = stage(x)
            features.append(projection(x))
        return features


class PromptUNet(EncoderModel):
    """Prompt U-Net on a ``scratch`` or ``effnet_lite0`` image encoder (see the module doc)."""

    def __init__(
        self,
        base: int = 32,
        depth: int | None = None,
        encoder: str = "scratch",
        bilinear: bool = True,
        context: int = 0,
    ) -> None:
        super().__init__(build_encoder(encoder, 3, base, depth))
        self.prompt_encoder = PromptEncoder(self.encoder.channels, self.encoder.reductions)
        self.context = GlobalContext(self.encoder.channels[-1], context) if context > 0 else None
        self.decoder = UNetDecoder(self.encoder.channels, base, 1, bilinear)

    def encode_image(self, image: torch.Tensor) -> list[torch.Tensor]:
        """The image features (the expensive part); cache them per image."""
        return self.encoder(image)

    def decode(self, features: list[torch.Tensor], prompt_maps: torch.Tensor) -> torch.Tensor:
        """Object logits Bx1xSxS from cached ``features`` and ``prompt_maps`` (Bx4xSxS)."""
        fused = [f + p for f, p in zip(features, self.prompt_encoder(prompt_maps))]
        if self.context is not None:
            fused[-1] = self.context(fused[-1])
        return self.decoder(fused, prompt_maps.shape[-2:])

    def forward(self, image: torch.Tensor, prompt_maps: torch.Tensor) -> torch.Tensor:
        """``decode(encode_image(image), prompt_maps)``."""
        return self.decode(self.encode_image(image), prompt_maps)
