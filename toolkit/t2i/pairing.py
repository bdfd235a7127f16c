"""May a prior stand in for a text-to-image model: decided from config files, before any weights load.

The swap hands the model's noisy latent to the prior, so both must read the same latent space (same VAE
statistics: channels, scaling and shift factors; e.g. SDXL and PixArt-Sigma share SDXL's VAE) and the same kind of
noise process (a DDPM schedule's x_t is not a flow-matching interpolation).
"""

from __future__ import annotations

from ..errors import PriorswapError
from .load import Info


def pairing_problem(model: Info, prior: Info) -> str | None:
    """Why ``prior`` cannot answer ``model``'s unconditional half, or None."""
    if model.flow != prior.flow:
        kinds = {True: "flow matching", False: "a DDPM schedule"}
        return f"it is {kinds[prior.flow]} and the model is {kinds[model.flow]}"
    names = ("latent channels", "VAE scaling factor", "VAE shift factor")
    for name, a, b in zip(names, model.vae, prior.vae):
        if abs(a - b) > 1e-6:
            return f"its {name} is {b:g} and the model's is {a:g} (another latent space)"
    return None


def check_pairing(model: Info, prior: Info) -> None:
    problem = pairing_problem(model, prior)
    if problem:
        raise PriorswapError(f"--prior {prior.name!r} cannot stand in for {model.name!r}: {problem}")
