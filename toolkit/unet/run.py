"""The UNet family's run, with the verbs every family has: load -> prepare -> rows.

- ``load(args, kind)``: the fine-tune, placed on the CPU with ``--offload`` (``home(args)``) and on ``--device``
  otherwise.
- ``PREPARE[kind](args)``: load, encode the input image (and prompt or pose) into a :class:`Job`, free the encoders.
- ``paired_prior(job, prior)``: the ``--prior`` (loaded by :func:`priorswap.toolkit.priors.load_unet_prior`, which
  knows every family), checked against the fine-tune before any sampling.
- ``rows(args, job, prior)``: ``{"vanilla": ..., "swapped": ...}`` images, same seeds.

``args`` is a ``priorswap sample ip2p|zero123|vd`` configuration (``priorswap.toolkit.commands.sample_unet``): its
flags are read here, its guidance built by its own ``guidance`` / ``dual_guidance``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..core.loading import Loaded
from ..core.offload import Offloaded, offloaded_decoder
from ..core.pairing import pair
from ..core.sampling import DTYPES, sample, vae_decoder
from ..errors import PriorswapError
from ..images import read_image, to_tensor
from .ip2p import IP2PCond, image_latents, prompt_embedding
from .load import LOADERS, Conditional
from .versatile import vd_image_embedding
from .zero123 import Zero123Cond, pose_vector, zero123_embedding


def conditional_samples(
    model: Conditional,
    cond: Any,
    latent_hw: tuple[int, int],
    guidance,
    prior: Loaded | None = None,
    image_cond: Any = None,
    steps: int = 50,
    seed: int = 0,
    num_samples: int = 1,
    scheduler: str = "ddim",
    batch_size: int = 8,
    device="cpu",
    offload: bool = False,
    progress: bool = True,
    desc: str = "sampling",
) -> Tensor:
    """Images (N, 3, H, W) in [0, 1]; sample i starts from seed + i, so vanilla and swapped runs pair up.

    ``guidance`` is a :class:`priorswap.toolkit.core.sampling.Guidance` (Eq. 6/7, Zero-1-to-3, VD) or a
    :class:`priorswap.toolkit.core.sampling.DualGuidance` (Eq. 9, IP2P; then ``image_cond`` is the (image, null text) condition).
    ``cond`` (and ``image_cond``) may have one row, shared by every sample, or one row per sample.
    """
    den = model.denoiser
    base = None if prior is None else pair(den, prior.denoiser, latent_hw)
    if offload:
        den, base = Offloaded(den, device), None if base is None else Offloaded(base, device)
    decode = offloaded_decoder(model.vae, device) if offload else vae_decoder(model.vae)
    return sample(
        den,
        cond if image_cond is None else (cond, image_cond),
        guidance,
        prior=base,
        seeds=[seed + i for i in range(num_samples)],
        shape=(den.latent_channels, *latent_hw),
        steps=steps,
        scheduler=scheduler,
        scheduler_config=model.scheduler_config,
        decode=decode,
        batch_size=batch_size,
        device=device,
        progress=progress,
        desc=desc,
    )


@dataclass
class Job:
    """Everything one sampling run needs once the conditions are encoded (and the encoders freed)."""

    model: Conditional
    cond: Any
    latent_hw: tuple[int, int]
    guidance: Any  # Guidance or DualGuidance
    image: Any  # the input as the model saw it (PIL)
    meta: dict
    extra: dict = field(default_factory=dict)  # e.g. IP2P's image-only condition

    def samples(self, args, prior: Loaded | None = None, desc: str = "sampling") -> Tensor:
        return conditional_samples(
            self.model,
            self.cond,
            self.latent_hw,
            self.guidance,
            prior,
            steps=args.steps,
            seed=args.seed,
            num_samples=args.num_samples,
            scheduler=args.scheduler,
            batch_size=args.batch_size,
            device=args.device,
            offload=args.offload,
            progress=args.progress,
            desc=desc,
            **self.extra,
        )


def home(args) -> str:
    """Where the weights wait between uses: the CPU with --offload, else --device."""
    return "cpu" if args.offload else args.device


def load(args, kind: str) -> Conditional:
    """The fine-tune (its conditions are encoded next, on --device)."""
    return LOADERS[kind](args.model, DTYPES[args.dtype], home(args))


def _encoded(args, model: Conditional) -> None:
    """The conditions are built: drop the encoders, and with --offload send the VAE home before a prior loads."""
    model.free_encoders()
    if args.offload:
        model.vae.to("cpu")


def _factor(model: Conditional) -> int:
    """Pixels per latent cell times the UNet's own downsampling: the multiple an input size must be."""
    return 2 ** (len(model.vae.config.block_out_channels) - 1) * model.denoiser._down


def prepare_ip2p(args) -> Job:
    model = load(args, "ip2p")
    f = _factor(model)
    size = None
    if args.width or args.height:
        size = (args.width or args.height, args.height or args.width)
        if size[0] % f or size[1] % f:
            raise PriorswapError(f"--width/--height must be multiples of {f} for this model, got {size[0]}x{size[1]}")
    img = read_image(args.image, size, multiple=f)
    enc = model.encoders
    with torch.no_grad():
        model.vae.to(args.device)
        enc["text_encoder"].to(args.device)
        latent = image_latents(model.vae, to_tensor(img)).cpu()  # (1, 4, h, w), unscaled (docs/method.md trap 7)
        text = prompt_embedding(enc["tokenizer"], enc["text_encoder"], [args.prompt]).cpu()
    _encoded(args, model)
    guidance = args.dual_guidance(args.image_guidance, args.text_guidance)
    extra = {"image_cond": IP2PCond(image=latent)}  # eps(cI, null text) always comes from IP2P itself
    meta = {"prompt": args.prompt, "image_guidance": args.image_guidance, "text_guidance": args.text_guidance}
    return Job(model, IP2PCond(image=latent, text=text), tuple(latent.shape[-2:]), guidance, img, meta, extra)


def prepare_zero123(args) -> Job:
    model = load(args, "zero123")
    f = _factor(model)
    if args.size % f:
        raise PriorswapError(f"--size must be a multiple of {f} for this model, got {args.size}")
    img = read_image(args.image, (args.size, args.size))
    enc, x = model.encoders, to_tensor(img)
    with torch.no_grad():
        for m in (model.vae, enc["image_encoder"], enc["cc_projection"]):
            m.to(args.device)
        pose = pose_vector(args.polar, args.azimuth, args.radius)
        emb = zero123_embedding(enc["image_encoder"], enc["cc_projection"], x, pose, enc["mean"], enc["std"]).cpu()
        latent = image_latents(model.vae, x).cpu()
    _encoded(args, model)
    meta = {"polar": args.polar, "azimuth": args.azimuth, "radius": args.radius, "guidance_scale": args.guidance_scale}
    return Job(model, Zero123Cond(emb, latent), tuple(latent.shape[-2:]), args.guidance(args.guidance_scale), img, meta)


def prepare_vd(args) -> Job:
    model = load(args, "vd")
    f = 2 ** (len(model.vae.config.block_out_channels) - 1)
    size = args.size or int(model.denoiser.unet.config.sample_size) * f
    if size % (f * model.denoiser._down):
        raise PriorswapError(f"--size must be a multiple of {f * model.denoiser._down} for this model, got {size}")
    img = read_image(args.image)  # the CLIP processor resizes and crops it itself
    with torch.no_grad():
        model.encoders["image_encoder"].to(args.device)
        emb = vd_image_embedding(model.encoders["feature_extractor"], model.encoders["image_encoder"], [img]).cpu()
    _encoded(args, model)
    meta = {"guidance_scale": args.guidance_scale}
    return Job(model, emb, (size // f, size // f), args.guidance(args.guidance_scale), img, meta)


PREPARE = {"ip2p": prepare_ip2p, "zero123": prepare_zero123, "vd": prepare_vd}


def paired_prior(job: Job, prior: Loaded | None) -> Loaded | None:
    """``prior`` (None: vanilla only), checked against the model before any sampling (one-line error if not)."""
    if prior is not None:
        pair(job.model.denoiser, prior.denoiser, job.latent_hw)
    return prior


def rows(args, job: Job, prior: Loaded | None) -> dict[str, Tensor]:
    """``{"vanilla": images}``, plus ``"swapped"`` with a prior; sample i of each row starts from seed + i."""
    out = {"vanilla": job.samples(args, None, "vanilla CFG")}
    if prior is not None:
        out["swapped"] = job.samples(args, prior, "swapped CFG")
    return out
