"""``priorswap sample dit|...``: sample a fine-tuned model with vanilla or prior-swapped CFG."""
from __future__ import annotations

import argparse

import numpy as np

from ..api import class_conditional_samples
from ..errors import PriorswapError
from ..images import save_grid, to_uint8
from ..loading import load_dit, load_prior
from ..sampling import Guidance
from . import sample_unet
from .common import DTYPES, add_sampling_args, check_sampling_args, save_npz_atomic


def register(sub) -> None:
    p = sub.add_parser("sample", help="sample a fine-tuned model, vanilla or with a swapped prior")
    kinds = p.add_subparsers(dest="kind", required=True, parser_class=type(p))
    d = kinds.add_parser("dit", help="class-conditional DiT (diffusers DiT pipeline folder or hub id)")
    d.add_argument("--model", required=True, help="fine-tuned DiT pipeline folder or hub id")
    d.add_argument("--labels", type=int, nargs="+", required=True, help="class ids to sample, one image each")
    d.add_argument("--guidance-scale", type=float, default=1.5)
    d.add_argument("--guide-channels", type=int, default=None, help="guide only the first K channels (3 = original DiT code)")
    d.add_argument("--output", required=True, help="output .npz (arr_0: uint8 NHWC, labels)")
    d.add_argument("--grid", help="also save a PNG grid")
    d.add_argument("--compare", action="store_true", help="with --prior: also sample vanilla CFG (npz key 'vanilla', grid row 1)")
    add_sampling_args(d)
    d.set_defaults(func=run_dit)
    sample_unet.register(kinds)


def run_dit(args: argparse.Namespace) -> int:
    check_sampling_args(args)
    if args.guide_channels is not None and args.guide_channels < 1:
        raise PriorswapError(f"--guide-channels must be at least 1, got {args.guide_channels}")
    if args.compare and not args.prior:
        raise PriorswapError("--compare needs --prior")
    dtype = DTYPES[args.dtype]
    model = load_dit(args.model, "model", dtype, args.device)
    labels = model.denoiser.check_labels(args.labels)
    prior = load_prior(args.prior, dtype, args.device) if args.prior else None
    guidance = Guidance(
        scale=args.guidance_scale,
        prior_mix=args.prior_mix,
        guided_channels=args.guide_channels,
        interval=tuple(args.guidance_interval) if args.guidance_interval else None,
        rescale_phi=args.rescale,
    )
    common = dict(steps=args.steps, seed=args.seed, scheduler=args.scheduler, batch_size=args.batch_size, progress=not args.no_progress)
    if prior is not None:  # checks the pair before any sampling
        from ..pairing import pair

        pair(model.denoiser, prior.denoiser, (model.denoiser.sample_size,) * 2)
    rows, names, arrays = [], [], {}
    if prior is None or args.compare:
        vanilla = class_conditional_samples(model, labels, guidance, None, desc="vanilla CFG", **common)
        rows.append(vanilla)
        names.append("vanilla")
        arrays["vanilla"] = to_uint8(vanilla)
    if prior is not None:
        swapped = class_conditional_samples(model, labels, guidance, prior, desc="swapped CFG", **common)
        rows.append(swapped)
        names.append("swapped")
        arrays["swapped"] = to_uint8(swapped)
    main = arrays["swapped"] if prior is not None else arrays["vanilla"]
    extra = {"vanilla": arrays["vanilla"]} if args.compare else {}
    save_npz_atomic(args.output, arr_0=main, labels=np.asarray(labels.numpy(), dtype=np.int64), **extra)
    print(f"wrote {len(main)} samples to {args.output}")
    if args.grid:
        save_grid(args.grid, rows, row_labels=names)
        print(f"wrote grid to {args.grid}")
    return 0
