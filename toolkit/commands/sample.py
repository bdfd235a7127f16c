"""``priorswap sample dit``: sample a fine-tuned DiT with vanilla or prior-swapped CFG.

``priorswap sample ip2p|zero123|vd`` live in ``sample_unet.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .. import checks
from ..argspec import Command, arg
from ..paper import PAPER
from . import sample_t2i, sample_unet, sample_video
from .common import SamplingOptions


@dataclass(kw_only=True)
class SampleDiT(SamplingOptions):
    model: str = arg(help="fine-tuned DiT pipeline folder or hub id, or a DiT LoRA folder (on the base it names)")
    lora: str | None = arg(None, help="DiT LoRA folder to put on --model (then --model is its base)")
    prior_dtype: Literal["fp32", "bf16", "fp16"] | None = arg(
        None, help="load --prior in this precision (default: --dtype); bf16 halves the prior's weight memory"
    )
    labels: list[str] = arg(
        help="classes to sample, one image each: ids (0 3 7) or names from the model's id2label (pizza sushi)"
    )
    output: str = arg(help="output .npz (arr_0: uint8 NHWC, labels: class ids)")
    guidance_scale: float = arg(PAPER["dit"].scale, help="CFG scale g (Eq. 6/7)")
    guide_channels: int | None = arg(None, help="guide only the first K channels (3 = the original DiT code)")
    grid: str | None = arg(None, help="also save a PNG grid: one row per mode, one column per label")
    compare: bool = arg(False, help="with --prior: also sample vanilla CFG (npz key 'vanilla', grid row 1)")

    def check(self) -> None:
        checks.check_scales("--guidance-scale", self.guidance_scale)
        checks.at_least("--guide-channels", self.guide_channels)
        if self.compare and not self.prior:
            raise checks.PriorswapError("--compare needs --prior")
        checks.check_output_file("--output", self.output, ".npz")
        if self.grid:
            checks.check_output_file("--grid", self.grid, ".png")
        if self.prior_dtype is not None and (not self.prior or self.prior == checks.FREE_PRIOR):
            raise checks.PriorswapError(
                "--prior-dtype needs --prior MODEL (the free prior --prior base shares the model's weights)"
            )
        super().check()
        if self.prior_dtype is not None:
            checks.check_device(self.device, self.prior_dtype)


def run_dit(cfg: SampleDiT) -> int:
    import numpy as np
    import torch

    from ..core.sampling import DTYPES
    from ..dit.load import load_dit
    from ..dit.run import class_conditional_samples, paired_prior
    from ..files import save_npz_atomic
    from ..images import save_grid, to_uint8
    from ..priors import resolve_prior

    dtype, prior_dtype = DTYPES[cfg.dtype], DTYPES[cfg.prior_dtype or cfg.dtype]
    model = load_dit(cfg.model, "model", dtype, cfg.device, lora=cfg.lora, lora_what="--lora")
    ids = checks.label_ids(cfg.labels, model.id2label, model.denoiser.num_classes, model.denoiser.name)
    labels = torch.tensor(ids, dtype=torch.long)  # label_ids checked the range
    base = resolve_prior(model, cfg.prior, prior_dtype, cfg.device)
    prior = paired_prior(model, base)  # checked before any sampling
    guidance = cfg.guidance(cfg.guidance_scale, cfg.guide_channels)
    common = dict(
        steps=cfg.steps, seed=cfg.seed, scheduler=cfg.scheduler, batch_size=cfg.batch_size, progress=cfg.progress
    )
    rows = {}
    if prior is None or cfg.compare:
        rows["vanilla"] = class_conditional_samples(model, labels, guidance, None, desc="vanilla CFG", **common)
    if prior is not None:
        rows["swapped"] = class_conditional_samples(model, labels, guidance, prior, desc="swapped CFG", **common)
    arrays = {name: to_uint8(images) for name, images in rows.items()}
    main = arrays["swapped" if prior is not None else "vanilla"]
    extra = {"vanilla": arrays["vanilla"]} if cfg.compare else {}
    save_npz_atomic(cfg.output, arr_0=main, labels=np.asarray(ids, dtype=np.int64), **extra)
    print(f"wrote {len(main)} samples to {cfg.output}")
    if cfg.grid:
        names = [model.id2label.get(i, str(i)) for i in ids]
        save_grid(cfg.grid, list(rows.values()), row_labels=list(rows), col_labels=names)
        print(f"wrote grid to {cfg.grid}")
    return 0


COMMANDS = {
    "dit": Command(SampleDiT, run_dit, "class-conditional DiT (diffusers DiT pipeline folder or hub id)"),
    **sample_unet.COMMANDS,
    "t2i": sample_t2i.COMMAND,
    "sd": sample_t2i.SD_COMMAND,
    "dynamicrafter": sample_video.COMMAND,
}
HELP = "sample a fine-tuned model, vanilla or with a swapped prior"
