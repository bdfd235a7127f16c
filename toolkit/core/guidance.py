"""Guidance as pure tensor functions (no models, no project imports).

Vanilla and prior-swapped CFG are the *same* function: they differ only in who produced
``uncond`` (the fine-tuned model itself, paper Eq. 6, or a base model, Eq. 7), exactly as
edm2 guides with a second network. The extras (interval, rescale, prior mix) are off by default.
"""

from __future__ import annotations

import torch
from torch import Tensor


def cfg(cond: Tensor, uncond: Tensor, scale: float, guided_channels: int | None = None) -> Tensor:
    """Classifier-free guidance, Eq. 6 (Eq. 7 when ``uncond`` comes from the base model).

    eps = uncond + scale * (cond - uncond).
    ``guided_channels=k`` guides only the first k channels and keeps ``cond`` elsewhere, which is what
    the original DiT code does with k=3 ("for reproducibility"); ``None`` guides all channels (diffusers).
    """
    guided = uncond + scale * (cond - uncond)
    if guided_channels is None or guided_channels >= cond.shape[1]:
        return guided
    return torch.cat([guided[:, :guided_channels], cond[:, guided_channels:]], dim=1)


def dual_cfg(full: Tensor, image_only: Tensor, uncond: Tensor, image_scale: float, text_scale: float) -> Tensor:
    """Dual-condition CFG, Eq. 8/9 (InstructPix2Pix, DynamiCrafter).

    eps = u + gI * (eps(cI, null) - u) + gT * (eps(cI, cT) - eps(cI, null)), with u = eps(null, null).
    Only ``uncond`` (= u) is swappable for a base prior; ``image_only`` always comes from the fine-tuned model.
    """
    return uncond + image_scale * (image_only - uncond) + text_scale * (full - image_only)


def mix_prior(prior_uncond: Tensor, own_uncond: Tensor, lam: float) -> Tensor:
    """Blend the unconditional terms: lam * eps_prior + (1 - lam) * eps_ft.

    lam = 1 is the paper's method (full swap), lam = 0 is vanilla CFG.
    """
    if lam == 1.0:
        return prior_uncond
    if lam == 0.0:
        return own_uncond
    return torch.lerp(own_uncond, prior_uncond, lam)


def rescale(guided: Tensor, cond: Tensor, phi: float) -> Tensor:
    """Guidance rescale (Lin et al. 2023, Eq. 15-16): match the per-sample std of ``cond``, then lerp by phi.

    phi = 0 returns ``guided`` unchanged.
    """
    if phi == 0.0:
        return guided
    dims = tuple(range(1, guided.ndim))
    ratio = cond.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True).clamp_min(1e-12)
    return torch.lerp(guided, guided * ratio, phi)


def in_interval(t_frac: float, interval: tuple[float, float] | None) -> bool:
    """Guidance interval (Kynkaanniemi et al. 2024): guide only while t/T lies in [lo, hi].

    ``t_frac`` is the sampler's timestep divided by its number of training steps (1 = pure noise).
    ``None`` means always guide.
    """
    if interval is None:
        return True
    lo, hi = interval
    return lo <= t_frac <= hi
