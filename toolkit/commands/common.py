"""Arguments and output helpers shared by the sampling commands."""
from __future__ import annotations

import argparse
import os

import numpy as np
import torch

from ..errors import PriorswapError
from ..files import atomic_write
from ..sampling import DTYPES, SCHEDULERS  # noqa: F401 (DTYPES re-exported for the commands)

def hide_library_progress() -> None:
    """Silence diffusers' and transformers' own progress bars (``--no-progress``)."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


def add_sampling_args(p: argparse.ArgumentParser, steps: int = 50, scheduler: str = "ddim") -> None:
    """--prior/--steps/--seed/--scheduler/--batch-size/--device/--dtype and the guidance extras."""
    p.add_argument("--prior", help="base model whose unconditional eps replaces the fine-tune's (Eq. 7); omit for vanilla CFG")
    p.add_argument("--prior-mix", type=float, default=1.0, help="lambda in uncond = lam*eps_prior + (1-lam)*eps_ft (1 = paper)")
    p.add_argument("--steps", type=int, default=steps, help=f"sampling steps (default {steps})")
    p.add_argument("--seed", type=int, default=0, help="sample i uses seed + i")
    p.add_argument("--scheduler", default=scheduler, help=f"one of {', '.join(SCHEDULERS)} (default {scheduler})")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda[:N]")
    p.add_argument("--dtype", default="fp32", help="fp32, bf16 or fp16")
    p.add_argument("--guidance-interval", type=float, nargs=2, metavar=("LO", "HI"), help="guide only for t/T in [LO, HI]")
    p.add_argument("--rescale", type=float, default=0.0, help="guidance rescale phi (0 = off)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def check_sampling_args(args: argparse.Namespace) -> None:
    """Cheap checks that must fail before any model is loaded."""
    if args.steps < 1:
        raise PriorswapError(f"--steps must be at least 1, got {args.steps}")
    if args.scheduler not in SCHEDULERS:
        raise PriorswapError(f"unknown scheduler {args.scheduler!r}; choose one of {', '.join(SCHEDULERS)}")
    if args.batch_size < 1:
        raise PriorswapError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.dtype not in DTYPES:
        raise PriorswapError(f"unknown --dtype {args.dtype!r}; choose one of {', '.join(DTYPES)}")
    if not 0.0 <= args.prior_mix <= 1.0:
        raise PriorswapError(f"--prior-mix must lie in [0, 1], got {args.prior_mix}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise PriorswapError(f"--device {args.device} requested but no CUDA device is available; use --device cpu")
    for path in (getattr(args, "output", None), getattr(args, "grid", None)):
        if path:
            folder = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(folder):
                raise PriorswapError(f"output folder {folder!r} does not exist")


def save_npz_atomic(path: str, **arrays: np.ndarray) -> None:
    """Write an .npz next to its final path and rename it in, so a killed run never leaves half a file."""
    with atomic_write(path, "wb") as f:
        np.savez(f, **arrays)
