"""Placement for a denoiser too large to share the GPU: its networks live on the CPU and visit the device only
while they run (``--offload``). Model-agnostic: any denoiser with ``to()`` and ``predict()``, any VAE."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from .sampling import vae_decoder


class Offloaded:
    """A denoiser whose networks live on the CPU and visit ``device`` only for their own forward pass.

    With a prior this keeps one UNet on the GPU at a time (peak ~ one model), at the cost of two
    host<->device copies per model per step. Everything else is forwarded to the wrapped denoiser.
    """

    def __init__(self, denoiser, device: torch.device | str):
        self.inner = denoiser.to("cpu")
        self.run_device = torch.device(device)

    def predict(self, x_t: Tensor, t: Tensor, conds: Sequence[Any]) -> list[Tensor]:
        self.inner.to(self.run_device)
        try:
            return self.inner.predict(x_t, t, conds)
        finally:
            self.inner.to("cpu")

    def __call__(self, x_t: Tensor, t: Tensor, cond: Any = None) -> Tensor:
        return self.predict(x_t, t, [cond])[0]

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


def offloaded_decoder(vae: torch.nn.Module, device) -> Callable[[Tensor], Tensor]:
    """``priorswap.toolkit.core.sampling.vae_decoder`` that moves the VAE to ``device`` only while decoding."""
    decode = vae_decoder(vae)

    def run(latents: Tensor) -> Tensor:
        vae.to(device)
        try:
            return decode(latents)
        finally:
            vae.to("cpu")

    return run
