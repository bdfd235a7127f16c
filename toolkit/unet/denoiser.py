"""The shared part of every ``UNet2DConditionModel``-based adapter: placement and the latent-size rule."""

from __future__ import annotations

import torch

from ..core.denoisers import LatentSpace
from ..core.downsampling import DownsamplingDenoiser


class UNetDenoiser(DownsamplingDenoiser):
    """A UNet whose output is the C-channel prediction (its input may carry extra image-latent channels)."""

    def __init__(self, unet: torch.nn.Module, space: LatentSpace, name: str = "unet"):
        down = 2 ** (len(unet.config.down_block_types) - 1)
        super().__init__(unet, space, name, int(unet.config.out_channels), down)
