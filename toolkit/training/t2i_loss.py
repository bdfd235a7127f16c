"""The objective each text-to-image family was trained with, on diffusers' own schedulers and training utilities.

- SD1.x/2.x, SDXL, PixArt: DDPM noising (``DDPMScheduler.add_noise``), target eps or v (``get_velocity``) by the
  scheduler config's ``prediction_type``, MSE. A learned-sigma network (PixArt: 2C output channels) is trained on its
  eps half only, as diffusers' PixArt training does.
- SD3/SD3.5: rectified flow as diffusers' ``train_dreambooth_lora_sd3.py`` trains it: u from
  ``compute_density_for_timestep_sampling``, timestep and sigma at ``u * num_train_timesteps`` in the
  ``FlowMatchEulerDiscreteScheduler``'s (shifted) tables, x_t = (1 - sigma) x_0 + sigma eps, target eps - x_0 (or,
  with ``precondition_outputs``, x_0 from pred * (-sigma) + x_t), weighted by ``compute_loss_weighting_for_sd3``.
"""

from __future__ import annotations

import torch
from diffusers.training_utils import compute_density_for_timestep_sampling, compute_loss_weighting_for_sd3
from torch import Tensor

from .t2i_text import Family


def ddpm_noising(sched, x0: Tensor, noise: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """(x_t, target) of a DDPM-family scheduler at integer timesteps t (B,)."""
    x_t = sched.add_noise(x0, noise, t)
    kind = sched.config.prediction_type
    if kind == "epsilon":
        return x_t, noise
    if kind == "v_prediction":
        return x_t, sched.get_velocity(x0, noise, t)
    raise ValueError(f"unsupported prediction_type {kind!r} (epsilon or v_prediction)")


def ddpm_loss(pred: Tensor, target: Tensor) -> Tensor:
    """MSE on the first C channels (a learned-sigma network's eps half), in float32."""
    return torch.nn.functional.mse_loss(pred[:, : target.shape[1]].float(), target.float())


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
    return (w.float() * (pred - target) ** 2).reshape(pred.shape[0], -1).mean(1).mean()


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
