"""Upstream's DDIM (``lvdm/models/samplers/ddim.py`` and ``utils_diffusion.py`` in DynamiCrafter), as a scheduler the
project's one sampling loop (:func:`priorswap.toolkit.core.sampling.denoise`) drives like a diffusers one.

It differs from diffusers' ``DDIMScheduler`` where a DynamiCrafter user would notice:
- the grids are upstream's: ``uniform`` = ``range(0, T, T // S) + 1`` (t = 1, 21, ..., 981 for 50 steps; the
  released scripts' default) and ``uniform_trailing`` = ``round(arange(T, 0, -T / S))`` flipped, minus 1
  (t = 999, 666, 332 for 3 steps);
- alpha_bar_prev is the *previous grid point's* alpha_bar, and ``alphas_cumprod[0]`` after the last step (not 1);
  diffusers steps back by T // S instead, which differs on the trailing grid;
- eta's noise is drawn per sample from that sample's generator, so sample i is a function of seed + i alone
  (upstream draws from the global RNG).
The update is DDIM's (Song et al. 2021, Eq. 12): x_prev = sqrt(a_prev) x0 + sqrt(1 - a_prev - sigma^2) eps + sigma z,
with sigma = eta sqrt((1 - a_prev) / (1 - a_t) (1 - a_t / a_prev)), in upstream's float32 arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import torch
from torch import Tensor

from ..errors import PriorswapError
from .config import SPACINGS, VideoModelConfig


def alphas_cumprod(cfg: VideoModelConfig) -> Tensor:
    """Upstream's schedule (``make_beta_schedule("linear")``): betas = linspace(sqrt(start), sqrt(end), T)² in float64,
    alpha_bar = cumprod(1 - betas), then stored as float32 (``ddpm3d.py`` register_schedule)."""
    betas = torch.linspace(cfg.linear_start**0.5, cfg.linear_end**0.5, cfg.timesteps, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0).to(torch.float32)


def ddim_timesteps(spacing: str, steps: int, num_train_timesteps: int = 1000) -> np.ndarray:
    """The grid in increasing order (upstream ``make_ddim_timesteps``)."""
    if steps < 1:
        raise PriorswapError(f"--steps must be at least 1, got {steps}")
    T = num_train_timesteps
    if spacing == "uniform":
        grid = np.arange(0, T, T // steps) + 1 if steps <= T else None
        if grid is None or grid[-1] > T - 1:
            n = 0 if grid is None else len(grid)
            raise PriorswapError(
                f"--steps {steps} on the uniform grid gives {n} steps ending at t = {T}, outside the {T}-step "
                "schedule (upstream fails there too); use a step count that divides 1000 or "
                "--timestep-spacing uniform_trailing"
            )
        return grid
    if spacing == "uniform_trailing":
        return np.flip(np.round(np.arange(T, 0, -T / steps))).astype(np.int64) - 1
    raise PriorswapError(f"unknown --timestep-spacing {spacing!r}; choose one of {', '.join(SPACINGS)}")


@dataclass(frozen=True)
class UpstreamDDIMConfig:
    alphas_cumprod: tuple[float, ...]  # float32 values of the model's schedule
    spacing: str = "uniform"
    eta: float = 1.0

    @property
    def num_train_timesteps(self) -> int:
        return len(self.alphas_cumprod)


class UpstreamDDIM:
    """``set_timesteps`` / ``timesteps`` / ``step(eps, t, x, generator=[...])`` as diffusers schedulers have."""

    init_noise_sigma = 1.0
    order = 1

    def __init__(self, config: UpstreamDDIMConfig):
        if config.eta < 0:
            raise PriorswapError(f"--eta must be at least 0, got {config.eta}")
        ddim_timesteps(config.spacing, 1, config.num_train_timesteps)  # checks the spacing name
        self.config = config
        self.alphas_cumprod = torch.tensor(config.alphas_cumprod, dtype=torch.float32)
        self.timesteps = torch.zeros(0, dtype=torch.long)

    @classmethod
    def from_config(cls, config: UpstreamDDIMConfig) -> UpstreamDDIM:
        return cls(config)

    @classmethod
    def for_schedule(cls, alphas_cumprod: Tensor, spacing: str = "uniform", eta: float = 1.0) -> UpstreamDDIM:
        values = tuple(float(a) for a in torch.as_tensor(alphas_cumprod).to(torch.float32))
        return cls(UpstreamDDIMConfig(values, spacing, eta))

    def set_timesteps(self, steps: int, device: torch.device | str | None = None) -> None:
        grid = ddim_timesteps(self.config.spacing, steps, self.config.num_train_timesteps)
        ac = self.alphas_cumprod
        a = ac[torch.as_tensor(grid)]  # float32, as upstream's ddim_alphas
        a_prev = torch.cat([ac[:1], ac[torch.as_tensor(grid[:-1])]]).double()  # upstream builds these in float64
        sigma = self.config.eta * torch.sqrt((1 - a_prev) / (1 - a.double()) * (1 - a.double() / a_prev))
        self._a, self._a_prev, self._sigma = a, a_prev.float(), sigma.float()
        self._sqrt_one_minus_a = torch.sqrt(1.0 - a)  # float32 (upstream np.sqrt on the float32 tensor)
        self._index = {int(t): i for i, t in enumerate(grid)}
        self.timesteps = torch.as_tensor(grid[::-1].copy(), dtype=torch.long, device=device)

    def scale_model_input(self, x: Tensor, t: Tensor) -> Tensor:
        return x

    def step(self, eps: Tensor, t: Tensor, x: Tensor, generator: list[torch.Generator] | None = None):
        i = self._index[int(t)]
        size = (x.shape[0],) + (1,) * (x.ndim - 1)

        def full(v: Tensor) -> Tensor:  # upstream: torch.full(size, value) in the default float32
            return torch.full(size, float(v), device=x.device)

        a_t, a_prev, sigma = full(self._a[i]), full(self._a_prev[i]), full(self._sigma[i])
        x0 = (x - full(self._sqrt_one_minus_a[i]) * eps) / a_t.sqrt()
        x_prev = a_prev.sqrt() * x0 + (1.0 - a_prev - sigma**2).sqrt() * eps
        if float(self._sigma[i]) > 0:
            if generator is None or len(generator) != x.shape[0]:
                raise PriorswapError("DDIM with eta > 0 needs one generator per sample (paired noise)")
            z = torch.cat([torch.randn((1, *x.shape[1:]), generator=g) for g in generator]).to(x.device, x.dtype)
            x_prev = x_prev + sigma * z
        return SimpleNamespace(prev_sample=x_prev, pred_original_sample=x0)
