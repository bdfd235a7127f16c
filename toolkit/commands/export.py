"""``priorswap export --ckpt last.ckpt --out DIR``: a checkpoint's EMA model as a diffusers DiT pipeline folder."""

from __future__ import annotations

from dataclasses import dataclass

from .. import checks
from ..argspec import Command, arg


@dataclass(kw_only=True)
class Export:
    ckpt: str = arg(help="a checkpoint written by priorswap fit (e.g. .../checkpoints/last.ckpt)")
    out: str = arg(help="output folder (a diffusers DiTPipeline folder plus id2label.json)")

    def check(self) -> None:
        checks.check_input_file("--ckpt", self.ckpt)
        checks.check_output_dir("--out", self.out)


def run(args: Export) -> int:
    import torch

    from ..training.module import DiTFineTune

    step = torch.load(args.ckpt, map_location="cpu", weights_only=True).get("global_step")  # no pickled code
    module = DiTFineTune.load_from_checkpoint(args.ckpt, map_location="cpu", weights_only=True)
    path = module.export(args.out)
    print(f"exported EMA model (step {step}) to {path}")
    return 0


COMMAND = Command(Export, run, "export a fine-tuning checkpoint's EMA weights as a diffusers DiT pipeline folder")
