"""Convolutional autoencoder: reconstruction pre-training, then segmentation on its encoder.

Phase 1 trains ``reconstruct(x)`` against ``x`` (MSE, in the normalised input space) with the
encoder unfrozen (``set_encoder_frozen(False)``); phase 2 trains the segmentation decoder
(``forward``) on the frozen encoder (config ``freeze_encoder``, the default) or fine-tunes it.
Input sides must be multiples of ``2**depth``.
"""

from __future__ import annotations

import torch

from models.architectures.blocks import EncoderModel, UNetDecoder
from models.encoders import ScratchEncoder


class Autoencoder(EncoderModel):
    """Scratch conv encoder + skip-less reconstruction decoder + U-Net segmentation decoder."""

    def __init__(
        self,
        base: int = 32,
        depth: int = 4,
        in_channels: int = 3,
        num_classes: int = 3,
        bilinear: bool = True,
        freeze_encoder: bool = True,
    ) -> None:
        super().__init__(ScratchEncoder(in_channels, base, depth))
        self.reconstruction = UNetDecoder(self.encoder.channels, base, in_channels, bilinear, skips=False)
        self.decoder = UNetDecoder(self.encoder.channels, base, num_classes, bilinear)
        self.set_encoder_frozen(freeze_encoder)

    def set_encoder_frozen(self, frozen: bool) -> None:
        """Freeze the encoder (no gradients, BatchNorm statistics fixed in train mode) or unfreeze it."""
        self.encoder.set_frozen(frozen)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The reconstruction of the normalised images ``x`` (no skip connections: through the bottleneck)."""
        return self.reconstruction(self.encoder(x), x.shape[-2:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits for the normalised images ``x``."""
        return self.decoder(self.encoder(x), x.shape[-2:])
