"""``priorswap bench unet``: peak memory and wall time per sample, vanilla against swapped CFG.

Each (model, mode) runs in a fresh subprocess, so peaks never leak between rows:
- peak memory: ``torch.cuda.max_memory_allocated`` on a GPU; on the CPU the process's resident high-water
  mark (``ru_maxrss``) minus its resident size after imports. Both include weights and activations.
- time: wall seconds per sample of the sampling loop alone (loading excluded, one warm-up sample first).
- weights: parameters resident while sampling (fine-tune UNet + VAE, plus the prior's UNet when swapped),
  an exact number that does not depend on the allocator.
``--tiny`` benchmarks tiny random models (``priorswap.toolkit.tiny``); ``--model``/``--prior`` real ones.
The same command prints the same table on a GPU (``--device cuda``). ``--json``: the last line is JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from ..errors import PriorswapError

MODES = ("vanilla", "swapped", "swapped+offload")


def register(sub) -> None:
    """Add ``unet`` to the ``priorswap bench`` sub-commands."""
    p = sub.add_parser("unet", help="memory and time per sample of IP2P / Zero-1-to-3 / VD, vanilla vs swapped")
    p.add_argument("--kind", nargs="+", default=["ip2p", "zero123", "vd"], choices=["ip2p", "zero123", "vd"])
    p.add_argument("--tiny", action="store_true", help="build tiny random models (priorswap.toolkit.tiny)")
    p.add_argument("--model", help="with a single --kind: that model's folder or hub id")
    p.add_argument("--prior", help="prior folder or hub id (with --tiny: a tiny SD pipeline)")
    p.add_argument("--image", help="input image (default: a generated test picture)")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--num-samples", type=int, default=2, help="samples per timed run (one batch)")
    p.add_argument("--repeats", type=int, default=2, help="timed runs per row; the fastest counts")
    p.add_argument("--device", default="cuda" if _cuda() else "cpu")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"])
    p.add_argument("--json", action="store_true", help="print the results as one JSON object on the last line")
    p.set_defaults(func=bench_unet)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def bench_unet(args: argparse.Namespace) -> int:
    """Run every (kind, mode) in its own process and print the table (and JSON with --json)."""
    if not args.tiny and not args.model:
        raise PriorswapError("give --tiny, or --model (and --prior) with a single --kind")
    if args.model and len(args.kind) != 1:
        raise PriorswapError("--model needs exactly one --kind (ip2p, zero123 or vd)")
    if not args.tiny and not args.prior and set(args.modes) - {"vanilla"}:
        raise PriorswapError("swapped modes need --prior (or use --modes vanilla)")
    if args.device.startswith("cuda") and not _cuda():
        raise PriorswapError(f"--device {args.device} requested but no CUDA device is available; use --device cpu")
    with tempfile.TemporaryDirectory(prefix="priorswap-bench-") as tmp:
        folders, image, prior = {}, args.image, args.prior
        if args.tiny:
            from .. import tiny as uf

            build = {"ip2p": uf.save_ip2p, "zero123": uf.save_zero123, "vd": uf.save_vd}
            folders = {k: build[k](os.path.join(tmp, k)) for k in args.kind}
            prior = prior or uf.save_sd(os.path.join(tmp, "sd"))
            image = image or uf.save_image(os.path.join(tmp, "input.png"), (uf.IMAGE_SIZE, uf.IMAGE_SIZE))
        else:
            folders = {args.kind[0]: args.model}
            if image is None:
                raise PriorswapError("--image is needed with --model")
        rows = []
        for kind, folder in folders.items():
            for mode in args.modes:
                job = dict(kind=kind, model=folder, prior=prior if mode != "vanilla" else None, mode=mode, image=image,
                           steps=args.steps, num_samples=args.num_samples, repeats=args.repeats, device=args.device, dtype=args.dtype,
                           size=uf.IMAGE_SIZE if args.tiny else None)
                rows.append(_run_worker(job, tmp))
    print(format_table(rows, args.device))
    if args.json:
        print(json.dumps({"device": args.device, "dtype": args.dtype, "rows": rows}))
    return 0


def _run_worker(job: dict, tmp: str) -> dict:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    out = subprocess.run([sys.executable, "-m", "priorswap.toolkit.commands.bench_unet", json.dumps(job)], capture_output=True, text=True, env=env, cwd=tmp)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        err = [ln for ln in out.stderr.strip().splitlines() if ln.strip()]
        raise PriorswapError(f"bench of {job['kind']} ({job['mode']}) failed: {err[-1] if err else 'no output'}")
    return json.loads(lines[-1])


def format_table(rows: list[dict], device: str) -> str:
    """A fixed-width table; the deltas are relative to the same model's vanilla row."""
    base = {r["kind"]: r for r in rows if r["mode"] == "vanilla"}
    head = f"{'model':<8} {'mode':<16} {'weights MB':>10} {'peak MB':>9} {'d peak':>7} {'s/sample':>9} {'d time':>7}"
    lines = [f"priorswap bench unet on {device}", head, "-" * len(head)]
    for r in rows:
        b = base.get(r["kind"])
        dp = f"{100 * (r['peak_mb'] / b['peak_mb'] - 1):+.0f}%" if b and b is not r and b["peak_mb"] > 0 else ""
        dt = f"{100 * (r['s_per_sample'] / b['s_per_sample'] - 1):+.0f}%" if b and b is not r else ""
        lines.append(f"{r['kind']:<8} {r['mode']:<16} {r['weights_mb']:>10.2f} {r['peak_mb']:>9.1f} {dp:>7} {r['s_per_sample']:>9.3f} {dt:>7}")
    return "\n".join(lines)


# -- worker (one process per row) ------------------------------------------------------------------
def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _weights_mb(modules) -> float:
    return sum(p.numel() * p.element_size() for m in modules for p in m.parameters()) / 2**20


def _import_model_classes() -> None:
    import diffusers
    import transformers

    for name in ("UNet2DConditionModel", "AutoencoderKL", "DDIMScheduler", "PixArtTransformer2DModel"):
        getattr(diffusers, name)
    for name in ("CLIPTextModel", "CLIPVisionModelWithProjection", "CLIPImageProcessor", "CLIPTokenizer"):
        getattr(transformers, name)


def worker(job: dict) -> dict:
    import torch

    from . import sample_unet

    cuda = job["device"].startswith("cuda")
    _import_model_classes()  # so the CPU baseline holds the libraries, and the peak only models + activations
    base_rss = _rss_mb()
    args = argparse.Namespace(
        model=job["model"], prior=job["prior"], image=job["image"], output_dir=os.getcwd(), num_samples=job["num_samples"],
        offload=job["mode"].endswith("offload"), steps=1, seed=0, scheduler="ddim", batch_size=job["num_samples"],
        device=job["device"], dtype=job["dtype"], prior_mix=1.0, guidance_interval=None, rescale=0.0, no_progress=True,
        prompt="make it a watercolor", image_guidance=1.5, text_guidance=7.5, width=job["size"], height=job["size"],
        polar=30.0, azimuth=60.0, radius=0.0, guidance_scale=5.0 if job["kind"] == "zero123" else 2.0, size=job["size"],
    )
    if job["kind"] == "zero123" and not job["size"]:
        args.size = 256
    prepared = getattr(sample_unet, f"prepare_{job['kind']}")(args)
    prior = sample_unet.load_paired_prior(args, prepared)
    prepared.samples(args, prior)  # warm-up at the same batch shape, one step
    args.steps = job["steps"]
    seconds = float("inf")
    for _ in range(job.get("repeats", 2)):  # best of N: other processes share the machine
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        prepared.samples(args, prior)
        if cuda:
            torch.cuda.synchronize()
        seconds = min(seconds, time.perf_counter() - start)
    nets = [*prepared.model.denoiser.modules(), prepared.model.vae] + ([] if prior is None else prior.denoiser.modules())
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else _peak_rss_mb() - base_rss
    return {
        "kind": job["kind"], "mode": job["mode"], "weights_mb": _weights_mb(nets), "peak_mb": peak,
        "s_per_sample": seconds / job["num_samples"], "steps": job["steps"], "num_samples": job["num_samples"],
    }


if __name__ == "__main__":
    print(json.dumps(worker(json.loads(sys.argv[1]))))
