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

from .checks import label_ids
from .core.sampling import Guidance
from .dit.load import load_dit
from .dit.run import class_conditional_samples, paired_prior
from .priors import load_prior, resolve_prior

__all__ = ["class_conditional_samples", "load_dit", "load_prior", "resolve_prior", "sample_dit"]


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
    lab = torch.tensor(label_ids(list(labels), loaded.id2label, den.num_classes, den.name), dtype=torch.long)
    base = paired_prior(loaded, resolve_prior(loaded, prior, dtype, device))
    guidance = Guidance(scale=guidance_scale, prior_mix=prior_mix, guided_channels=guided_channels)
    return class_conditional_samples(loaded, lab, guidance, base, steps, seed, scheduler, batch_size, progress=progress)
