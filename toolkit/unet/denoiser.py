"""The shared part of every ``UNet2DConditionModel``-based adapter: placement and the latent-size rule."""

from __future__ import annotations

import torch

from ..core.denoisers import LatentSpace, ModelDenoiser


class UNetDenoiser(ModelDenoiser):
    """A UNet whose output is the C-channel prediction (its input may carry extra image-latent channels)."""

    def __init__(self, unet: torch.nn.Module, space: LatentSpace, name: str = "unet"):
        super().__init__(space, name)
        self._check_channels(int(unet.config.out_channels))
        self.unet = unet.eval().requires_grad_(False)
        self._down = 2 ** (len(unet.config.down_block_types) - 1)

    def modules(self) -> list[torch.nn.Module]:
        return [self.unet]

    def size_problem(self, height: int, width: int) -> str | None:
        if height % self._down or width % self._down:
            return f"{self.name} needs latent sizes divisible by {self._down}, got {height}x{width}"
        return None
