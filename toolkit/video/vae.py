"""The lvdm (LDM) image VAE as a diffusers ``AutoencoderKL``, converted by diffusers' own LDM key map.

DynamiCrafter and VideoCrafter1 use the Stable Diffusion VAE layout (``lvdm/modules/networks/ae_modules.py``):
frames go through it one by one (``lvdm/models/ddpm3d.py`` 621-667).
"""

from __future__ import annotations

from typing import Mapping

import torch
from diffusers import AutoencoderKL
from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint
from torch import Tensor

from ..errors import PriorswapError

LDM_VAE_PREFIX = "first_stage_model."


def diffusers_vae_config(ddconfig: Mapping, scale_factor: float) -> dict:
    """diffusers ``AutoencoderKL`` config for an upstream ``first_stage_config.params.ddconfig``, or a one-line
    error for what diffusers' blocks cannot express."""
    if ddconfig.get("attn_resolutions"):
        raise PriorswapError(
            f"VAE ddconfig attn_resolutions={list(ddconfig['attn_resolutions'])}: diffusers' DownEncoderBlock2D/UpDecoderBlock2D have no attention; only [] converts"
        )
    unsupported = {
        "double_z": (ddconfig.get("double_z", True), True),  # diffusers' encoder always outputs mean and logvar
        "attn_type": (ddconfig.get("attn_type", "vanilla"), "vanilla"),  # the mid block's softmax attention
        "use_linear_attn": (ddconfig.get("use_linear_attn", False), False),
        "tanh_out": (ddconfig.get("tanh_out", False), False),
        "give_pre_end": (ddconfig.get("give_pre_end", False), False),
    }
    for name, (seen, wanted) in unsupported.items():
        if seen != wanted:
            raise PriorswapError(
                f"VAE ddconfig {name}={seen!r} has no diffusers AutoencoderKL equivalent; only {wanted!r} converts"
            )
    levels = len(ddconfig["ch_mult"])
    return {
        "in_channels": int(ddconfig["in_channels"]),
        "out_channels": int(ddconfig["out_ch"]),
        "down_block_types": ["DownEncoderBlock2D"] * levels,
        "up_block_types": ["UpDecoderBlock2D"] * levels,
        "block_out_channels": [int(ddconfig["ch"]) * int(m) for m in ddconfig["ch_mult"]],
        "layers_per_block": int(ddconfig["num_res_blocks"]),
        "latent_channels": int(ddconfig["z_channels"]),
        "norm_num_groups": 32,  # ae_modules.py 15-16: Normalize is GroupNorm(32, eps=1e-6), as diffusers' VAE blocks
        "sample_size": int(ddconfig["resolution"]),
        "scaling_factor": float(scale_factor),
    }


def ldm_vae_to_diffusers(state_dict: Mapping[str, Tensor], ddconfig: Mapping, scale_factor: float) -> AutoencoderKL:
    """A diffusers VAE holding the LDM VAE weights of ``state_dict`` (keys with or without ``first_stage_model.``;
    other models' keys in a whole checkpoint are ignored), loaded strictly: every VAE key used, none missing."""
    config = diffusers_vae_config(ddconfig, scale_factor)
    if any(k.startswith(LDM_VAE_PREFIX) for k in state_dict):
        source = {k[len(LDM_VAE_PREFIX) :]: v for k, v in state_dict.items() if k.startswith(LDM_VAE_PREFIX)}
    else:
        source = dict(state_dict)
    converted = convert_ldm_vae_checkpoint(source, config)
    # The conversion drops keys it has no name for without a word; each converted tensor is a view of its
    # source tensor, so a source tensor whose data no converted tensor shares was not used.
    used = {t.data_ptr() for t in converted.values()}
    unused = sorted(k for k, t in source.items() if t.data_ptr() not in used)
    if unused:
        raise PriorswapError(f"{len(unused)} VAE keys have no diffusers counterpart, e.g. {unused[:3]}")
    vae = AutoencoderKL(**config)
    try:
        result = vae.load_state_dict(converted, strict=False)
    except RuntimeError as e:  # shape mismatches: the checkpoint and ddconfig disagree
        raise PriorswapError(
            f"VAE weights do not fit ddconfig {dict(ddconfig)}: {str(e).splitlines()[-1].strip()}"
        ) from e
    if result.missing_keys or result.unexpected_keys:
        raise PriorswapError(
            f"VAE weights do not fit ddconfig: missing {result.missing_keys[:3]} ({len(result.missing_keys)}), "
            f"unexpected {result.unexpected_keys[:3]} ({len(result.unexpected_keys)})"
        )
    return vae.eval().requires_grad_(False)


@torch.no_grad()
def encode_mean(vae: AutoencoderKL, images: Tensor) -> Tensor:
    """Posterior mean (B, 4, H/8, W/8), unscaled, of images (B, 3, H, W) in [-1, 1].

    Upstream samples the posterior (``lvdm/distributions.py`` 35-40); the released VAE's posterior is near a point
    (tiny std), so the mean is the deterministic stand-in. Multiply by the scale factor for the UNet's space.
    """
    return vae.encode(images).latent_dist.mean


@torch.no_grad()
def decode_frames(vae: AutoencoderKL, z: Tensor, scale_factor: float) -> Tensor:
    """Frames (B, 3, T, H, W), not clamped, of scaled latents (B, 4, T, h, w), one frame per decoder call
    (``ddpm3d.py`` 646-667, ``perframe_ae``), unscaled as upstream writes it: ``1. / scale_factor * z``."""
    b, _, t, _, _ = z.shape
    frames = z.transpose(1, 2).flatten(0, 1)  # (B*T, 4, h, w), b-major as upstream's 'b c t h w -> (b t) c h w'
    out = torch.cat([vae.decode(1.0 / scale_factor * frames[i : i + 1]).sample for i in range(b * t)])  # (B*T, 3, H, W)
    return out.unflatten(0, (b, t)).transpose(1, 2)  # (B, 3, T, H, W)
