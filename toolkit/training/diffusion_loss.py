"""DiT's training objective: eps-MSE plus the learned-variance VLB term (Nichol & Dhariwal 2021, Eq. 16).

DiT trains with L = L_simple + L_vlb, where L_vlb sees a *frozen* eps so that it only trains the variance
head (the ``learned_range`` parameterisation, Nichol & Dhariwal Eq. 15). Keeping that head trained keeps
fine-tuned checkpoints usable with samplers that read the variance channels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class DiffusionSchedule:
    """Per-timestep constants of a discrete DDPM schedule (float64, on the CPU until moved)."""

    betas: Tensor
    alphas_cumprod: Tensor
    alphas_cumprod_prev: Tensor
    posterior_variance: Tensor
    posterior_log_variance_clipped: Tensor
    posterior_mean_coef1: Tensor
    posterior_mean_coef2: Tensor

    @classmethod
    def from_betas(cls, betas: Tensor) -> "DiffusionSchedule":
        betas = betas.to(torch.float64)
        ac = torch.cumprod(1 - betas, 0)
        ac_prev = torch.cat([ac.new_ones(1), ac[:-1]])
        post_var = betas * (1 - ac_prev) / (1 - ac)
        post_log = torch.log(torch.cat([post_var[1:2], post_var[1:]]))  # clip the 0 at t = 0
        return cls(
            betas=betas,
            alphas_cumprod=ac,
            alphas_cumprod_prev=ac_prev,
            posterior_variance=post_var,
            posterior_log_variance_clipped=post_log,
            posterior_mean_coef1=betas * ac_prev.sqrt() / (1 - ac),
            posterior_mean_coef2=(1 - ac_prev) * (1 - betas).sqrt() / (1 - ac),
        )

    @property
    def num_timesteps(self) -> int:
        return len(self.betas)

    def at(self, name: str, t: Tensor, like: Tensor) -> Tensor:
        """Table ``name`` at timesteps t (B,), shaped (B, 1, 1, 1) in ``like``'s dtype and device."""
        v = getattr(self, name).to(like.device)[t]
        return v.reshape(-1, *([1] * (like.ndim - 1))).to(torch.float32)

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) eps (DDPM Eq. 4)."""
        a = self.at("alphas_cumprod", t, x0)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise


def normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)), elementwise."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def discretized_gaussian_nll(x: Tensor, mean: Tensor, log_scale: Tensor) -> Tensor:
    """-log p(x) of data in [-1, 1] quantised to 256 bins under N(mean, e^(2 log_scale)) (DDPM Eq. 13)."""
    inv_std = torch.exp(-log_scale)
    cdf_plus = torch.special.ndtr(inv_std * (x - mean + 1.0 / 255))
    cdf_min = torch.special.ndtr(inv_std * (x - mean - 1.0 / 255))
    log_cdf_plus = torch.log(cdf_plus.clamp_min(1e-12))
    log_one_minus_cdf_min = torch.log((1 - cdf_min).clamp_min(1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp_min(1e-12))
    log_probs = torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))
    return -log_probs


def vlb_bits(sched: DiffusionSchedule, x0: Tensor, x_t: Tensor, t: Tensor, eps: Tensor, var_values: Tensor) -> Tensor:
    """Per-sample VLB term L_{t-1} in bits/dim for the learned_range variance (Nichol & Dhariwal Eq. 15).

    ``eps`` should be detached (frozen mean), so only ``var_values`` (raw outputs in [-1, 1]) get gradients.
    """
    a = sched.at("alphas_cumprod", t, x0)
    true_mean = sched.at("posterior_mean_coef1", t, x0) * x0 + sched.at("posterior_mean_coef2", t, x0) * x_t
    true_logvar = sched.at("posterior_log_variance_clipped", t, x0)
    pred_x0 = (x_t - (1 - a).sqrt() * eps) / a.sqrt()
    model_mean = sched.at("posterior_mean_coef1", t, x0) * pred_x0 + sched.at("posterior_mean_coef2", t, x0) * x_t
    min_log = true_logvar
    max_log = torch.log(sched.at("betas", t, x0))
    frac = (var_values + 1) / 2
    model_logvar = frac * max_log + (1 - frac) * min_log
    dims = tuple(range(1, x0.ndim))
    kl = normal_kl(true_mean, true_logvar, model_mean, model_logvar).mean(dim=dims) / math.log(2.0)
    nll = discretized_gaussian_nll(x0, model_mean, 0.5 * model_logvar).mean(dim=dims) / math.log(2.0)
    return torch.where(t == 0, nll, kl)
