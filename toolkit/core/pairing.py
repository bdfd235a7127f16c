"""Checks that a prior can stand in for a fine-tuned model's unconditional branch, before any sampling.

Two models can be paired when they denoise the same space: the same latent channels, the same VAE
statistics (docs/method.md trap 8: SD1.x/SD2.x/PixArt-alpha/DiT share the SD VAE, SDXL's or a video VAE does
not), and a latent size the prior accepts (docs/method.md trap 9). Schedules may differ: the prior is then called at
the nearest-alpha_bar timestep (docs/method.md trap 4), and :func:`priorswap.toolkit.core.schedules.pairing_error` says by how much.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from ..errors import PriorswapError
from .denoisers import ModelDenoiser, same_table
from .schedules import alpha_bar_at, nearest_timestep, pairing_error


def pairing_problem(model: ModelDenoiser, prior: ModelDenoiser, latent_hw: tuple[int, int]) -> str | None:
    """Why ``prior`` cannot supply ``model``'s unconditional eps on (H, W) inputs, or None."""
    a, b = model.space, prior.space
    same_scaling = (a.vae_scaling_factor is None and b.vae_scaling_factor is None) or (
        a.vae_scaling_factor is not None
        and b.vae_scaling_factor is not None
        and abs(a.vae_scaling_factor - b.vae_scaling_factor) < 1e-6
    )
    if a.channels != b.channels or not same_scaling:
        return f"latent spaces differ: {model.name} uses {a.describe()}, {prior.name} uses {b.describe()}"
    return prior.size_problem(*latent_hw)


class PairedPrior:
    """A prior on its model's sampling schedule: a :class:`Denoiser` whose ``t`` is a timestep of the sampler that
    runs the model (``sampling_alphas_cumprod``), called on the prior at the nearest-alpha_bar timestep of its own
    schedule. The prior itself is left as it was; every other attribute is the prior's (its name, space, device,
    and ``fuse`` for a prior inside the model's weights, see ``priorswap.toolkit.core.sampling.guided_eps``).
    """

    def __init__(self, prior: Any, sampling_alphas_cumprod: Tensor):
        self.prior, self.sampling_alphas_cumprod = prior, sampling_alphas_cumprod

    def __getattr__(self, name: str) -> Any:
        if name == "prior":  # not set yet (copy, unpickling)
            raise AttributeError(name)
        return getattr(self.prior, name)

    def model_timesteps(self, t: Tensor) -> Tensor:
        """Sampler timesteps -> the prior's own (identity when the schedules are the same)."""
        own = self.prior.alphas_cumprod
        if same_table(self.sampling_alphas_cumprod, own):
            return t
        return nearest_timestep(own, alpha_bar_at(self.sampling_alphas_cumprod, t.cpu())).to(t.device)

    def predict(self, x_t: Tensor, t: Tensor, conds: Sequence[Any]) -> list[Tensor]:
        t = torch.as_tensor(t, device=x_t.device)
        t = t.reshape(1).expand(x_t.shape[0]) if t.ndim == 0 else t
        return self.prior.predict(x_t, self.model_timesteps(t), conds)

    def __call__(self, x_t: Tensor, t: Tensor, cond: Any = None) -> Tensor:
        return self.predict(x_t, t, [cond])[0]

    def to(self, device=None, dtype=None) -> "PairedPrior":
        self.prior.to(device, dtype)
        return self


def pair(model: ModelDenoiser, prior: Any, latent_hw: tuple[int, int]) -> PairedPrior:
    """``prior`` checked against ``model`` and put on its sampling schedule, as a new :class:`PairedPrior` that the
    sampler takes as its prior (``prior`` itself is not changed). Raises a one-line error."""
    problem = pairing_problem(model, prior, latent_hw)
    if problem:
        raise PriorswapError(f"cannot use {prior.name} as the prior of {model.name}: {problem}")
    return PairedPrior(prior, model.alphas_cumprod)


def schedule_mismatch(model: ModelDenoiser, prior: ModelDenoiser) -> float:
    """Largest alpha_bar gap left after nearest-timestep pairing (0 when the schedules are identical)."""
    return pairing_error(model.alphas_cumprod, prior.alphas_cumprod)
