"""``priorswap export --ckpt last.ckpt --out DIR``: a checkpoint's EMA model as a diffusers DiT pipeline folder."""
from __future__ import annotations

import argparse
import os

from ..errors import PriorswapError


def register(sub) -> None:
    p = sub.add_parser("export", help="export a fine-tuning checkpoint's EMA weights as a diffusers DiT pipeline folder")
    p.add_argument("--ckpt", required=True, help="a checkpoint written by priorswap fit (e.g. .../checkpoints/last.ckpt)")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..training.module import DiTFineTune

    if not os.path.isfile(args.ckpt):
        raise PriorswapError(f"checkpoint {args.ckpt!r} does not exist")
    import torch

    step = torch.load(args.ckpt, map_location="cpu", weights_only=True).get("global_step")  # no pickled code
    module = DiTFineTune.load_from_checkpoint(args.ckpt, map_location="cpu", weights_only=True)
    path = module.export(args.out)
    print(f"exported EMA model (step {step}) to {path}")
    return 0
