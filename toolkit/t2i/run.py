"""Text-to-image sampling through diffusers' own pipelines: load -> prepare -> rows.

Vanilla is the pipeline called as diffusers runs it; swapped is the same call with :class:`swap.SwapHook` on the
denoiser, so both rows share everything but the unconditional prediction. Sample i always starts from seed + i
(one CPU generator per prompt), so the rows pair image by image whatever the batch size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import diffusers
import torch
from torch import Tensor

from ..core.scheduler_kinds import SCHEDULER_KINDS
from ..errors import PriorswapError
from ..lora.mixed import adapter_layers, mixing_problem
from .load import Info, load_lora, load_pipeline
from .swap import Prior, SwapHook, hooked, null_condition
from .timeline import Timeline

# PixArt's resolution binning needs an aspect-ratio table for the transformer's size; a size without one (tiny test
# models) samples at the asked size instead of raising
PIXART_BINNED_SIZES = {"PixArtAlphaPipeline": (32, 64, 128), "PixArtSigmaPipeline": (32, 64, 128, 256)}


@dataclass
class Settings:
    """One run's pipeline arguments (None: the pipeline's own default) and the swap's settings."""

    steps: int | None = None
    guidance_scale: float | None = None
    height: int | None = None
    width: int | None = None
    negative_prompt: str | None = None
    rescale: float = 0.0
    prior_mix: float = 1.0
    interval: tuple[float, float] | None = None
    seed: int = 0
    batch_size: int = 8
    progress: bool = True


def family_arguments(pipe, info: Info, s: Settings) -> dict[str, Any]:
    """The pipeline arguments that shape the condition (and so the null condition too)."""
    args: dict[str, Any] = {"height": s.height, "width": s.width}
    if s.negative_prompt is not None:  # PixArt's default is "", not None
        args["negative_prompt"] = s.negative_prompt
    if info.pipeline in PIXART_BINNED_SIZES:
        args["use_resolution_binning"] = pipe.transformer.config.sample_size in PIXART_BINNED_SIZES[info.pipeline]
        # prompts as given, as training encodes them (encode_prompt's default): PixArt's __call__ would otherwise
        # lowercase and strip them where beautifulsoup4 and ftfy happen to be installed, and warn on every call
        # where they are not
        args["clean_caption"] = False
    return args


def use_scheduler(pipe, info: Info, name: str | None) -> None:
    """``--scheduler``: a named sampler on the model's own training schedule and prediction type (None: its own)."""
    if name is None:
        return
    if info.flow:
        raise PriorswapError(f"--scheduler {name}: {info.name!r} is flow matching; it samples with its own scheduler")
    cls_name, overrides = SCHEDULER_KINDS[name]
    config = {k: v for k, v in dict(pipe.scheduler.config).items() if not k.startswith("_")}
    pipe.scheduler = getattr(diffusers, cls_name).from_config({**config, **overrides})


@dataclass
class T2IJob:
    pipe: Any
    info: Info
    prompts: list[str]
    settings: Settings
    prior: Prior | None = None
    prior_pipe: Any = None  # the pipeline whose own encoders build the prior's null condition (free prior: pipe)
    prior_info: Info | None = None
    timeline: Timeline = field(init=False)

    def __post_init__(self):
        self.timeline = Timeline.of(self.pipe.scheduler.config, self.info.flow)

    def call_arguments(self) -> dict[str, Any]:
        s = self.settings
        args = {**family_arguments(self.pipe, self.info, s), "output_type": "pt"}
        for name, value in (("num_inference_steps", s.steps), ("guidance_scale", s.guidance_scale)):
            if value is not None:
                args[name] = value
        if s.rescale:
            args["guidance_rescale"] = s.rescale
        return args

    def _null(self, n: int) -> dict[str, Any]:
        if n not in self.prior.nulls:
            info = self.prior_info or self.info
            call = family_arguments(self.prior_pipe, info, self.settings)
            call["height"], call["width"] = self.size()
            self.prior.nulls[n] = null_condition(
                self.prior_pipe, info.denoiser, n, call, adapters_off=self.prior.denoiser is None
            )
        return self.prior.nulls[n]

    def size(self) -> tuple[int, int]:
        """The image size the model samples at (its default: sample size x VAE scale factor)."""
        s, pipe = self.settings, self.pipe
        cfg = getattr(pipe, self.info.denoiser).config
        default = int(cfg.sample_size) * int(pipe.vae_scale_factor)
        return s.height or default, s.width or default

    def sample(self, swapped: bool) -> Tensor:
        """Images (N, 3, H, W) in [0, 1]: prompt i from seed + i."""
        return self.sample_seeded(self.prompts, [self.settings.seed + i for i in range(len(self.prompts))], swapped)

    def sample_seeded(self, prompts: Sequence[str], seeds: Sequence[int], swapped: bool) -> Tensor:
        """Images (N, 3, H, W) in [0, 1]: ``prompts[i]`` from ``seeds[i]`` (one CPU generator each), in batches."""
        s = self.settings
        hook = None
        if swapped or s.interval is not None:
            hook = SwapHook(self.timeline, self.prior if swapped else None, s.prior_mix, s.interval)
        starts = range(0, len(prompts), s.batch_size)
        chunks = [list(prompts[i : i + s.batch_size]) for i in starts]
        if swapped:
            for chunk in chunks:  # before the progress bars are set: the capture runs its pipeline without one
                self._null(len(chunk))
        self.pipe.set_progress_bar_config(disable=not s.progress)
        out = []
        for start, chunk in zip(starts, chunks):
            gens = [torch.Generator("cpu").manual_seed(seeds[start + i]) for i in range(len(chunk))]
            if hook is None:
                out.append(self.pipe(chunk, generator=gens, **self.call_arguments()).images.float().cpu())
                continue
            hook.n = len(chunk)
            with hooked(getattr(self.pipe, self.info.denoiser), hook):
                out.append(self.pipe(chunk, generator=gens, **self.call_arguments()).images.float().cpu())
        return torch.cat(out)

    def rows(self, compare: bool) -> dict[str, Tensor]:
        """``{"vanilla": ..., "swapped": ...}`` (vanilla only with ``compare`` or without a prior)."""
        result = {}
        if self.prior is None or compare:
            result["vanilla"] = self.sample(swapped=False)
        if self.prior is not None:
            result["swapped"] = self.sample(swapped=True)
        return result


def prepare(
    info: Info,
    prompts: Sequence[str],
    settings: Settings,
    dtype: torch.dtype,
    device: str,
    lora: str | None = None,
    scheduler: str | None = None,
    prior: str | None = None,
    prior_info: Info | None = None,
    prior_dtype: torch.dtype | None = None,
) -> T2IJob:
    """Load the model (and LoRA, and prior) and check what only loaded weights can tell, before any sampling.

    ``prior``: None (vanilla), ``"base"`` (the LoRA's adapter-off self) or a reference whose ``prior_info`` the
    caller has already paired with ``info``."""
    pipe = load_pipeline(info, dtype, device)
    if lora:
        load_lora(pipe, info, lora)
    use_scheduler(pipe, info, scheduler)
    job = T2IJob(pipe, info, list(prompts), settings)
    if prior is not None:
        use_prior(job, prior, prior_info, prior_dtype or dtype, device, lora)
    return job


def use_prior(
    job: T2IJob, prior: str, prior_info: Info | None, dtype: torch.dtype, device: str, lora: str | None = None
) -> None:
    """Make ``prior`` the job's prior: ``"base"`` (the LoRA's adapter-off self) or a pipeline paired beforehand
    (``prior_info``), loaded now. A previous prior is dropped (an evaluation runs one prior after another)."""
    job.prior = job.prior_pipe = job.prior_info = None
    if prior == "base":
        den = getattr(job.pipe, job.info.denoiser)
        problem = mixing_problem(den) if adapter_layers(den) else None
        if problem:
            raise PriorswapError(
                f"--prior base: {job.info.name!r} with --lora {lora!r} cannot give a free prior: {problem}"
            )
        job.prior, job.prior_pipe = Prior(None, job.timeline), job.pipe
        return
    prior_pipe = load_pipeline(prior_info, dtype, device, what="--prior")
    den = getattr(prior_pipe, prior_info.denoiser)
    job.prior = Prior(den, Timeline.of(prior_pipe.scheduler.config, prior_info.flow))
    job.prior_pipe, job.prior_info = prior_pipe, prior_info
