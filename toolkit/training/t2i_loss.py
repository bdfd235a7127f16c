"""The objective each text-to-image family was trained with, on diffusers' own schedulers and training utilities.

- SD1.x/2.x, SDXL, PixArt: DDPM noising (``DDPMScheduler.add_noise``), target eps or v (``get_velocity``) by the
  scheduler config's ``prediction_type``, MSE. A learned-sigma network (PixArt: 2C output channels) is trained on its
  eps half only, as diffusers' PixArt training does.
- SD3/SD3.5: rectified flow as diffusers' ``train_dreambooth_lora_sd3.py`` trains it: u from
  ``compute_density_for_timestep_sampling``, timestep and sigma at ``u * num_train_timesteps`` in the
  ``FlowMatchEulerDiscreteScheduler``'s (shifted) tables, x_t = (1 - sigma) x_0 + sigma eps, target eps - x_0 (or,
  with ``precondition_outputs``, x_0 from pred * (-sigma) + x_t), weighted by ``compute_loss_weighting_for_sd3``.

Both give a loss per sample (B,), reduced by :func:`reduce_loss`: the batch mean, or, for a DreamBooth batch with
class rows (prior preservation), the instance rows' mean plus ``prior_loss_weight`` times the class rows' mean, as
diffusers' ``train_dreambooth_lora*.py`` compute it from the two halves of one batch. Min-SNR-gamma weighting
(``min_snr_weights``) and offset noise (``offset_noise``) are ``train_text_to_image*.py``'s ``--snr_gamma`` and
``--noise_offset``.
"""

from __future__ import annotations

import torch
from diffusers.training_utils import compute_density_for_timestep_sampling, compute_loss_weighting_for_sd3, compute_snr
from torch import Tensor

from ..errors import PriorswapError
from .t2i_text import Family


def check_loss_options(family: Family, snr_gamma: float | None, noise_offset: float, prior_loss_weight: float) -> None:
    """Refuse loss options the family's objective has no meaning for, before its weights load."""
    if snr_gamma is not None and not snr_gamma > 0:
        raise PriorswapError(f"model.snr_gamma must be > 0 (5.0 is the Min-SNR paper's), got {snr_gamma}")
    if noise_offset < 0:
        raise PriorswapError(f"model.noise_offset must be >= 0 (e.g. 0.05), got {noise_offset}")
    if prior_loss_weight < 0:
        raise PriorswapError(f"model.prior_loss_weight must be >= 0, got {prior_loss_weight}")
    if family.name != "sd3":
        return
    # SD3 trains by flow matching: no DDPM SNR to clip, and diffusers' SD3 scripts offer no noise offset (its
    # rationale, the zero-mean eps target that cannot move a DDPM image's mean, is argued for eps prediction only)
    if snr_gamma is not None:
        raise PriorswapError(
            "model.snr_gamma is Min-SNR weighting of DDPM (eps / v) models; SD3 is a flow-matching model: set "
            "model.weighting_scheme (logit_normal, mode, cosmap, sigma_sqrt, none) instead"
        )
    if noise_offset:
        raise PriorswapError(
            "model.noise_offset is for DDPM (eps / v) models; diffusers' SD3 training scripts have no noise offset "
            "for flow matching, so it is not offered: unset it"
        )


def ddpm_noising(sched, x0: Tensor, noise: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """(x_t, target) of a DDPM-family scheduler at integer timesteps t (B,)."""
    x_t = sched.add_noise(x0, noise, t)
    kind = sched.config.prediction_type
    if kind == "epsilon":
        return x_t, noise
    if kind == "v_prediction":
        return x_t, sched.get_velocity(x0, noise, t)
    raise ValueError(f"unsupported prediction_type {kind!r} (epsilon or v_prediction)")


def ddpm_loss(pred: Tensor, target: Tensor, weights: Tensor | None = None) -> Tensor:
    """Per-sample MSE (B,) on the first C channels (a learned-sigma network's eps half), in float32, times
    ``weights`` (B,) if given."""
    err = torch.nn.functional.mse_loss(pred[:, : target.shape[1]].float(), target.float(), reduction="none")
    per_sample = err.reshape(err.shape[0], -1).mean(1)
    return per_sample if weights is None else per_sample * weights.to(per_sample.device, per_sample.dtype)


def min_snr_weights(sched, t: Tensor, gamma: float) -> Tensor:
    """Min-SNR-gamma loss weights (Hang et al. 2023) at integer timesteps t (B,), as ``train_text_to_image.py``
    weights them: min(SNR, gamma) / SNR for an eps target, min(SNR, gamma) / (SNR + 1) for a v target (SNR from
    diffusers' ``compute_snr`` on the scheduler's alphas_cumprod)."""
    snr = compute_snr(sched, t)
    clipped = torch.minimum(snr, torch.full_like(snr, gamma))
    kind = sched.config.prediction_type
    if kind == "epsilon":
        return clipped / snr
    if kind == "v_prediction":
        return clipped / (snr + 1)
    raise ValueError(f"unsupported prediction_type {kind!r} (epsilon or v_prediction)")


def offset_noise(noise: Tensor, offset: Tensor, scale: float) -> Tensor:
    """Offset noise (crosslabs.org, "diffusion with offset noise"): noise + scale * a draw of shape (B, C, 1, 1), one
    constant per sample and channel, which lets the model move an image's mean brightness."""
    return noise + scale * offset.to(noise.device, noise.dtype)


def reduce_loss(per_sample: Tensor, prior: Tensor | None = None, prior_loss_weight: float = 1.0) -> Tensor:
    """The batch loss from per-sample losses (B,): their mean, or with ``prior`` (B,) marking a DreamBooth batch's
    class rows, mean(instance rows) + prior_loss_weight * mean(class rows)."""
    if prior is None or not bool(prior.any()):
        return per_sample.mean()
    prior = prior.to(per_sample.device, torch.bool)
    return per_sample[~prior].mean() + prior_loss_weight * per_sample[prior].mean()


def flow_density(b: int, gen: torch.Generator, scheme: str, logit_mean: float, logit_std: float, mode_scale: float):
    """u in [0, 1) of b samples by diffusers' density sampling; u * num_train_timesteps indexes the flow tables."""
    return compute_density_for_timestep_sampling(
        weighting_scheme=scheme,
        batch_size=b,
        logit_mean=logit_mean,
        logit_std=logit_std,
        mode_scale=mode_scale,
        generator=gen,
    )


def flow_noising(x0: Tensor, noise: Tensor, sigmas: Tensor) -> Tensor:
    s = sigmas.to(x0.device, x0.dtype).reshape(-1, *([1] * (x0.ndim - 1)))
    return (1.0 - s) * x0 + s * noise


def flow_loss(
    pred: Tensor, x0: Tensor, noise: Tensor, x_t: Tensor, sigmas: Tensor, scheme: str, precondition: bool
) -> Tensor:
    s = sigmas.to(x0.device, torch.float32).reshape(-1, *([1] * (x0.ndim - 1)))
    pred = pred.float()
    if precondition:
        pred, target = pred * (-s) + x_t.float(), x0.float()
    else:
        target = noise.float() - x0.float()
    w = compute_loss_weighting_for_sd3(weighting_scheme=scheme, sigmas=s)
    return (w.float() * (pred - target) ** 2).reshape(pred.shape[0], -1).mean(1)  # per sample (B,)


def sdxl_time_ids(original_size: Tensor, crop_top_left: Tensor, target_size: tuple[int, int]) -> Tensor:
    """SDXL's micro-conditioning (B, 6): original (h, w), crop (top, left), target (h, w), as its pipeline builds it."""
    target = original_size.new_tensor(target_size).expand(original_size.shape[0], 2)
    return torch.cat([original_size, crop_top_left, target], 1).float()


def predict(
    family: Family, net, x_t: Tensor, t: Tensor, cond: dict[str, Tensor], image_size: tuple[int, int]
) -> Tensor:
    """The denoiser's raw output on x_t at timesteps t, conditioned as the family's pipeline conditions it."""
    pe = cond["prompt_embeds"]
    if family.name == "sd":
        return net(x_t, t, encoder_hidden_states=pe).sample
    if family.name == "sdxl":
        added = {"text_embeds": cond["pooled_prompt_embeds"], "time_ids": cond["time_ids"]}
        return net(x_t, t, encoder_hidden_states=pe, added_cond_kwargs=added).sample
    if family.name == "sd3":
        return net(
            hidden_states=x_t, timestep=t, encoder_hidden_states=pe, pooled_projections=cond["pooled_prompt_embeds"]
        ).sample
    added = {"resolution": None, "aspect_ratio": None}
    if net.config.sample_size == 128:  # PixArt-alpha 1024 px reads size and aspect ratio, as its pipeline passes them
        h, w = image_size
        added = {
            "resolution": x_t.new_tensor([[h, w]]).expand(x_t.shape[0], 2),
            "aspect_ratio": x_t.new_tensor([[h / w]]).expand(x_t.shape[0], 1),
        }
    return net(
        x_t,
        encoder_hidden_states=pe,
        encoder_attention_mask=cond["prompt_attention_mask"],
        timestep=t,
        added_cond_kwargs=added,
    ).sample
