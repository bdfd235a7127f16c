"""``priorswap eval ip2p|zero123|vd``: the paper's evaluation protocols, vanilla CFG against each prior.

    priorswap eval zero123 --model kxic/zero123-xl --data gso_renders/ --prior sd14=CompVis/stable-diffusion-v1-4 \
        --prior sd21=stabilityai/stable-diffusion-2-1 --lpips-weights alexnet-owt-7be5be79.pth --output-dir out/z123

Writes out/eval.md (the paper-style table), eval.csv, items.csv (per sample) and samples/<method>/<setting>/.
A killed run resumes from the samples on disk; ``--shard K/N`` splits the sampling over N processes (GPUs).
"""
from __future__ import annotations

import argparse

import torch

from ..errors import PriorswapError
from ..protocols.runner import DEFAULT_SCALE, DEFAULT_STEPS, ProtocolRun, evaluate_protocol
from ..protocols.score import ALLOWED, DEFAULT_METRICS
from .common import hide_library_progress

DATA_HELP = {
    "ip2p": ".jsonl/.csv edit manifest: image, edit, input_caption, output_caption (EditEval-style)",
    "zero123": "folder of rendered objects (<object>/NNN.png + NNN.npy world-to-camera [R|t]) or a .jsonl/.csv "
               "manifest: image, target, polar, azimuth (degrees), radius",
    "vd": "folder of images (searched recursively; e.g. COCO val2014) or a .jsonl/.csv manifest with an image column",
}
MODEL_HELP = {"ip2p": "timbrooks/instruct-pix2pix", "zero123": "kxic/zero123-xl", "vd": "shi-labs/versatile-diffusion"}


def register(kinds) -> None:
    for kind in ("ip2p", "zero123", "vd"):
        p = kinds.add_parser(kind, help=f"paper protocol for {MODEL_HELP[kind]}: {', '.join(DEFAULT_METRICS[kind])}")
        p.add_argument("--model", required=True, help=f"fine-tune folder or hub id (e.g. {MODEL_HELP[kind]})")
        p.add_argument("--data", required=True, help=DATA_HELP[kind])
        p.add_argument("--output-dir", required=True, help="samples/, eval.md, eval.csv, items.csv; re-running resumes")
        p.add_argument("--prior", action="append", default=[], metavar="[NAME=]REF",
                       help="a prior (repeat for several); each gets a table row next to vanilla CFG")
        if kind == "ip2p":
            p.add_argument("--image-guidance", type=float, nargs="+", default=[1.5], help="gI values (default 1.5)")
            p.add_argument("--text-guidance", type=float, nargs="+", default=[7.5], help="gT values (default 7.5)")
            p.add_argument("--size", type=int, help="square size in pixels (default: each input's own, rounded down)")
        else:
            p.add_argument("--guidance-scale", type=float, nargs="+", default=[DEFAULT_SCALE[kind]],
                           help=f"CFG scales (default {DEFAULT_SCALE[kind]})")
            default_size = "256" if kind == "zero123" else "the UNet's sample size x 8"
            p.add_argument("--size", type=int, help=f"square size in pixels (default {default_size})")
        if kind == "zero123":
            p.add_argument("--reference-view", type=int, default=0, help="view used as the condition in object folders (default 0)")
        if kind == "vd":
            p.add_argument("--limit", type=int, help="use this many input images, drawn at random with --seed (paper: 30000)")
            p.add_argument("--reference", help="folder of real images for FID / FD-DINOv2 (default: --data; paper: all of COCO val2014)")
            p.add_argument("--reference-limit", type=int, help="use only the first N reference images (sorted)")
        else:
            p.add_argument("--limit", type=int, help="use this many items, drawn at random with --seed")
        p.add_argument("--metrics", nargs="+", help=f"subset of {', '.join(ALLOWED[kind])} (default {' '.join(DEFAULT_METRICS[kind])})")
        p.add_argument("--num-samples", type=int, default=1, help="samples per item (default 1)")
        p.add_argument("--steps", type=int, help=f"DDIM steps (default {DEFAULT_STEPS[kind]})")
        p.add_argument("--scheduler", default="ddim")
        p.add_argument("--seed", type=int, default=0, help="sample k of item i uses seed + i * num_samples + k")
        p.add_argument("--batch-size", type=int, default=8)
        p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
        p.add_argument("--dtype", default="fp32", help="fp32, bf16 or fp16")
        p.add_argument("--offload", action="store_true", help="keep every network on the CPU except while it runs")
        p.add_argument("--shard", help="K/N: sample only items i with i %% N == K (one process per GPU), then run without it to score")
        g = p.add_argument_group("metric networks (local files work offline)")
        g.add_argument("--clip", default="openai/clip-vit-large-patch14", help="CLIPModel folder or hub id for CLIP-I/T/D")
        g.add_argument("--lpips-net", default="alex", help="LPIPS backbone: alex, vgg or squeeze (default alex)")
        g.add_argument("--lpips-weights", help="torchvision ImageNet state dict of the LPIPS backbone (default: torch hub cache)")
        g.add_argument("--inception-weights", help="FID Inception weights (pt_inception-2015-12-05 .pth) for FID")
        g.add_argument("--dinov2-weights", help="DINOv2 ViT-L/14 weights (timm safetensors) for FD-DINOv2 and DINOv2 similarity")
        g.add_argument("--dinov2-model", help="timm model name of the DINOv2 network (default vit_large_patch14_dinov2.lvd142m)")
        g.add_argument("--dinov2-size", type=int, help="DINOv2 input size (default 224)")
        p.add_argument("--stats-cache", default="~/.cache/priorswap/refstats", help="reference statistics cache folder")
        p.add_argument("--no-progress", action="store_true")
        p.set_defaults(func=run, protocol=kind)


def parse_shard(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise PriorswapError(f"--shard {text!r} is not K/N (e.g. 0/4)") from None
    return k, n


def run(args: argparse.Namespace) -> int:
    if args.no_progress:
        hide_library_progress()
    kind = args.protocol
    run_ = ProtocolRun(
        kind=kind, model=args.model, data=args.data, output_dir=args.output_dir, priors=args.prior,
        guidance_scales=getattr(args, "guidance_scale", []) or [], image_guidance=getattr(args, "image_guidance", [1.5]),
        text_guidance=getattr(args, "text_guidance", [7.5]), metrics=args.metrics, num_samples=args.num_samples,
        limit=args.limit, size=args.size, reference_view=getattr(args, "reference_view", 0),
        reference=getattr(args, "reference", None), reference_limit=getattr(args, "reference_limit", None),
        steps=args.steps, scheduler=args.scheduler, seed=args.seed, batch_size=args.batch_size, device=args.device,
        dtype=args.dtype, offload=args.offload, shard=parse_shard(args.shard), clip=args.clip, lpips_net=args.lpips_net,
        lpips_weights=args.lpips_weights, inception_weights=args.inception_weights, dinov2_weights=args.dinov2_weights,
        dinov2_model=args.dinov2_model, dinov2_size=args.dinov2_size, stats_cache=args.stats_cache,
        progress=not args.no_progress,
    )
    evaluate_protocol(run_)
    return 0
