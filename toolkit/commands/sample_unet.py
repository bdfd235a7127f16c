"""``priorswap sample ip2p|zero123|vd``: edit, re-view or vary one input image, vanilla and with a swapped prior.

Each run writes, into ``--output-dir``: ``input.png`` (the image as the model saw it), ``vanilla/NNN.png``,
``swapped/NNN.png`` (with ``--prior``), ``grid.png`` (row 1 vanilla, row 2 swapped, same seeds) and
``meta.json``. Each file is written whole (temp file, then rename) once every sample is done.
"""
from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import PriorswapError
from ..files import check_output_dir
from ..images import read_image, to_tensor
from ..sampling import DualGuidance, Guidance
from ..images import save_grid
from .common import DTYPES, add_sampling_args, check_sampling_args, hide_library_progress

DEFAULTS = {  # paper appendix B
    "ip2p": dict(steps=100, image_guidance=1.5, text_guidance=7.5),
    "zero123": dict(steps=50, guidance=5.0, size=256),
    "vd": dict(steps=50, guidance=2.0),
}


def register(kinds) -> None:
    d = DEFAULTS["ip2p"]
    p = kinds.add_parser("ip2p", help="InstructPix2Pix edit (dual CFG, Eq. 9; only eps(null, null) is swapped)")
    _common_args(p, "InstructPix2Pix pipeline folder or hub id (timbrooks/instruct-pix2pix)", d["steps"])
    p.add_argument("--prompt", required=True, help="the edit instruction")
    p.add_argument("--image-guidance", type=float, default=d["image_guidance"], help=f"gI (default {d['image_guidance']})")
    p.add_argument("--text-guidance", type=float, default=d["text_guidance"], help=f"gT (default {d['text_guidance']})")
    p.add_argument("--width", type=int, help="resize the input to this width (default: its own, rounded down to the model's multiple)")
    p.add_argument("--height", type=int, help="resize the input to this height (default: as --width)")
    p.set_defaults(func=run_ip2p)

    d = DEFAULTS["zero123"]
    p = kinds.add_parser("zero123", help="Zero-1-to-3 novel view (CFG with a swapped unconditional prior)")
    _common_args(p, "Zero-1-to-3 diffusers folder or hub id (kxic/zero123-xl layout)", d["steps"])
    p.add_argument("--polar", type=float, default=0.0, help="relative elevation change in degrees")
    p.add_argument("--azimuth", type=float, default=0.0, help="relative azimuth change in degrees")
    p.add_argument("--radius", type=float, default=0.0, help="relative camera distance change")
    p.add_argument("--guidance-scale", type=float, default=d["guidance"], help=f"(default {d['guidance']})")
    p.add_argument("--size", type=int, default=d["size"], help=f"square image size in pixels (default {d['size']})")
    p.set_defaults(func=run_zero123)

    d = DEFAULTS["vd"]
    p = kinds.add_parser("vd", help="Versatile Diffusion image variation (CFG with a swapped unconditional prior)")
    _common_args(p, "Versatile Diffusion folder or hub id (shi-labs/versatile-diffusion)", d["steps"])
    p.add_argument("--guidance-scale", type=float, default=d["guidance"], help=f"(default {d['guidance']})")
    p.add_argument("--size", type=int, help="square output size in pixels (default: the UNet's sample size x VAE factor)")
    p.set_defaults(func=run_vd)


def _common_args(p: argparse.ArgumentParser, model_help: str, steps: int) -> None:
    p.add_argument("--model", required=True, help=model_help)
    p.add_argument("--image", required=True, help="input image file (any mode/size Pillow reads; converted as needed)")
    p.add_argument("--output-dir", required=True, help="folder for input.png, vanilla/, swapped/, grid.png, meta.json")
    p.add_argument("--num-samples", type=int, default=4, help="samples per mode; sample i uses seed + i (default 4)")
    p.add_argument("--offload", action="store_true", help="keep every network on the CPU except while it runs")
    add_sampling_args(p, steps=steps)


def _check(args: argparse.Namespace) -> None:
    check_sampling_args(args)
    if args.no_progress:
        hide_library_progress()
    if args.num_samples < 1:
        raise PriorswapError(f"--num-samples must be at least 1, got {args.num_samples}")
    check_output_dir(args.output_dir)
    if not os.path.isfile(args.image):
        raise PriorswapError(f"input image {args.image!r} does not exist")


def _load(args, loader):
    """The fine-tune (conditions are encoded next, on --device) and, later, the prior."""
    load_device = "cpu" if args.offload else args.device
    return loader(args.model, DTYPES[args.dtype], load_device)


def _prior(args):
    if not args.prior:
        return None
    from ..loading_unet import load_unet_prior

    return load_unet_prior(args.prior, DTYPES[args.dtype], "cpu" if args.offload else args.device)


# -- the three commands ----------------------------------------------------------------------------
def run_ip2p(args: argparse.Namespace) -> int:
    return sample_and_save(args, prepare_ip2p(args))


def prepare_ip2p(args: argparse.Namespace) -> "Job":
    from ..adapters.ip2p import IP2PCond, image_latents, prompt_embedding
    from ..loading_unet import load_ip2p

    _check(args)
    if not args.prompt.strip():
        raise PriorswapError("--prompt is empty; InstructPix2Pix needs an edit instruction such as 'make it snowy'")
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
    guidance = DualGuidance(
        image_scale=args.image_guidance, text_scale=args.text_guidance, prior_mix=args.prior_mix,
        interval=tuple(args.guidance_interval) if args.guidance_interval else None, rescale_phi=args.rescale,
    )
    extra = {"image_cond": IP2PCond(image=latent)}  # eps(cI, null text) always comes from IP2P itself
    meta = {"prompt": args.prompt, "image_guidance": args.image_guidance, "text_guidance": args.text_guidance}
    return Job(model, IP2PCond(image=latent, text=text), tuple(latent.shape[-2:]), guidance, img, meta, extra)


def run_zero123(args: argparse.Namespace) -> int:
    return sample_and_save(args, prepare_zero123(args))


def prepare_zero123(args: argparse.Namespace) -> "Job":
    from ..adapters.ip2p import image_latents
    from ..adapters.zero123 import Zero123Cond, pose_vector, zero123_embedding
    from ..loading_unet import load_zero123

    _check(args)
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
    return Job(model, Zero123Cond(emb, latent), tuple(latent.shape[-2:]), _guidance(args), img, meta)


def run_vd(args: argparse.Namespace) -> int:
    return sample_and_save(args, prepare_vd(args))


def prepare_vd(args: argparse.Namespace) -> "Job":
    from ..adapters.versatile import vd_image_embedding
    from ..loading_unet import load_vd

    _check(args)
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
    return Job(model, emb, (size // f, size // f), _guidance(args), img, meta)


def _guidance(args) -> Guidance:
    return Guidance(
        scale=args.guidance_scale, prior_mix=args.prior_mix,
        interval=tuple(args.guidance_interval) if args.guidance_interval else None, rescale_phi=args.rescale,
    )


@dataclass
class Job:
    """Everything one sampling run needs once the conditions are encoded (and the encoders freed)."""

    model: Any  # priorswap.toolkit.loading_unet.Conditional
    cond: Any
    latent_hw: tuple[int, int]
    guidance: Any  # Guidance or DualGuidance
    image: Any  # the input as the model saw it (PIL)
    meta: dict
    extra: dict = field(default_factory=dict)  # e.g. IP2P's image-only condition

    def samples(self, args: argparse.Namespace, prior=None, desc: str = "sampling") -> torch.Tensor:
        from ..loading_unet import conditional_samples

        return conditional_samples(
            self.model, self.cond, self.latent_hw, self.guidance, prior, steps=args.steps, seed=args.seed,
            num_samples=args.num_samples, scheduler=args.scheduler, batch_size=args.batch_size, device=args.device,
            offload=args.offload, progress=not args.no_progress, desc=desc, **self.extra,
        )


def load_paired_prior(args: argparse.Namespace, job: Job):
    """The --prior (None without one), checked against the model before any sampling (one-line error if not)."""
    from ..pairing import pair

    if args.offload:
        job.model.vae.to("cpu")
    prior = _prior(args)
    if prior is not None:
        pair(job.model.denoiser, prior.denoiser, job.latent_hw)
    return prior


def sample_and_save(args: argparse.Namespace, job: Job) -> int:
    prior = load_paired_prior(args, job)
    rows = {"vanilla": job.samples(args, None, "vanilla CFG")}
    if prior is not None:
        rows["swapped"] = job.samples(args, prior, "swapped CFG")
    meta = {
        "kind": job.model.kind, "model": args.model, "prior": args.prior, "steps": args.steps, "seed": args.seed,
        "scheduler": args.scheduler, "dtype": args.dtype, "prior_mix": args.prior_mix, **job.meta,
    }
    write_outputs(args.output_dir, job.image, rows, meta)
    print(f"wrote {args.num_samples} x {' + '.join(rows)} samples and grid.png to {args.output_dir}")
    return 0


def write_outputs(out_dir: str, img, rows: dict[str, torch.Tensor], meta: dict) -> None:
    """Write every file atomically, once all samples exist: input and samples first, then grid and meta."""
    from PIL import Image

    from ..files import atomic_write
    from ..images import to_uint8

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
