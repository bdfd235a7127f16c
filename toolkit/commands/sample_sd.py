"""``priorswap sample sd``: an SD-family LoRA, vanilla CFG against its base's own unconditional eps (Eq. 7).

Many SD LoRAs were trained without caption dropout, so their unconditional prediction is untrained. The base is
the LoRA with its adapter off (one mixed batch over one copy of the weights); loading and sampling are
``priorswap.toolkit.unet.sd``, this file parses, checks and writes.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import checks
from ..argspec import Command, arg
from .common import SamplingOptions


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


def run_sd(cfg: SampleSD) -> int:
    import numpy as np

    from ..core.sampling import DTYPES
    from ..files import save_npz_atomic
    from ..images import save_grid, to_uint8
    from ..unet.sd import load_sd_lora, prepare

    pipe = load_sd_lora(cfg.model, cfg.lora, DTYPES[cfg.dtype], cfg.device)
    job = prepare(
        pipe, cfg.model, cfg.lora, cfg.prompts, cfg.seed, cfg.steps, cfg.scheduler, cfg.batch_size, cfg.progress
    )
    rows = job.rows(cfg.guidance(cfg.guidance_scale))
    arrays = {k: to_uint8(v) for k, v in rows.items()}
    save_npz_atomic(cfg.output, arr_0=arrays["base prior"], vanilla=arrays["vanilla"], prompts=np.asarray(cfg.prompts))
    print(f"wrote {len(cfg.prompts)} x (vanilla + base prior) samples to {cfg.output}")
    if cfg.grid:
        save_grid(cfg.grid, list(rows.values()), row_labels=list(rows), col_labels=list(cfg.prompts))
        print(f"wrote grid to {cfg.grid}")
    return 0


COMMAND = Command(SampleSD, run_sd, "an SD-family LoRA: vanilla CFG vs its base's unconditional, one mixed batch")
