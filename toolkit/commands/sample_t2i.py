"""``priorswap sample t2i``: a text-to-image fine-tune or LoRA sampled through diffusers' own pipeline, its CFG's
unconditional prediction answered by a prior (Eq. 7): the LoRA's own base (``--prior base``) or another pipeline in
the same latent space (``--prior MODEL``).

``priorswap sample sd`` is the same command with the free prior by default and both rows always written (what it
did when it covered SD LoRAs only). Loading and sampling are ``priorswap.toolkit.t2i``; this file parses, checks
and writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .. import checks
from ..argspec import Command, arg
from ..checks import SCHEDULERS
from .common import SamplingOptions


@dataclass(kw_only=True)
class SampleT2I(SamplingOptions):
    model: str = arg(help="text-to-image pipeline folder or hub id: SD1.x/2.x, SDXL, SD3/SD3.5, PixArt-alpha/Sigma")
    lora: str | None = arg(None, help="LoRA file or folder on --model, in a format diffusers' load_lora_weights reads")
    prior: str | None = arg(
        None,
        help="'base': the LoRA's own base (adapter off, same forward); or a pipeline folder or hub id in the same "
        "latent space whose unconditional prediction replaces the model's (Eq. 7); omit for vanilla CFG",
    )
    prompts: list[str] | None = arg(None, help="prompts, one image per prompt and row")
    prompt_file: str | None = arg(None, help="text file of prompts, one per line (instead of --prompts)")
    negative_prompt: str | None = arg(None, help="negative prompt; each model encodes it with its own encoders")
    output: str = arg(help="output .npz (arr_0: swapped, or vanilla without --prior; 'vanilla' with --compare)")
    prior_dtype: Literal["fp32", "bf16", "fp16"] | None = arg(None, help="load --prior MODEL in this precision")
    guidance_scale: float | None = arg(None, help="CFG scale g (default: the pipeline's own, e.g. SDXL 5, SD3 7)")
    steps: int | None = arg(None, help="sampling steps (default: the pipeline's own)")
    scheduler: str | None = arg(None, choices=SCHEDULERS, help="sampler (default: the model's own scheduler)")
    height: int | None = arg(None, help="image height in pixels (default: the model's)")
    width: int | None = arg(None, help="image width in pixels (default: the model's)")
    grid: str | None = arg(None, help="also save a PNG grid: one row per mode, one column per prompt")
    compare: bool = arg(False, kinds=("t2i",), help="with --prior: also sample vanilla CFG on the same seeds")

    def check(self) -> None:
        if (self.prompts is None) == (self.prompt_file is None):
            raise checks.PriorswapError("give the prompts with exactly one of --prompts and --prompt-file")
        if self.prompt_file is not None:
            self.prompts = read_prompts(self.prompt_file)
        checks.check_scales("--guidance-scale", self.guidance_scale)
        checks.at_least("--height", self.height, 8)
        checks.at_least("--width", self.width, 8)
        checks.check_output_file("--output", self.output, ".npz")
        if self.grid:
            checks.check_output_file("--grid", self.grid, ".png")
        if self.prior == checks.FREE_PRIOR and not self.lora:
            raise checks.PriorswapError("--prior base is the LoRA's adapter-off self; it needs --lora")
        if self.compare and not self.prior:
            raise checks.PriorswapError("--compare needs --prior")
        if self.prior_mix != 1.0 and not self.prior:
            raise checks.PriorswapError("--prior-mix needs --prior")
        if self.prior_dtype is not None and self.prior in (None, checks.FREE_PRIOR):
            raise checks.PriorswapError(
                "--prior-dtype needs --prior MODEL (the free prior --prior base shares the model's weights)"
            )
        checks.at_least("--steps", self.steps)
        checks.at_least("--batch-size", self.batch_size)
        checks.in_unit_interval("--prior-mix", self.prior_mix)
        checks.check_interval("--guidance-interval", self.guidance_interval)
        if self.rescale < 0:
            raise checks.PriorswapError(f"--rescale must be at least 0, got {self.rescale}")
        self.device = checks.resolve_device(self.device)
        for dtype in (self.dtype, self.prior_dtype or self.dtype):
            checks.check_device(self.device, dtype)
        if not self.progress:
            from .common import hide_library_progress

            hide_library_progress()


def read_prompts(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as f:
            prompts = [line.strip() for line in f if line.strip()]
    except OSError as e:
        raise checks.PriorswapError(f"--prompt-file {path!r} cannot be read ({e.strerror})") from None
    if not prompts:
        raise checks.PriorswapError(f"--prompt-file {path!r} holds no prompt (one per line)")
    return prompts


def plan(cfg: SampleT2I):
    """The model's and the prior's :class:`Info`, every refusal answered from config files (no weights yet)."""
    from ..t2i.load import check_lora_file, inspect_pipeline
    from ..t2i.pairing import check_pairing

    info = inspect_pipeline(cfg.model, "--model")
    if cfg.lora:
        check_lora_file(info, cfg.lora)
    if cfg.rescale and not info.accepts("guidance_rescale"):
        raise checks.PriorswapError(f"--rescale: {info.pipeline} has no guidance rescale")
    if cfg.scheduler and info.flow:
        raise checks.PriorswapError(f"--scheduler: {info.name!r} is flow matching; it samples with its own scheduler")
    prior_info = None
    if cfg.prior not in (None, checks.FREE_PRIOR):
        prior_info = inspect_pipeline(cfg.prior, "--prior")
        check_pairing(info, prior_info)
    return info, prior_info


def run_t2i(cfg: SampleT2I) -> int:
    import numpy as np

    from ..core.sampling import DTYPES
    from ..files import save_npz_atomic
    from ..images import save_grid, to_uint8
    from ..t2i.run import Settings, prepare

    info, prior_info = plan(cfg)
    settings = Settings(
        steps=cfg.steps, guidance_scale=cfg.guidance_scale, height=cfg.height, width=cfg.width,
        negative_prompt=cfg.negative_prompt, rescale=cfg.rescale, prior_mix=cfg.prior_mix,
        interval=cfg.guidance_interval, seed=cfg.seed, batch_size=cfg.batch_size, progress=cfg.progress,
    )  # fmt: skip
    job = prepare(
        info, cfg.prompts, settings, DTYPES[cfg.dtype], cfg.device, lora=cfg.lora, scheduler=cfg.scheduler,
        prior=cfg.prior, prior_info=prior_info, prior_dtype=DTYPES[cfg.prior_dtype or cfg.dtype],
    )  # fmt: skip
    rows = job.rows(cfg.compare)
    arrays = {k: to_uint8(v) for k, v in rows.items()}
    main = arrays["swapped" if cfg.prior else "vanilla"]
    extra = {"vanilla": arrays["vanilla"]} if cfg.compare else {}
    save_npz_atomic(cfg.output, arr_0=main, prompts=np.asarray(cfg.prompts), **extra)
    print(f"wrote {len(main)} x ({' + '.join(rows)}) samples to {cfg.output}")
    if cfg.grid:
        save_grid(cfg.grid, list(rows.values()), row_labels=list(rows), col_labels=list(cfg.prompts))
        print(f"wrote grid to {cfg.grid}")
    return 0


HELP = "a text-to-image fine-tune or LoRA (SD, SDXL, SD3, PixArt) through its diffusers pipeline, vanilla vs swapped"
COMMAND = Command(SampleT2I, run_t2i, HELP, kind="t2i")
# `sample sd`, as before: an SD-family LoRA against its own base, both rows written
SD_COMMAND = Command(
    SampleT2I, run_t2i, "alias of `sample t2i` with --prior base and both rows", kind="sd",
    defaults={"prior": "base"}, fixed={"compare": True},
)  # fmt: skip
