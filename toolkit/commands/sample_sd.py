"""``priorswap sample sd``: an SD-family LoRA, vanilla CFG against its base's own unconditional eps (Eq. 7).

Many SD LoRAs were trained without caption dropout, so their unconditional prediction is untrained. The base is
the LoRA with its adapter off, so the swap runs as one mixed batch over one copy of the weights
(``priorswap.toolkit.lora``): [prompt, adapter on] + [empty prompt, adapter off]. The LoRA file is anything
diffusers' ``load_lora_weights`` reads (diffusers, peft or kohya formats).
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import checks
from ..argspec import Command, arg
from .common import SamplingOptions, save_npz_atomic, torch_dtype


@dataclass(kw_only=True)
class SampleSD(SamplingOptions):
    model: str = arg(help="Stable Diffusion pipeline folder or hub id (the LoRA's base)")
    lora: str = arg(help="LoRA .safetensors file or folder, in a format diffusers' load_lora_weights reads")
    prompts: list[str] = arg(help="prompts, one image per prompt and row")
    output: str = arg(help="output .npz (arr_0: base prior, 'vanilla': vanilla CFG; uint8 NHWC)")
    guidance_scale: float = arg(7.5, help="CFG scale g")
    grid: str | None = arg(None, help="also save a PNG grid: vanilla row, then base-prior row")

    def check(self) -> None:
        checks.check_scales("--guidance-scale", self.guidance_scale)
        checks.check_output_file("--output", self.output, ".npz")
        if self.grid:
            checks.check_output_file("--grid", self.grid, ".png")
        if self.prior not in (None, checks.FREE_PRIOR):
            raise checks.PriorswapError("sample sd swaps in the LoRA's own base (--prior base, the default) only")
        super().check()


def load_sd_lora(model: str, lora: str, dtype, device):
    """(pipeline with the LoRA loaded, the LoRA's adapter name): one-line errors for a bad pipeline or LoRA file."""
    import os

    from diffusers import StableDiffusionPipeline

    from ..core.hub import first_line
    from ..core.loading import locate

    ref = locate(model)
    try:
        pipe = StableDiffusionPipeline.from_pretrained(ref, torch_dtype=dtype, safety_checker=None)
    except (OSError, ValueError, TypeError) as e:
        raise checks.PriorswapError(f"model {model!r} is not a Stable Diffusion pipeline ({first_line(e)})") from None
    if not os.path.exists(os.path.expanduser(lora)):
        raise checks.PriorswapError(f"--lora {lora!r} does not exist")
    try:
        pipe.load_lora_weights(os.path.expanduser(lora))
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as e:
        raise checks.PriorswapError(
            f"--lora {lora!r} is not a LoRA of {model!r} that diffusers reads ({first_line(e)})"
        ) from None
    return pipe.to(device)


def run_sd(cfg: SampleSD) -> int:
    import numpy as np

    from ..core.loading import latent_space, model_name
    from ..core.sampling import sample, vae_decoder
    from ..images import save_grid, to_uint8
    from ..lora import BASE, BasePrior, per_sample_adapters
    from ..unet.ip2p import prompt_embedding
    from ..unet.text_prior import UNetPrior, empty_prompt_embedding

    pipe = load_sd_lora(cfg.model, cfg.lora, torch_dtype(cfg.dtype), cfg.device)
    # Vanilla CFG is the LoRA'd pipeline as diffusers runs it: prompts and "" both through the text encoder with
    # its LoRA (if any) on. The swap takes the base's unconditional eps, so its "" goes through the base's text
    # encoder (text LoRA off); the prompts keep the LoRA in both rows.
    cond = prompt_embedding(pipe.tokenizer, pipe.text_encoder, cfg.prompts)  # (N, L, D)
    null, _ = empty_prompt_embedding(pipe.tokenizer, pipe.text_encoder)
    with per_sample_adapters(pipe.text_encoder, [BASE]):  # without a text LoRA: the same embedding
        base_null, _ = empty_prompt_embedding(pipe.tokenizer, pipe.text_encoder)
    sched = dict(pipe.scheduler.config)
    space = latent_space(cfg.model, sched, pipe.vae, int(pipe.unet.config.out_channels))
    den = UNetPrior(pipe.unet, null, space, name=f"{model_name(cfg.model)} + LoRA {cfg.lora}")
    base = BasePrior(den, null=base_null)  # refuses DoRA / merged LoRAs before any sampling
    size = int(pipe.unet.config.sample_size)
    common = dict(
        seeds=[cfg.seed + i for i in range(len(cfg.prompts))],
        shape=(space.channels, size, size),
        steps=cfg.steps,
        scheduler=cfg.scheduler,
        scheduler_config=sched,
        decode=vae_decoder(pipe.vae),
        batch_size=cfg.batch_size,
        progress=cfg.progress,
    )
    g = cfg.guidance(cfg.guidance_scale)
    rows = {
        "vanilla": sample(den, cond, g, desc="vanilla CFG", **common),
        "base prior": sample(den, cond, g, prior=base, desc="base prior (one mixed batch)", **common),
    }
    arrays = {k: to_uint8(v) for k, v in rows.items()}
    save_npz_atomic(cfg.output, arr_0=arrays["base prior"], vanilla=arrays["vanilla"], prompts=np.asarray(cfg.prompts))
    print(f"wrote {len(cfg.prompts)} x (vanilla + base prior) samples to {cfg.output}")
    if cfg.grid:
        save_grid(cfg.grid, list(rows.values()), row_labels=list(rows), col_labels=list(cfg.prompts))
        print(f"wrote grid to {cfg.grid}")
    return 0


COMMAND = Command(SampleSD, run_sd, "an SD-family LoRA: vanilla CFG vs its base's unconditional, one mixed batch")
