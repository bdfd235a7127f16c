"""High-level Python API: load, pair and sample in one call.

    from priorswap.toolkit.api import sample_dit
    vanilla = sample_dit("my-food101-dit", labels=[0, 3, 7], guidance_scale=1.5)
    swapped = sample_dit("my-food101-dit", labels=[0, 3, 7], guidance_scale=1.5, prior="facebook/DiT-XL-2-256")

Both calls draw the same per-sample noise, so the two results compare like for like.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .loading import Loaded, load_dit, load_prior
from .pairing import pair
from .sampling import Guidance, cfg_eps, generate, make_scheduler, vae_decoder


def class_conditional_samples(
    model: Loaded,
    labels: torch.Tensor | None,
    guidance: Guidance,
    prior: Loaded | None = None,
    steps: int = 50,
    seed: int = 0,
    scheduler: str = "ddim",
    batch_size: int = 8,
    num_samples: int | None = None,
    progress: bool = True,
    desc: str = "sampling",
) -> torch.Tensor:
    """Images (N, C, H, W) in [0, 1] from a loaded DiT; ``labels=None`` samples unconditionally.

    Sample i uses seed + i. With ``prior`` the unconditional branch comes from it (Eq. 7).
    """
    den = model.denoiser
    size = den.sample_size
    shape = (den.latent_channels, size, size)
    if prior is not None:
        pair(den, prior.denoiser, (size, size))
    n = len(labels) if labels is not None else int(num_samples or 0)
    sched = make_scheduler(scheduler, model.scheduler_config)
    device = den.device

    def make_eps(part: slice):
        cond = None if labels is None else labels[part].to(device)
        return cfg_eps(den, cond, guidance, None if prior is None else prior.denoiser, sched.config.num_train_timesteps)

    decode = vae_decoder(model.vae) if model.vae is not None else None
    return generate(make_eps, sched, [seed + i for i in range(n)], shape, steps, batch_size, device, decode, progress, desc)


def sample_dit(
    model: str,
    labels: Sequence[int],
    prior: str | None = None,
    guidance_scale: float = 1.5,
    steps: int = 50,
    seed: int = 0,
    scheduler: str = "ddim",
    batch_size: int = 8,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    guided_channels: int | None = None,
    prior_mix: float = 1.0,
    progress: bool = True,
) -> torch.Tensor:
    """Load a DiT (and optionally a prior) from folders or hub ids and sample ``labels``."""
    loaded = load_dit(model, "model", dtype, device)
    lab = loaded.denoiser.check_labels(labels)
    base = load_prior(prior, dtype, device) if prior else None
    guidance = Guidance(scale=guidance_scale, prior_mix=prior_mix, guided_channels=guided_channels)
    return class_conditional_samples(loaded, lab, guidance, base, steps, seed, scheduler, batch_size, progress=progress)
