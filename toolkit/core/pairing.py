"""Checks that a prior can stand in for a fine-tuned model's unconditional branch, before any sampling.

Two models can be paired when they denoise the same space: the same latent channels, the same VAE
statistics (docs/method.md trap 8: SD1.x/SD2.x/PixArt-alpha/DiT share the SD VAE, SDXL's or a video VAE does
not), and a latent size the prior accepts (docs/method.md trap 9). Schedules may differ: the prior is then called at
the nearest-alpha_bar timestep (docs/method.md trap 4), and :func:`priorswap.toolkit.core.schedules.pairing_error` says by how much.
"""

from __future__ import annotations

from ..errors import PriorswapError
from .denoisers import ModelDenoiser
from .schedules import pairing_error


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


def pair(model: ModelDenoiser, prior: ModelDenoiser, latent_hw: tuple[int, int]) -> ModelDenoiser:
    """Validate the pair and put ``prior`` on ``model``'s sampling schedule. Raises a one-line error."""
    problem = pairing_problem(model, prior, latent_hw)
    if problem:
        raise PriorswapError(f"cannot use {prior.name} as the prior of {model.name}: {problem}")
    prior.sampling_alphas_cumprod = model.alphas_cumprod
    return prior


def schedule_mismatch(model: ModelDenoiser, prior: ModelDenoiser) -> float:
    """Largest alpha_bar gap left after nearest-timestep pairing (0 when the schedules are identical)."""
    return pairing_error(model.alphas_cumprod, prior.alphas_cumprod)
