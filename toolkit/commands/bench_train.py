"""``priorswap bench train``: training images/s of the LightningModule against a plain PyTorch loop, with and
without the VAE latent cache, in one run.

The plain loop is DiT's ``train.py`` shape (encode, loss, backward, AdamW step, EMA update) calling the same
module's loss on the same batches, so the difference is Lightning's own overhead. A random-init SD-architecture
VAE (34M-parameter encoder) and a random DiT are used; images are random 64 px JPEGs in an ImageFolder.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass

from .. import checks
from ..argspec import Command, arg


@dataclass(kw_only=True)
class BenchTrain:
    """``priorswap bench train``: images/s of the LightningModule against a plain loop."""

    family: str = arg("dit", choices=("dit", "sd"), help="dit, or sd: the text-to-image module on a tiny SD pipeline")
    size: str = arg("S/2", help="random DiT size")
    resolution: int = arg(64, help="image side in pixels (latents are 1/8)")
    batch_size: int = arg(8, help="images per step")
    steps: int = arg(12, help="timed steps per cell (after 2 warm-up steps)")
    repeats: int = arg(2, help="alternating repeats of each cell (median reported)")
    json: bool = arg(False, help="print a JSON object as the last line")

    def check(self) -> None:
        for name in ("resolution", "batch_size", "steps", "repeats"):  # each flag is its field's name
            checks.at_least("--" + name.replace("_", "-"), getattr(self, name))


def _images(folder: str, n: int, size: int) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(2):
        os.makedirs(os.path.join(folder, f"class{c}"), exist_ok=True)
        for i in range(n // 2):
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(
                os.path.join(folder, f"class{c}", f"{i}.jpg")
            )


def _vae_folder(folder: str) -> str:
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=2,
    ).save_pretrained(folder)
    return folder


def run(args: BenchTrain) -> int:
    import torch

    from priorswap.data import ImageFolderDataModule

    from ..training.module import DiTFineTune
    from .train_timing import lightning_images_per_s, median_cells

    if args.family == "sd":
        from .bench_train_t2i import run_t2i

        r = run_t2i(args)
        return _report(args, r["med"], r["what"], r["fly_name"], r["cache_name"])

    work = tempfile.mkdtemp(prefix="priorswap-bench-")
    total = args.batch_size * (args.steps + 2)
    _images(os.path.join(work, "images"), total, args.resolution)
    vae_dir = _vae_folder(os.path.join(work, "vae"))
    latent = args.resolution // 8

    def datamodule(cache: bool):
        return ImageFolderDataModule(
            root=os.path.join(work, "images"),
            resolution=args.resolution,
            batch_size=args.batch_size,
            num_workers=0,
            val_fraction=0.0,
            drop_last=True,
            latent_cache=os.path.join(work, "cache") if cache else None,
        )

    def module():
        torch.manual_seed(0)
        return DiTFineTune(
            pretrained=None,
            vae=vae_dir,
            size=args.size,
            in_channels=4,
            sample_size=latent,
            num_classes=2,
            export_on_fit_end=False,
        )

    def lightning(cache: bool) -> float:
        return lightning_images_per_s(args, module(), datamodule(cache))

    def plain(cache: bool) -> float:
        """DiT train.py's loop around the same module and batches: no Trainer."""
        dm = datamodule(cache)
        m = module()
        device = "cuda" if torch.cuda.is_available() else "cpu"
        m.configure_model()
        m.to(device).train()
        if cache:
            m.vae.to(device)

            @torch.no_grad()
            def encode(pixels):
                dist = m.vae.encode(pixels.to(device)).latent_dist
                return dist.mean.float().cpu(), dist.std.float().cpu()

            dm.build_latent_cache(encode, encoder_id=f"{vae_dir}|{m.vae.dtype}", rank=0, world_size=1)
        dm.setup("fit")
        opt = m.configure_optimizers()
        batches = iter(dm.train_dataloader())
        for step in range(args.steps + 2):
            if step == 2:
                start = time.perf_counter()
            batch = {k: v.to(device) for k, v in next(batches).items()}
            loss = m.diffusion_loss(batch)["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            m.ema.update_parameters(m.transformer)
        if device == "cuda":
            torch.cuda.synchronize()
        return args.steps * args.batch_size / (time.perf_counter() - start)

    med = median_cells(plain, lightning, args.repeats)
    what = f"random DiT-{args.size} on {latent}x{latent} latents ({args.resolution} px), SD-architecture VAE"
    return _report(args, med, what, "VAE encode on the fly", "latent cache")


def _report(args: BenchTrain, med: dict, what: str, fly_name: str, cache_name: str) -> int:
    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} threads"
    print(f"training images/s, {what}, batch {args.batch_size}, {device}, median of {args.repeats}")
    print("| data | plain loop img/s | LightningModule img/s | Lightning overhead |")
    print("|---|---|---|---|")
    rows = []
    for cache in (False, True):
        p, l = med[("plain", cache)], med[("lightning", cache)]
        overhead = p / l - 1
        rows.append({"cache": cache, "plain": p, "lightning": l, "overhead": overhead})
        print(f"| {cache_name if cache else fly_name} | {p:.2f} | {l:.2f} | {100 * overhead:+.1f}% |")
    speedup = med[("lightning", True)] / med[("lightning", False)]
    print(f"{cache_name} speed-up (LightningModule): {speedup:.2f}x")
    if args.json:
        print(json.dumps({"rows": rows, "cache_speedup": speedup}))
    return 0


COMMAND = Command(BenchTrain, run, "images/s: LightningModule vs plain loop, with and without the latent cache")
