"""Global context for the prompt U-Net: self-attention over the deepest feature map.

The prompt maps join the image features at every scale, but a click's influence then spreads only
as far as the decoder's convolutions reach (about a third of a 256 px input), so one click on a
large pet gave a round blob around it. A few transformer layers over the deepest map (8x8 tokens
at 256 px) let the clicked pet's features reach every part of it, and the pet beside it be told
apart, at a cost of well under a millisecond per click.
"""

from __future__ import annotations

import math

import torch
from torch import nn

CONTEXT_WIDTH = 128
CONTEXT_HEADS = 4


def sincos_positions(height: int, width: int, dim: int, device: torch.device | None = None) -> torch.Tensor:
    """(height*width)xdim fixed 2-D sine-cosine position codes (half the channels for y, half for x)."""
    quarter = dim // 4
    frequencies = torch.exp(-math.log(10000.0) * torch.arange(quarter, device=device) / quarter)
    ys = torch.arange(height, device=device, dtype=torch.float32)[:, None] * frequencies
    xs = torch.arange(width, device=device, dtype=torch.float32)[:, None] * frequencies
    y_codes = torch.cat([ys.sin(), ys.cos()], dim=1)[:, None, :].expand(height, width, 2 * quarter)
    x_codes = torch.cat([xs.sin(), xs.cos()], dim=1)[None, :, :].expand(height, width, 2 * quarter)
    return torch.cat([y_codes, x_codes], dim=2).reshape(height * width, 4 * quarter)


class GlobalContext(nn.Module):
    """``layers`` pre-norm transformer layers over a BxCxHxW map, added back as a residual.

    The residual's last projection starts at zero, so a model grown with this block computes
    exactly what it did before until training changes it.
    """

    def __init__(self, channels: int, layers: int, width: int = CONTEXT_WIDTH, heads: int = CONTEXT_HEADS) -> None:
        super().__init__()
        self.inp = nn.Conv2d(channels, width, kernel_size=1)
        layer = nn.TransformerEncoderLayer(width, heads, 2 * width, dropout=0.0, batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.out = nn.Conv2d(width, channels, kernel_size=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        tokens = self.inp(x).flatten(2).transpose(1, 2)
        tokens = tokens + sincos_positions(h, w, tokens.shape[-1], x.device).to(tokens.dtype)
        tokens = self.norm(self.layers(tokens))
        return x + self.out(tokens.transpose(1, 2).reshape(b, -1, h, w))
