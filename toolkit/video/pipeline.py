"""DynamiCrafter image-to-video, vanilla or with VideoCrafter1's unconditional prior: conditions, sampling, decoding.

    from priorswap.toolkit.video.loading import load_video_model
    from priorswap.toolkit.video.pipeline import VideoJob, dynamicrafter_videos
    dc = load_video_model("Doubiiu/DynamiCrafter", "dynamicrafter")
    vc = load_video_model("VideoCrafter/Text2Video-512", "videocrafter")
    videos = dynamicrafter_videos(dc, vc, VideoJob(image=pil_image, prompt="a dog running", num_samples=2))
    # {"vanilla": (2, 3, 16, 256, 256), "swapped": ...} floats in [-1, 1]; same seeds, so they pair up

The conventions are upstream's ``scripts/evaluation/inference.py`` (``image_guided_synthesis``): the input is resized
on its short side and centre-cropped, the prompt and ``""`` go through the text encoder, the image and a zero image
(the null) through the image embedder and Resampler, the image's latent is repeated over the frames and
concatenated in every branch. Single CFG (no ``image_scale``) drops text and image together in its unconditional
branch; dual CFG is the paper's Eq. 8 with gT = 7.5, gI = 1.5.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torchvision import transforms

from ..core.denoisers import LatentSpace
from ..core.offload import Offloaded
from ..core.pairing import pair, schedule_mismatch
from ..core.sampling import DualGuidance, Guidance, sample
from ..errors import PriorswapError
from .config import VideoModelConfig
from .ddim import UpstreamDDIM, alphas_cumprod
from .denoiser import DCCond, DynamiCrafterDenoiser, VideoCrafterPrior
from .loading import VideoModel
from .vae import decode_frames, encode_mean


@dataclass
class VideoJob:
    image: Any  # PIL image (any mode; converted to RGB)
    prompt: str
    num_samples: int = 1
    steps: int = 50
    eta: float = 1.0
    text_scale: float = 7.5
    image_scale: float | None = 1.5  # None: single CFG on the text scale
    frame_stride: int = 3
    seed: int = 0
    spacing: str = "uniform"
    size: tuple[int, int] | None = None  # (height, width) in pixels; default: the model's training size
    batch_size: int = 1
    device: str = "cpu"
    offload: bool = False
    progress: bool = True

    @classmethod
    def from_flags(cls, flags: Any, image: Any, prompt: str, num_samples: int, seed: int) -> VideoJob:
        """A job from ``sample dynamicrafter`` / ``eval dynamicrafter`` flags: their guidance, DDIM grid, size and
        hardware (``--size`` is the square side)."""
        size = (flags.size, flags.size) if flags.size else None
        grid = dict(steps=flags.steps, eta=flags.eta, spacing=flags.timestep_spacing, frame_stride=flags.frame_stride)
        scales = dict(text_scale=flags.text_guidance, image_scale=flags.image_guidance)
        run = dict(batch_size=flags.batch_size, device=flags.device, offload=flags.offload, progress=flags.progress)
        return cls(image, prompt, num_samples, seed=seed, size=size, **grid, **scales, **run)


def pixel_multiple(cfg: VideoModelConfig) -> int:
    """Input sides must be multiples of this: the VAE's factor times the UNet's downsampling."""
    vae_factor = 2 ** (len(cfg.ddconfig["ch_mult"]) - 1)
    return vae_factor * 2 ** (len(cfg.unet.channel_mult) - 1)


def default_size(cfg: VideoModelConfig) -> tuple[int, int]:
    vae_factor = 2 ** (len(cfg.ddconfig["ch_mult"]) - 1)
    h, w = cfg.image_size
    return h * vae_factor, w * vae_factor


def check_size(cfg: VideoModelConfig, size: tuple[int, int]) -> None:
    m = pixel_multiple(cfg)
    if size[0] % m or size[1] % m:
        raise PriorswapError(
            f"--size {size[0]}x{size[1]} is not a multiple of {m} (the VAE factor times the UNet's downsampling)"
        )


def input_tensor(image, size: tuple[int, int]) -> Tensor:
    """(1, 3, H, W) in [-1, 1]: torchvision ``Resize(min(size))``, ``CenterCrop(size)``, ``ToTensor``, ``Normalize(0.5,
    0.5)`` as upstream's ``load_data_prompts`` (inference.py 65-70)."""
    t = transforms.Compose(
        [
            transforms.Resize(min(size)),
            transforms.CenterCrop(size),
            transforms.ToTensor(),
            transforms.Normalize((0.5,) * 3, (0.5,) * 3),
        ]
    )
    return t(image.convert("RGB"))[None]


@torch.no_grad()
def encode_conditions(model: VideoModel, image: Tensor, prompt: str, device: str) -> dict[str, Tensor]:
    """Text tokens of the prompt and ``""``, image tokens of the image and of a zero image, and the concat latent."""
    if model.text_encoder is None:
        raise PriorswapError(f"{model.ref}: the encoders were freed; load the model again")
    te, ie, rs = model.text_encoder.to(device), model.image_encoder.to(device), model.resampler.to(device)
    p = next(te.parameters())
    text = te.encode([prompt, ""]).cpu()  # (2, 77, D)
    x = image.to(device=device, dtype=p.dtype)
    tokens = rs(ie(torch.cat([x, torch.zeros_like(x)]))).cpu()  # (2, 16 T, D): image, null image
    vae = model.vae.to(device)
    latent = encode_mean(vae, x) * model.config.scale_factor  # the posterior mean (upstream samples it; its std ~ 0)
    frames = model.config.unet.temporal_length
    concat = latent.unsqueeze(2).repeat(1, 1, frames, 1, 1).float().cpu()  # (1, 4, T, h, w)
    return {"text": text[:1], "null_text": text[1:], "image": tokens[:1], "null_image": tokens[1:], "concat": concat}


@torch.no_grad()
def null_text_of(prior: VideoModel, device: str) -> Tensor:
    """The prior's e(x_t, "") condition, encoded once per model (its text encoder may be freed afterwards)."""
    if prior.null_text is None:
        prior.null_text = prior.text_encoder.to(device).encode([""]).cpu()
    return prior.null_text


def encode_job(model: VideoModel, job: VideoJob) -> dict[str, Tensor]:
    """The job's conditions (:func:`encode_conditions`) plus ``input``, the image as the model saw it (1, 3, H, W)."""
    size = job.size or default_size(model.config)
    check_size(model.config, size)
    if not job.prompt.strip():
        warnings.warn("the prompt is empty, which is the null text: text guidance then has no effect", stacklevel=3)
    image = input_tensor(job.image, size)
    return {**encode_conditions(model, image, job.prompt, job.device), "input": image}


def video_decoder(model: VideoModel, device: str):
    """Latents (B, 4, T, h, w) -> videos (B, 3, T, H, W) in [-1, 1] (not clamped), one frame at a time."""

    def decode(z: Tensor) -> Tensor:
        vae = model.vae.to(device)
        p = next(vae.parameters())
        return decode_frames(vae, z.to(device=device, dtype=p.dtype), model.config.scale_factor).float()

    return decode


def check_same_latent_space(model: VideoModel, prior: VideoModel, dc, base) -> None:
    """The swap needs the very same latents and noise levels: the same VAE weights and the same schedule (no
    nearest-timestep pairing here: the released pair shares both exactly)."""
    gap = schedule_mismatch(dc, base)
    if gap > 1e-7:
        raise PriorswapError(
            f"cannot use {prior.ref} as the prior of {model.ref}: their noise schedules differ (alpha_bar gap {gap:.2g})"
        )
    if prior.vae is None:  # compared (and dropped) already, for an earlier input
        return
    a, b = model.vae.state_dict(), prior.vae.state_dict()
    same = a.keys() == b.keys() and all(a[k].shape == b[k].shape and torch.equal(a[k].cpu(), b[k].cpu()) for k in a)
    if not same:
        raise PriorswapError(
            f"cannot use {prior.ref} as the prior of {model.ref}: their VAEs differ, so do their latent spaces"
        )
    prior.vae = None  # only its UNet is used from here on


@dataclass
class PreparedVideo:
    """Everything sampling needs once the conditions are encoded and the encoders freed."""

    denoiser: Any  # DynamiCrafterDenoiser bound to the image latent and fs (or Offloaded around it)
    prior: Any  # VideoCrafterPrior (or Offloaded), or None
    conds: Any  # DCCond, or (full, image-only) for dual CFG
    guidance: Any  # Guidance or DualGuidance
    scheduler: Any  # UpstreamDDIM
    shape: tuple[int, int, int, int]  # (4, T, h, w)
    decode: Any
    job: VideoJob
    encoded: dict  # what encode_job returned (``input``: the image as the model saw it)

    def videos(self, compare: bool = True) -> dict[str, Tensor]:
        """Vanilla (unless ``compare=False`` with a prior) and swapped (with a prior) videos, same seeds."""
        out = {}
        if self.prior is None or compare:
            out["vanilla"] = self.samples(False, "vanilla CFG")
        if self.prior is not None:
            out["swapped"] = self.samples(True, "swapped CFG")
        return out

    def samples(self, swapped: bool, desc: str = "sampling") -> Tensor:
        """(num_samples, 3, T, H, W) floats in [-1, 1]; sample i starts from seed + i in either mode."""
        j = self.job
        seeds = [j.seed + i for i in range(j.num_samples)]
        loop = dict(steps=j.steps, scheduler=self.scheduler, decode=self.decode)
        run = dict(batch_size=j.batch_size, device=j.device, progress=j.progress, desc=desc)
        prior = self.prior if swapped else None
        return sample(
            self.denoiser, self.conds, self.guidance, prior=prior, seeds=seeds, shape=self.shape, **loop, **run
        )


def prepare(
    model: VideoModel,
    prior: VideoModel | None,
    job: VideoJob,
    free_encoders: bool = True,
    conds: dict[str, Tensor] | None = None,
) -> PreparedVideo:
    """Encode the image and prompt (unless ``conds`` from :func:`encode_job` are given; then the encoders are freed,
    unless more inputs follow), build and pair the denoisers, choose the guidance."""
    home = "cpu" if job.offload else job.device
    scheduler = UpstreamDDIM.for_schedule(alphas_cumprod(model.config), job.spacing, job.eta)
    decode = video_decoder(model, job.device)
    conds = encode_job(model, job) if conds is None else conds
    prior_null = null_text_of(prior, job.device) if prior is not None else None
    if free_encoders:
        model.free_encoders()
        if prior is not None:
            prior.free_encoders()
    vae_name = f"{model.ref}/vae"

    def space(m: VideoModel) -> LatentSpace:
        return LatentSpace(
            alphas_cumprod(m.config), "epsilon", m.config.unet.out_channels, m.config.scale_factor, vae_name
        )

    dc = DynamiCrafterDenoiser(model.unet.to(home), conds["null_text"], conds["null_image"], space(model), model.ref)
    dc = dc.bind(conds["concat"], job.frame_stride)
    h, w = conds["concat"].shape[-2:]
    base = None
    if prior is not None:
        base = VideoCrafterPrior(prior.unet.to(home), prior_null, space(prior), prior.ref)
        base = pair(dc, base, (h, w))
        check_same_latent_space(model, prior, dc, base)
    if job.image_scale is None:
        guidance, c = Guidance(scale=job.text_scale), DCCond(conds["text"], conds["image"])
    else:
        guidance = DualGuidance(image_scale=job.image_scale, text_scale=job.text_scale)
        c = (DCCond(conds["text"], conds["image"]), DCCond(None, conds["image"]))
    if job.offload:
        dc = Offloaded(dc, job.device)
        base = Offloaded(base, job.device) if base is not None else None
    shape = (model.config.unet.out_channels, model.config.unet.temporal_length, h, w)
    return PreparedVideo(dc, base, c, guidance, scheduler, shape, decode, job, conds)


def dynamicrafter_videos(
    model: VideoModel, prior: VideoModel | None, job: VideoJob, compare: bool = True
) -> dict[str, Tensor]:
    """``{"vanilla": ..., "swapped": ...}`` (swapped only with ``prior``; vanilla unless ``compare=False``), each
    (num_samples, 3, T, H, W) floats in [-1, 1]. Sample i starts from seed + i in every mode."""
    return prepare(model, prior, job).videos(compare)
