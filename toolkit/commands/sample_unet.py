"""``priorswap sample ip2p|zero123|vd``: edit, re-view or vary one input image, vanilla and with a swapped prior.

Each run writes, into ``--output-dir``: ``input.png`` (the image as the model saw it), ``vanilla/NNN.png``,
``swapped/NNN.png`` (with ``--prior``), ``grid.png`` (row 1 vanilla, row 2 swapped, same seeds) and
``meta.json``. Each file is written whole (temp file, then rename) once every sample is done.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from .. import checks
from ..argspec import Command, arg
from ..errors import PriorswapError
from ..paper import PAPER
from .common import SamplingOptions


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
        for flag, scale in (("--image-guidance", self.image_guidance), ("--text-guidance", self.text_guidance)):
            checks.check_scales(flag, scale)
        for flag, value in (("--width", self.width), ("--height", self.height)):
            checks.at_least(flag, value)
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


# -- the three commands: the UNet family's run (priorswap.toolkit.unet.run), then the files ----------------
def run_ip2p(args: SampleIP2P) -> int:
    return sample_and_save(args, "ip2p")


def run_zero123(args: SampleZero123) -> int:
    return sample_and_save(args, "zero123")


def run_vd(args: SampleVD) -> int:
    return sample_and_save(args, "vd")


def prepare_paired(args: SampleImage, kind: str):
    """The UNet family's load -> prepare, then the --prior (priors.py knows every family a prior may be), paired."""
    from ..core.sampling import DTYPES
    from ..priors import load_unet_prior
    from ..unet.run import PREPARE, home, paired_prior

    job = PREPARE[kind](args)
    prior = load_unet_prior(args.prior, DTYPES[args.dtype], home(args)) if args.prior else None
    return job, paired_prior(job, prior)


def sample_and_save(args: SampleImage, kind: str) -> int:
    from ..unet.run import rows

    job, prior = prepare_paired(args, kind)
    samples = rows(args, job, prior)
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
    write_outputs(args.output_dir, job.image, samples, meta)
    print(f"wrote {args.num_samples} x {' + '.join(samples)} samples and grid.png to {args.output_dir}")
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
