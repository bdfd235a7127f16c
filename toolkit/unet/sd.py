"""An SD-family LoRA against its own base, in one mixed batch (``priorswap sample sd``): load -> prepare -> rows.

The base is the LoRA with its adapter off, so the swap runs over one copy of the weights
(``priorswap.toolkit.lora``): [prompt, adapter on] + [empty prompt, adapter off]. The LoRA file is anything
diffusers' ``load_lora_weights`` reads (diffusers, peft or kohya formats).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

from diffusers import StableDiffusionPipeline
from torch import Tensor

from ..core.hub import first_line
from ..core.loading import latent_space, locate, model_name
from ..core.sampling import sample, vae_decoder
from ..errors import PriorswapError
from ..lora import BASE, BasePrior, per_sample_adapters
from .ip2p import prompt_embedding
from .text_prior import UNetPrior, empty_prompt_embedding


def load_sd_lora(model: str, lora: str, dtype, device) -> StableDiffusionPipeline:
    """The pipeline with the LoRA loaded: one-line errors for a bad pipeline or LoRA file."""
    ref = locate(model)
    try:
        pipe = StableDiffusionPipeline.from_pretrained(ref, torch_dtype=dtype, safety_checker=None)
    except (OSError, ValueError, TypeError) as e:
        raise PriorswapError(f"model {model!r} is not a Stable Diffusion pipeline ({first_line(e)})") from None
    if not os.path.exists(os.path.expanduser(lora)):
        raise PriorswapError(f"--lora {lora!r} does not exist")
    try:
        pipe.load_lora_weights(os.path.expanduser(lora))
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as e:
        raise PriorswapError(
            f"--lora {lora!r} is not a LoRA of {model!r} that diffusers reads ({first_line(e)})"
        ) from None
    return pipe.to(device)


@dataclass
class SDJob:
    """The LoRA'd UNet, its base (adapter off, same weights), the prompts' embeddings and the sampler settings."""

    denoiser: UNetPrior
    base: BasePrior
    cond: Tensor  # (N, L, D)
    settings: dict[str, Any]  # seeds, shape, steps, scheduler, decode, batch size, progress

    def rows(self, guidance) -> dict[str, Tensor]:
        """``{"vanilla": ..., "base prior": ...}``, images (N, 3, H, W) in [0, 1], prompt i from seed + i in both."""
        return {
            "vanilla": sample(self.denoiser, self.cond, guidance, desc="vanilla CFG", **self.settings),
            "base prior": sample(
                self.denoiser,
                self.cond,
                guidance,
                prior=self.base,
                desc="base prior (one mixed batch)",
                **self.settings,
            ),
        }


def prepare(
    pipe: StableDiffusionPipeline,
    model: str,
    lora: str,
    prompts: Sequence[str],
    seed: int,
    steps: int,
    scheduler: str,
    batch_size: int,
    progress: bool,
) -> SDJob:
    # Vanilla CFG is the LoRA'd pipeline as diffusers runs it: prompts and "" both through the text encoder with
    # its LoRA (if any) on. The swap takes the base's unconditional eps, so its "" goes through the base's text
    # encoder (text LoRA off); the prompts keep the LoRA in both rows.
    cond = prompt_embedding(pipe.tokenizer, pipe.text_encoder, prompts)  # (N, L, D)
    null, _ = empty_prompt_embedding(pipe.tokenizer, pipe.text_encoder)
    with per_sample_adapters(pipe.text_encoder, [BASE]):  # without a text LoRA: the same embedding
        base_null, _ = empty_prompt_embedding(pipe.tokenizer, pipe.text_encoder)
    sched = dict(pipe.scheduler.config)
    space = latent_space(model, sched, pipe.vae, int(pipe.unet.config.out_channels))
    den = UNetPrior(pipe.unet, null, space, name=f"{model_name(model)} + LoRA {lora}")
    base = BasePrior(den, null=base_null)  # refuses DoRA / merged LoRAs before any sampling
    size = int(pipe.unet.config.sample_size)
    settings = dict(
        seeds=[seed + i for i in range(len(prompts))],
        shape=(space.channels, size, size),
        steps=steps,
        scheduler=scheduler,
        scheduler_config=sched,
        decode=vae_decoder(pipe.vae),
        batch_size=batch_size,
        progress=progress,
    )
    return SDJob(den, base, cond, settings)
