"""``priorswap eval dit``: vanilla vs prior-swapped CFG on any exported DiT, with the callback's metrics.

    priorswap eval dit --model runs/x/export --prior facebook/DiT-XL-2-256 --data food101 --data-root /datasets/food101 \
        --num-samples 5000 --guidance-scale 1.5 --extractor inception --extractor-weights pt_inception.pth --output-dir out

Prints a table (metric, vanilla, swapped, swapped - vanilla) and writes it as out/eval.md and out/eval.csv.
``priorswap eval --model ...`` (no kind) is the same command. ``priorswap eval ip2p|zero123|vd`` live in
``eval_unet.py``.
"""
from __future__ import annotations

import argparse
import csv
import importlib
import os

import torch

from ..errors import PriorswapError
from ..files import write_text_atomic
from ..evaluation import EvalSettings, combine_runs, evaluate_local, format_table, local_reference, summarise
from ..loading import load_dit, load_prior
from ..metrics import build_extractor, load_feature_network
from ..pairing import pair
from ..sampling import SCHEDULERS, vae_decoder
from . import eval_unet
from .common import DTYPES

DATAMODULES = {
    "food101": "Food101DataModule", "sun397": "SUN397DataModule", "caltech101": "Caltech101DataModule",
    "imagefolder": "ImageFolderDataModule", "fashion_mnist": "FashionMNISTDataModule", "hf": "HFImageDataModule",
}


def register(sub) -> None:
    e = sub.add_parser("eval", help="compare vanilla and prior-swapped CFG: dit (FID/FD, IS, accuracy), ip2p, zero123, vd")
    kinds = e.add_subparsers(dest="kind", required=True, parser_class=type(e))
    p = kinds.add_parser("dit", help="an exported DiT fine-tune (FID/FD, IS, label accuracy); also `priorswap eval --model ...`")
    p.add_argument("--model", required=True, help="fine-tuned DiT pipeline folder or hub id")
    p.add_argument("--prior", required=True, help="base model folder or hub id")
    p.add_argument("--data", required=True, help=f"reference data: {', '.join(DATAMODULES)}")
    p.add_argument("--data-root", required=True, help="dataset folder (its validation split is the reference)")
    p.add_argument("--classes", type=int, nargs="+", help="class subset the fine-tune was trained on (relabelled 0..k-1)")
    p.add_argument("--resolution", type=int, help="image side; default: the model's")
    p.add_argument("--num-samples", type=int, default=5000, help="samples per (scale, mode) (paper: 5000)")
    p.add_argument("--reference-samples", type=int, help="real images for the reference statistics (default: all)")
    p.add_argument("--guidance-scale", type=float, nargs="+", default=[1.5])
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--scheduler", default="ddim", help=", ".join(SCHEDULERS))
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runs", type=int, default=1, help="repeat with disjoint seeds; FID/FD is the minimum over runs, other "
                   "metrics the mean (paper: min of 3 FID-5k runs, --runs 3)")
    p.add_argument("--guide-channels", type=int, help="guide only the first K channels (3 = original DiT code)")
    p.add_argument("--extractor", default="inception", help="inception, dinov2, or a feature-network file")
    p.add_argument("--extractor-weights", help="local weights file of the extractor")
    p.add_argument("--classifier", help="TorchScript/.pt2 network mapping images in [0,1] to class logits (label accuracy)")
    p.add_argument("--stats-cache", default="~/.cache/priorswap/refstats")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="fp32", choices=list(DTYPES))
    p.add_argument("--output-dir", required=True)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)
    eval_unet.register(kinds)


def run(args: argparse.Namespace) -> int:
    if args.data not in DATAMODULES:
        raise PriorswapError(f"unknown --data {args.data!r}; choose one of {', '.join(DATAMODULES)}")
    if args.num_samples < 1 or args.steps < 1 or args.runs < 1:
        raise PriorswapError("--num-samples, --steps and --runs must be at least 1")
    if args.scheduler not in SCHEDULERS:
        raise PriorswapError(f"unknown scheduler {args.scheduler!r}; choose one of {', '.join(SCHEDULERS)}")
    os.makedirs(args.output_dir, exist_ok=True)
    extractor = build_extractor(args.extractor, args.extractor_weights).to(args.device)  # weights checked first
    classifier = load_feature_network(args.classifier).to(args.device) if args.classifier else None
    model = load_dit(args.model, "model", DTYPES[args.dtype], args.device)
    prior = load_prior(args.prior, DTYPES[args.dtype], args.device)
    den = model.denoiser
    pair(den, prior.denoiser, (den.sample_size, den.sample_size))
    dm_cls = getattr(importlib.import_module("data"), DATAMODULES[args.data])
    resolution = args.resolution or den.sample_size * (8 if model.vae is not None else 1)
    dm = dm_cls(root=args.data_root, resolution=resolution, batch_size=args.batch_size, num_workers=0, classes=args.classes)
    dm.setup("validate")
    val = dm.val_dataloader()
    key = {"dataset": dm.dataset_name, "split": "val", "root": os.path.abspath(args.data_root), "classes": args.classes, "resolution": resolution}
    reference = local_reference(extractor, val.dataset, args.reference_samples, key, args.stats_cache,
                                lambda b: (b["pixels"].float() / 2 + 0.5).clamp(0, 1), val.collate_fn, args.batch_size).gather()
    settings = EvalSettings(tuple(args.guidance_scale), args.num_samples, args.steps, args.scheduler, args.batch_size, args.seed, args.guide_channels)
    decode = vae_decoder(model.vae) if model.vae is not None else None
    clf = (lambda images: classifier(images.to(args.device))) if classifier is not None else None
    metric = {"inception": "fid", "dinov2": "fd_dinov2"}.get(args.extractor.lower(), "fd")
    runs = []
    for r in range(args.runs):  # run r draws seeds seed + r * N ... seed + (r + 1) * N - 1
        settings.seed = args.seed + r * args.num_samples
        local = evaluate_local(den, prior.denoiser, den.num_classes, settings, model.scheduler_config, decode, extractor, clf, progress=not args.no_progress)
        runs.append(summarise(local, reference, metric))
    values = combine_runs(runs, metric)
    rows = format_table(values, args.guidance_scale)
    how = f", {args.runs} runs ({metric}: minimum, others: mean)" if args.runs > 1 else ""
    lines = [f"vanilla vs swapped CFG: model {args.model}, prior {args.prior}, {args.num_samples} samples per cell, "
             f"{args.steps} {args.scheduler} steps, guided channels: {args.guide_channels or 'all'}{how}",
             "", "| metric @ scale | vanilla | swapped | swapped - vanilla |", "|---|---|---|---|"]
    lines += [f"| {name} | {v:.4f} | {s:.4f} | {d:+.4f} |" for name, v, s, d in rows]
    text = "\n".join(lines)
    print(text)
    def atomic(name: str, write) -> None:  # temp file + rename: a killed run never leaves half a table
        write_text_atomic(os.path.join(args.output_dir, name), write)

    def table_csv(f):
        w = csv.writer(f)
        w.writerow(["metric", "scale", "vanilla", "swapped", "swapped_minus_vanilla"])
        for name, v, s, d in rows:
            m, scale = name.split(" @ ")
            w.writerow([m, scale, v, s, d])

    def runs_csv(f):
        w = csv.writer(f)
        w.writerow(["run", "seed", "key", "value"])
        for r, vals in enumerate(runs):
            w.writerows([r, args.seed + r * args.num_samples, k, v] for k, v in sorted(vals.items()))

    atomic("eval.md", lambda f: f.write(text + "\n"))
    atomic("eval.csv", table_csv)
    atomic("eval_runs.csv", runs_csv)
    print(f"wrote {os.path.join(args.output_dir, 'eval.md')}, eval.csv and eval_runs.csv (every run)")
    return 0
