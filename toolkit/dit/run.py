"""Sample a loaded DiT: one image per class label, vanilla (Eq. 6) or with a paired prior (Eq. 7)."""

from __future__ import annotations

import torch

from ..core.denoisers import Denoiser
from ..core.loading import Loaded
from ..core.pairing import pair
from ..core.sampling import Guidance, sample, vae_decoder


def class_conditional_samples(
    model: Loaded,
    labels: torch.Tensor,
    guidance: Guidance,
    prior: Denoiser | None = None,
    steps: int = 50,
    seed: int = 0,
    scheduler: str = "ddim",
    batch_size: int = 8,
    progress: bool = True,
    desc: str = "sampling",
) -> torch.Tensor:
    """Images (N, C, H, W) in [0, 1] of a loaded DiT, one per label (Eq. 6; Eq. 7 with ``prior``, already paired with
    the model by ``priorswap.toolkit.core.pairing.pair``); sample i uses seed + i."""
    den = model.denoiser
    size = den.sample_size
    return sample(
        den,
        labels.to(den.device),
        guidance,
        prior=prior,
        seeds=[seed + i for i in range(len(labels))],
        shape=(den.latent_channels, size, size),
        steps=steps,
        scheduler=scheduler,
        scheduler_config=model.scheduler_config,
        decode=vae_decoder(model.vae) if model.vae is not None else None,
        batch_size=batch_size,
        progress=progress,
        desc=desc,
    )


def paired_prior(model: Loaded, prior: Loaded | None) -> Denoiser | None:
    """``prior``'s denoiser paired with the DiT ``model`` (a one-line error if it cannot stand in), or None."""
    den = model.denoiser
    return None if prior is None else pair(den, prior.denoiser, (den.sample_size, den.sample_size))
