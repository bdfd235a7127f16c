"""Noise-schedule maths: alpha_bar lookup, the paper's nearest-alpha_bar pairing, and eps/v/x0 conversion.

Pure tensor code (no models, no project imports). Every schedule here is variance preserving:
x_t = sqrt(a) * x_0 + sqrt(1 - a) * eps with a = alpha_bar(t), so the same x_t can be handed to a
model trained on another schedule once it is called at the timestep t' whose alpha_bar is closest
(paper Sec. 4.2, docs/method.md trap 4).
"""

from __future__ import annotations

import torch
from torch import Tensor

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def alpha_bar_at(alphas_cumprod: Tensor, t: Tensor) -> Tensor:
    """alpha_bar at (possibly fractional) timesteps t, linear in the table index.

    Integer t reads the table exactly; fractional t (Euler-type samplers) interpolates between neighbours.
    Returns float64 with the shape of ``t``.
    """
    table = alphas_cumprod.to(torch.float64)
    tf = t.to(torch.float64).clamp(0, len(table) - 1)
    lo = tf.floor().long()
    hi = (lo + 1).clamp(max=len(table) - 1)
    w = tf - lo.to(torch.float64)
    return table[lo] * (1 - w) + table[hi] * w


def nearest_timestep(alphas_cumprod: Tensor, alpha_bar: Tensor) -> Tensor:
    """The timestep t' of a schedule whose alpha_bar(t') is closest to ``alpha_bar`` (the paper's rule).

    ``alpha_bar`` may have any shape; the result is a long tensor of that shape.
    """
    table = alphas_cumprod.to(torch.float64).to(alpha_bar.device)
    diff = (alpha_bar.to(torch.float64)[..., None] - table).abs()  # (..., T)
    return diff.argmin(dim=-1)


def to_eps(output: Tensor, x_t: Tensor, alpha_bar: Tensor, prediction_type: str) -> Tensor:
    """Convert a model output of any prediction type to eps, with the model's own alpha_bar (docs/method.md trap 5).

    v:  eps = sqrt(a) * v + sqrt(1 - a) * x_t
    x0: eps = (x_t - sqrt(a) * x0) / sqrt(1 - a)
    ``alpha_bar`` is a scalar or a per-sample (B,) tensor.
    """
    if prediction_type == "epsilon":
        return output
    a = _per_sample(alpha_bar, output)
    if prediction_type == "v_prediction":
        return (a.sqrt() * output + (1 - a).sqrt() * x_t).to(output.dtype)
    if prediction_type == "sample":
        return ((x_t - a.sqrt() * output) / (1 - a).clamp_min(1e-12).sqrt()).to(output.dtype)
    raise ValueError(f"unknown prediction_type {prediction_type!r}; expected one of {PREDICTION_TYPES}")


def from_eps(eps: Tensor, x_t: Tensor, alpha_bar: Tensor, prediction_type: str) -> Tensor:
    """Inverse of :func:`to_eps`: what a model of ``prediction_type`` outputs when its eps is ``eps``."""
    if prediction_type == "epsilon":
        return eps
    a = _per_sample(alpha_bar, eps)
    x0 = (x_t - (1 - a).sqrt() * eps) / a.sqrt()
    if prediction_type == "sample":
        return x0.to(eps.dtype)
    if prediction_type == "v_prediction":
        return (a.sqrt() * eps - (1 - a).sqrt() * x0).to(eps.dtype)
    raise ValueError(f"unknown prediction_type {prediction_type!r}; expected one of {PREDICTION_TYPES}")


def pairing_error(sampler_alphas_cumprod: Tensor, model_alphas_cumprod: Tensor) -> float:
    """Largest |alpha_bar - alpha_bar(t')| over the sampler's timesteps after nearest pairing.

    This is the residual schedule mismatch a swapped prior runs with (0 for identical schedules).
    """
    a = sampler_alphas_cumprod.to(torch.float64)
    t_prime = nearest_timestep(model_alphas_cumprod, a)
    return float((a - model_alphas_cumprod.to(torch.float64)[t_prime]).abs().max())


def _per_sample(alpha_bar: Tensor, like: Tensor) -> Tensor:
    """alpha_bar as a scalar or (B, 1, 1, ...) tensor, in float32 (float64 for float64 inputs)."""
    dtype = torch.float64 if like.dtype == torch.float64 else torch.float32
    a = torch.as_tensor(alpha_bar, device=like.device).to(dtype)
    return a if a.ndim == 0 else a.reshape(-1, *([1] * (like.ndim - 1)))
