"""``T2IEvalRun``: everything one text-to-image evaluation takes, as typed fields; both the Python API of
:func:`~priorswap.toolkit.protocols.t2i_eval.evaluate_t2i` and the flags of ``priorswap eval t2i``."""

from __future__ import annotations

import os
from dataclasses import dataclass

from .. import checks
from ..argspec import arg
from ..errors import PriorswapError
from .settings import METRIC_NETS, check_shard, parse_shard, shard_arg

T2I_METRICS = ("clip_score", "fid", "fd_dinov2", "clip_i", "dino_sim")
REFERENCE_METRICS = ("fid", "fd_dinov2")  # need --reference
SUBJECT_METRICS = ("clip_i", "dino_sim")  # need --subject-images


@dataclass(kw_only=True)
class T2IEvalRun:
    model: str = arg(help="text-to-image pipeline folder or hub id: SD1.x/2.x, SDXL, SD3/SD3.5, PixArt-alpha/Sigma")
    prompts: str = arg(
        help="prompt file: COCO captions .json (annotations[].caption), .jsonl (prompt/text field), .csv "
        "(prompt/caption column) or text, one prompt per line"
    )
    output_dir: str = arg(help="samples/, eval.md, eval.csv, items.csv; re-running resumes")
    lora: str | None = arg(None, help="LoRA file or folder on --model (diffusers' load_lora_weights)")
    priors: list[str] = arg(
        default_factory=list,
        metavar="[NAME=]REF",
        help="priors, one table row each next to vanilla CFG: 'base' (the LoRA's adapter-off self, needs --lora) "
        "or a pipeline in the same latent space",
    )
    guidance_scales: list[float] = arg(
        default_factory=list, flag="--guidance-scale", help="CFG scales (default: the pipeline's own)"
    )
    metrics: list[str] | None = arg(
        None,
        help=f"a subset of {', '.join(T2I_METRICS)} (default: clip_score, plus fid fd_dinov2 with --reference, "
        "plus clip_i dino_sim with --subject-images)",
    )
    reference: str | None = arg(None, help="folder of real images for FID / FD-DINOv2 (e.g. COCO val2014)")
    reference_limit: int | None = arg(None, help="use only the first N reference images (sorted)")
    subject_images: str | None = arg(
        None, help="folder of a DreamBooth subject's images: CLIP-I and DINO, each sample against all of them"
    )
    num_samples: int = arg(1, help="samples per prompt")
    limit: int | None = arg(None, help="use this many prompts, drawn at random with --seed (e.g. 30000 COCO captions)")
    steps: int | None = arg(None, help="sampling steps (default: the pipeline's own)")
    scheduler: str | None = arg(None, choices=checks.SCHEDULERS, help="sampler (default: the model's own)")
    height: int | None = arg(None, help="image height in pixels (default: the model's)")
    width: int | None = arg(None, help="image width in pixels (default: the model's)")
    negative_prompt: str | None = arg(None, help="negative prompt; each model encodes it with its own encoders")
    prior_mix: float = arg(1.0, help="lambda in uncond = lam*prior + (1-lam)*own (1 = the paper's swap)")
    seed: int = arg(0, help="sample k of prompt i uses seed + i * num_samples + k (in every row)")
    batch_size: int = arg(8, help="samples per pipeline call")
    device: str = arg("auto", help="cpu, cuda or cuda:N (auto: cuda when one is available)")
    dtype: str = arg("fp32", choices=checks.DTYPE_NAMES, help="weights and activations (fp16 needs CUDA)")
    prior_dtype: str | None = arg(None, choices=checks.DTYPE_NAMES, help="load each --priors MODEL in this precision")
    shard: tuple[int, int] | None = shard_arg(
        "sample only prompts i with i % N == K (one process per GPU), then run without it to score"
    )
    clip: str | None = arg(
        "openai/clip-vit-large-patch14", group=METRIC_NETS, help="CLIPModel folder or hub id (CLIP score, CLIP-I)"
    )
    inception_weights: str | None = arg(
        None,
        group=METRIC_NETS,
        help="FID Inception weights: torch-fidelity's weights-inception-2015-12-05-6726825d.pth (default: torch hub "
        "cache)",
    )
    dinov2_weights: str | None = arg(
        None, group=METRIC_NETS, help="DINOv2 ViT-L/14 weights (timm safetensors) for FD-DINOv2 and DINO"
    )
    dinov2_model: str | None = arg(
        None, group=METRIC_NETS, help="timm model name of the DINO network (default vit_large_patch14_dinov2.lvd142m)"
    )
    dinov2_size: int | None = arg(None, group=METRIC_NETS, help="DINO input size (default 224)")
    stats_cache: str | None = arg("~/.cache/priorswap/refstats", help="reference statistics cache folder")
    progress: bool = arg(True, flag="--no-progress", help="hide progress bars")

    def __post_init__(self) -> None:
        if self.shard is not None:
            self.shard = parse_shard(self.shard)

    def chosen_metrics(self) -> tuple[str, ...]:
        if self.metrics:
            chosen = tuple(dict.fromkeys(self.metrics))
        else:
            chosen = ("clip_score",) + (REFERENCE_METRICS if self.reference else ())
            chosen += SUBJECT_METRICS if self.subject_images else ()
        bad = [m for m in chosen if m not in T2I_METRICS]
        if bad:
            raise PriorswapError(f"metric {bad[0]!r} is not available for t2i; choose from {', '.join(T2I_METRICS)}")
        if set(chosen) & set(REFERENCE_METRICS) and not self.reference:
            raise PriorswapError("FID / FD-DINOv2 need --reference (a folder of real images)")
        if set(chosen) & set(SUBJECT_METRICS) and not self.subject_images:
            raise PriorswapError("CLIP-I / DINO need --subject-images (a folder of the subject's images)")
        return chosen

    def check(self) -> None:
        """Cheap argument checks, before reading a file or loading anything (the device check last)."""
        self.chosen_metrics()
        for flag, value in (
            ("--num-samples", self.num_samples),
            ("--batch-size", self.batch_size),
            ("--steps", self.steps),
            ("--limit", self.limit),
            ("--reference-limit", self.reference_limit),
        ):
            checks.at_least(flag, value)
        checks.at_least("--height", self.height, 8)
        checks.at_least("--width", self.width, 8)
        checks.check_scales("--guidance-scale", self.guidance_scales)
        checks.in_unit_interval("--prior-mix", self.prior_mix)
        if self.prior_mix != 1.0 and not self.priors:
            raise PriorswapError("--prior-mix needs --priors")
        if checks.FREE_PRIOR in self.priors and not self.lora:
            raise PriorswapError("--priors base is the LoRA's adapter-off self; it needs --lora")
        check_shard(self.shard)
        for flag, folder in (("--reference", self.reference), ("--subject-images", self.subject_images)):
            if folder is not None and not os.path.isdir(os.path.expanduser(folder)):
                raise PriorswapError(f"{flag} {folder!r} is not a folder")
            if folder is not None and not os.access(os.path.expanduser(folder), os.R_OK | os.X_OK):
                raise PriorswapError(f"{flag} {folder!r} is not readable")
        checks.check_output_dir("--output-dir", self.output_dir)
        self.device = checks.resolve_device(self.device)
        for dtype in (self.dtype, self.prior_dtype or self.dtype):
            checks.check_device(self.device, dtype)
