"""A denoiser around one convolutional network (a UNet of any family) that downsamples its latent ``down`` times:
placement, the channel check and the latent-size rule, shared by the image and video UNets."""

from __future__ import annotations

import torch

from .denoisers import LatentSpace, ModelDenoiser


class DownsamplingDenoiser(ModelDenoiser):
    """``unet`` predicts ``out_channels`` channels and needs latent sides divisible by ``down``."""

    def __init__(self, unet: torch.nn.Module, space: LatentSpace, name: str, out_channels: int, down: int):
        super().__init__(space, name)
        self._check_channels(out_channels)
        self.unet = unet.eval().requires_grad_(False)
        self._down = down

    def modules(self) -> list[torch.nn.Module]:
        return [self.unet]

    def size_problem(self, height: int, width: int) -> str | None:
        if height % self._down or width % self._down:
            return f"{self.name} needs latent sizes divisible by {self._down}, got {height}x{width}"
        return None
