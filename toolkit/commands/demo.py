"""``priorswap demo``: the paper's DiT experiment in miniature, offline, on real Fashion-MNIST images."""
from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser("demo", help="base -> fine-tune with CFG dropout -> vanilla vs swapped CFG report (CPU, ~10 min)")
    p.add_argument("--out", default="runs/demo", help="output folder (re-running reuses what is there)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--full", action="store_true", help="more samples and steps (the README table): 1000 samples, 50 DDIM steps")
    size.add_argument("--tiny", action="store_true", help="a seconds-long run of every stage (what CI runs)")
    p.add_argument("--retrain", action="store_true", help="rebuild the shipped base model and classifier instead of using them")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..demo.runner import DemoConfig, run_demo

    cfg = DemoConfig.full(args.out) if args.full else DemoConfig.tiny(args.out) if args.tiny else DemoConfig(out=args.out)
    cfg.retrain = args.retrain
    cfg.progress = cfg.progress and not args.no_progress
    run_demo(cfg)
    return 0
