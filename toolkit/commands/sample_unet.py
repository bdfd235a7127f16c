"""``priorswap sample ip2p|zero123|vd``: edit, re-view or vary one input image, vanilla and with a swapped prior.

Each run writes, into ``--output-dir``: ``input.png`` (the image as the model saw it), ``vanilla/NNN.png``,
``swapped/NNN.png`` (with ``--prior``), ``grid.png`` (row 1 vanilla, row 2 swapped, same seeds) and
``meta.json``. Each file is written whole (temp file, then rename) once every sample is done.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from .. import checks
from ..argspec import Command, arg
from ..errors import PriorswapError
from ..paper import PAPER
from .common import SamplingOptions, torch_dtype


@dataclass(kw_only=True)
class SampleImage(SamplingOptions):
    """What every image-conditioned sampling command takes."""

    model: str = arg(help="the fine-tune: diffusers folder or hub id (e.g. {paper.model})")
    image: str = arg(help="input image file (any mode and size Pillow reads; converted as needed)")
    output_dir: str = arg(help="folder for input.png, vanilla/, swapped/, grid.png, meta.json")
    num_samples: int = arg(4, help="samples per mode; sample i uses seed + i")
    offload: bool = arg(False, help="keep every network on the CPU except while it runs")

    def check(self) -> None:
        checks.at_least("--num-samples", self.num_samples)
        checks.check_input_file("--image", self.image)
        checks.check_output_dir("--output-dir", self.output_dir)
        super().check()


@dataclass(kw_only=True)
class SampleIP2P(SampleImage):
    prompt: str = arg(help="the edit instruction")
    steps: int = arg(PAPER["ip2p"].steps, help="sampling steps")
    image_guidance: float = arg(PAPER["ip2p"].image_scale, help="gI (Eq. 9)")
    text_guidance: float = arg(PAPER["ip2p"].text_scale, help="gT (Eq. 9)")
    width: int | None = arg(
        None, help="resize the input to this width (default: its own, rounded down to the model's multiple)"
    )
    height: int | None = arg(None, help="resize the input to this height (default: as --width)")

    def check(self) -> None:
        if not self.prompt.strip():
            raise PriorswapError("--prompt is empty; InstructPix2Pix needs an edit instruction such as 'make it snowy'")
        checks.check_scales("--image-guidance", self.image_guidance)
        checks.check_scales("--text-guidance", self.text_guidance)
        checks.at_least("--width", self.width)
        checks.at_least("--height", self.height)
        super().check()


@dataclass(kw_only=True)
class SampleZero123(SampleImage):
    polar: float = arg(0.0, help="relative elevation change in degrees")
    azimuth: float = arg(0.0, help="relative azimuth change in degrees")
    radius: float = arg(0.0, help="relative camera distance change")
    steps: int = arg(PAPER["zero123"].steps, help="sampling steps")
    guidance_scale: float = arg(PAPER["zero123"].scale, help="CFG scale (Eq. 6/7)")
    size: int = arg(PAPER["zero123"].size, help="square image size in pixels")

    def check(self) -> None:
        checks.check_scales("--guidance-scale", self.guidance_scale)
        checks.at_least("--size", self.size)
        super().check()


@dataclass(kw_only=True)
class SampleVD(SampleImage):
    steps: int = arg(PAPER["vd"].steps, help="sampling steps")
    guidance_scale: float = arg(PAPER["vd"].scale, help="CFG scale (Eq. 6/7)")
    size: int | None = arg(None, help="square output size in pixels (default: the UNet's sample size x the VAE factor)")

    def check(self) -> None:
        checks.check_scales("--guidance-scale", self.guidance_scale)
        checks.at_least("--size", self.size)
        super().check()


def _load(args: SampleImage, loader):
    """The fine-tune (conditions are encoded next, on --device) and, later, the prior."""
    return loader(args.model, torch_dtype(args.dtype), "cpu" if args.offload else args.device)


def _prior(args: SampleImage):
    if not args.prior:
        return None
    from ..priors import load_unet_prior

    return load_unet_prior(args.prior, torch_dtype(args.dtype), "cpu" if args.offload else args.device)


# -- the three commands ----------------------------------------------------------------------------
def run_ip2p(args: SampleIP2P) -> int:
    return sample_and_save(args, prepare_ip2p(args))


def prepare_ip2p(args: SampleIP2P) -> "Job":
    import torch

    from ..images import read_image, to_tensor
    from ..unet.ip2p import IP2PCond, image_latents, prompt_embedding
    from ..unet.load import load_ip2p

    model = _load(args, load_ip2p)
    f = 2 ** (len(model.vae.config.block_out_channels) - 1) * model.denoiser._down
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
    model.free_encoders()
    guidance = args.dual_guidance(args.image_guidance, args.text_guidance)
    extra = {"image_cond": IP2PCond(image=latent)}  # eps(cI, null text) always comes from IP2P itself
    meta = {"prompt": args.prompt, "image_guidance": args.image_guidance, "text_guidance": args.text_guidance}
    return Job(model, IP2PCond(image=latent, text=text), tuple(latent.shape[-2:]), guidance, img, meta, extra)


def run_zero123(args: SampleZero123) -> int:
    return sample_and_save(args, prepare_zero123(args))


def prepare_zero123(args: SampleZero123) -> "Job":
    import torch

    from ..images import read_image, to_tensor
    from ..unet.ip2p import image_latents
    from ..unet.load import load_zero123
    from ..unet.zero123 import Zero123Cond, pose_vector, zero123_embedding

    model = _load(args, load_zero123)
    f = 2 ** (len(model.vae.config.block_out_channels) - 1) * model.denoiser._down
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
    model.free_encoders()
    meta = {"polar": args.polar, "azimuth": args.azimuth, "radius": args.radius, "guidance_scale": args.guidance_scale}
    return Job(model, Zero123Cond(emb, latent), tuple(latent.shape[-2:]), args.guidance(args.guidance_scale), img, meta)


def run_vd(args: SampleVD) -> int:
    return sample_and_save(args, prepare_vd(args))


def prepare_vd(args: SampleVD) -> "Job":
    import torch

    from ..images import read_image
    from ..unet.load import load_vd
    from ..unet.versatile import vd_image_embedding

    model = _load(args, load_vd)
    f = 2 ** (len(model.vae.config.block_out_channels) - 1)
    size = args.size or int(model.denoiser.unet.config.sample_size) * f
    if size % (f * model.denoiser._down):
        raise PriorswapError(f"--size must be a multiple of {f * model.denoiser._down} for this model, got {size}")
    img = read_image(args.image)  # the CLIP processor resizes and crops it itself
    with torch.no_grad():
        model.encoders["image_encoder"].to(args.device)
        emb = vd_image_embedding(model.encoders["feature_extractor"], model.encoders["image_encoder"], [img]).cpu()
    model.free_encoders()
    meta = {"guidance_scale": args.guidance_scale}
    return Job(model, emb, (size // f, size // f), args.guidance(args.guidance_scale), img, meta)


@dataclass
class Job:
    """Everything one sampling run needs once the conditions are encoded (and the encoders freed)."""

    model: Any  # priorswap.toolkit.unet.load.Conditional
    cond: Any
    latent_hw: tuple[int, int]
    guidance: Any  # Guidance or DualGuidance
    image: Any  # the input as the model saw it (PIL)
    meta: dict
    extra: dict = field(default_factory=dict)  # e.g. IP2P's image-only condition

    def samples(self, args: SampleImage, prior=None, desc: str = "sampling"):
        from ..unet.load import conditional_samples

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


def load_paired_prior(args: SampleImage, job: Job):
    """The --prior (None without one), checked against the model before any sampling (one-line error if not)."""
    from ..core.pairing import pair

    if args.offload:
        job.model.vae.to("cpu")
    prior = _prior(args)
    if prior is not None:
        pair(job.model.denoiser, prior.denoiser, job.latent_hw)
    return prior


def sample_and_save(args: SampleImage, job: Job) -> int:
    prior = load_paired_prior(args, job)
    rows = {"vanilla": job.samples(args, None, "vanilla CFG")}
    if prior is not None:
        rows["swapped"] = job.samples(args, prior, "swapped CFG")
    meta = {
        "kind": job.model.kind,
        "model": args.model,
        "prior": args.prior,
        "steps": args.steps,
        "seed": args.seed,
        "scheduler": args.scheduler,
        "dtype": args.dtype,
        "prior_mix": args.prior_mix,
        **job.meta,
    }
    write_outputs(args.output_dir, job.image, rows, meta)
    print(f"wrote {args.num_samples} x {' + '.join(rows)} samples and grid.png to {args.output_dir}")
    return 0


def write_outputs(out_dir: str, img, rows: dict, meta: dict) -> None:
    """Write every file atomically, once all samples exist: input and samples first, then grid and meta."""
    from PIL import Image

    from ..files import atomic_write
    from ..images import save_grid, to_uint8

    os.makedirs(out_dir, exist_ok=True)
    with atomic_write(os.path.join(out_dir, "input.png"), "wb") as f:
        img.save(f, format="PNG")
    for mode, images in rows.items():
        os.makedirs(os.path.join(out_dir, mode), exist_ok=True)
        for i, a in enumerate(to_uint8(images)):
            with atomic_write(os.path.join(out_dir, mode, f"{i:03d}.png"), "wb") as f:
                Image.fromarray(a).save(f, format="PNG")
    save_grid(os.path.join(out_dir, "grid.png"), list(rows.values()), row_labels=list(rows))
    with atomic_write(os.path.join(out_dir, "meta.json")) as f:
        json.dump(meta, f, indent=2)


COMMANDS = {
    "ip2p": Command(
        SampleIP2P,
        run_ip2p,
        "InstructPix2Pix edit (dual CFG, Eq. 9; only eps(null, null) is swapped)",
        context={"paper": PAPER["ip2p"]},
    ),
    "zero123": Command(
        SampleZero123,
        run_zero123,
        "Zero-1-to-3 novel view (CFG with a swapped unconditional prior)",
        context={"paper": PAPER["zero123"]},
    ),
    "vd": Command(
        SampleVD,
        run_vd,
        "Versatile Diffusion image variation (CFG with a swapped unconditional prior)",
        context={"paper": PAPER["vd"]},
    ),
}
