"""High-level Python API: load, pair and sample in one call.

    from priorswap.toolkit.api import sample_dit
    vanilla = sample_dit("my-food101-dit", labels=[0, 3, 7], guidance_scale=1.5)
    swapped = sample_dit("my-food101-dit", labels=[0, 3, 7], guidance_scale=1.5, prior="facebook/DiT-XL-2-256")
    free = sample_dit("my-food101-lora", labels=[0, 3, 7], prior="base")  # a LoRA: Eq. 7 from one copy of the weights

All calls draw the same per-sample noise, so the results compare like for like.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .checks import FREE_PRIOR, label_ids
from .core.loading import Loaded, load_dit, load_prior
from .core.pairing import pair
from .core.sampling import Guidance, sample, vae_decoder
from .errors import PriorswapError


def resolve_prior(
    model: Loaded, prior: str | None, dtype: torch.dtype | None = None, device: str | torch.device = "cpu"
) -> Loaded | None:
    """The prior of ``model``: None (vanilla CFG), ``"base"`` (a LoRA's own base, run in the same batched forward:
    :class:`priorswap.toolkit.lora.BasePrior`), or a model folder / hub id loaded in ``dtype``."""
    if prior is None:
        return None
    if prior != FREE_PRIOR:
        return load_prior(prior, dtype, device)
    from .dit.lora import LoRADiTDenoiser
    from .lora import BasePrior

    den = model.denoiser
    if not isinstance(den, LoRADiTDenoiser):
        raise PriorswapError(
            f"--prior base is the base inside a LoRA fine-tune, but {den.name} is a full model (a merged LoRA is one too); "
            "give its base model's folder or hub id as --prior"
        )
    return Loaded(BasePrior(den), model.scheduler_config, None, {}, FREE_PRIOR)


def class_conditional_samples(
    model: Loaded,
    labels: torch.Tensor,
    guidance: Guidance,
    prior: Loaded | None = None,
    steps: int = 50,
    seed: int = 0,
    scheduler: str = "ddim",
    batch_size: int = 8,
    progress: bool = True,
    desc: str = "sampling",
) -> torch.Tensor:
    """Images (N, C, H, W) in [0, 1] of a loaded DiT, one per label (Eq. 6; Eq. 7 with ``prior``); sample i uses seed + i."""
    den = model.denoiser
    size = den.sample_size
    if prior is not None:
        pair(den, prior.denoiser, (size, size))
    return sample(
        den,
        labels.to(den.device),
        guidance,
        prior=None if prior is None else prior.denoiser,
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


def sample_dit(
    model: str,
    labels: Sequence[int | str],
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
    """Load a DiT (and optionally a prior) from folders or hub ids and sample ``labels`` (class ids, or names from
    the model's id2label). ``model`` may be a LoRA export; then ``prior="base"`` is its own base, for free."""
    loaded = load_dit(model, "model", dtype, device)
    den = loaded.denoiser
    lab = den.check_labels(label_ids(list(labels), loaded.id2label, den.num_classes, den.name))
    base = resolve_prior(loaded, prior, dtype, device)
    guidance = Guidance(scale=guidance_scale, prior_mix=prior_mix, guided_channels=guided_channels)
    return class_conditional_samples(loaded, lab, guidance, base, steps, seed, scheduler, batch_size, progress=progress)
