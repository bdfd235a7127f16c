"""``priorswap bench unet``: peak memory and wall time per sample, vanilla against swapped CFG.

Each (model, mode) runs in a fresh subprocess, so peaks never leak between rows:
- peak memory: ``torch.cuda.max_memory_allocated`` on a GPU; on the CPU the process's resident high-water
  mark (``ru_maxrss``) minus its resident size after imports. Both include weights and activations.
- time: wall seconds per sample of the sampling loop alone (loading excluded, one warm-up sample first).
- weights: parameters resident while sampling (fine-tune UNet + VAE, plus the prior's UNet when swapped),
  an exact number that does not depend on the allocator.
``--tiny`` benchmarks tiny random models (``priorswap.toolkit.unet.tiny``); ``--model``/``--prior`` real ones.
The same command prints the same table on a GPU (``--device cuda``). ``--json``: the last line is JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass

from .. import checks
from ..argspec import Command, arg
from ..errors import PriorswapError
from .bench_cells import seconds_of

MODES = ("vanilla", "swapped", "swapped+offload")


@dataclass(kw_only=True)
class BenchUNet:
    """``priorswap bench unet``: memory and time per sample of the UNet fine-tunes, vanilla against swapped."""

    kind: list[str] = arg(
        default_factory=lambda: ["ip2p", "zero123", "vd"],
        choices=("ip2p", "zero123", "vd", "dynamicrafter"),
        help="models to benchmark",
    )
    tiny: bool = arg(False, help="build tiny random models (priorswap.toolkit.unet.tiny)")
    model: str | None = arg(None, help="with a single --kind: that model's folder or hub id")
    prior: str | None = arg(None, help="prior folder or hub id (with --tiny: a tiny SD pipeline)")
    image: str | None = arg(None, help="input image (default with --tiny: a generated test picture)")
    modes: list[str] = arg(default_factory=lambda: list(MODES), choices=MODES, help="rows per model")
    steps: int = arg(10, help="sampling steps per timed run")
    num_samples: int = arg(2, help="samples per timed run (one batch)")
    repeats: int = arg(2, help="timed runs per row; the fastest counts")
    device: str = arg("auto", help="cpu, cuda or cuda:N (auto: cuda when one is available)")
    dtype: str = arg("fp32", choices=checks.DTYPE_NAMES, help="weights and activations (fp16 needs CUDA)")
    json: bool = arg(False, help="print the results as one JSON object on the last line")

    def check(self) -> None:
        if not self.tiny and not self.model:
            raise PriorswapError("give --tiny, or --model (and --prior) with a single --kind")
        if self.model and len(self.kind) != 1:
            raise PriorswapError("--model needs exactly one --kind (ip2p, zero123 or vd)")
        if not self.tiny and not self.prior and set(self.modes) - {"vanilla"}:
            raise PriorswapError("swapped modes need --prior (or use --modes vanilla)")
        if self.model and not self.image:
            raise PriorswapError("--image is needed with --model")
        if self.image:
            checks.check_input_file("--image", self.image)
        for flag, value in (("--steps", self.steps), ("--num-samples", self.num_samples), ("--repeats", self.repeats)):
            checks.at_least(flag, value)
        self.device = checks.resolve_device(self.device)
        checks.check_device(self.device, self.dtype)


def bench_unet(args: BenchUNet) -> int:
    """Run every (kind, mode) in its own process and print the table (and JSON with --json)."""
    with tempfile.TemporaryDirectory(prefix="priorswap-bench-") as tmp:
        folders, image, prior = {}, args.image, args.prior
        if args.tiny:
            from ..unet import tiny as uf

            build = {
                "ip2p": uf.save_ip2p,
                "zero123": uf.save_zero123,
                "vd": uf.save_vd,
                "dynamicrafter": _tiny_video_pair,
            }
            folders = {k: build[k](os.path.join(tmp, k)) for k in args.kind}
            priors = {"dynamicrafter": os.path.join(tmp, "dynamicrafter", "videocrafter")}
            prior = prior or uf.save_sd(os.path.join(tmp, "sd"))
            image = image or uf.save_image(os.path.join(tmp, "input.png"), (uf.IMAGE_SIZE, uf.IMAGE_SIZE))
        else:
            folders, priors = {args.kind[0]: args.model}, {}
        rows = []
        for kind, folder in folders.items():
            for mode in args.modes:
                job = dict(
                    kind=kind,
                    model=folder,
                    prior=priors.get(kind, prior) if mode != "vanilla" else None,
                    mode=mode,
                    image=image,
                    steps=args.steps,
                    num_samples=args.num_samples,
                    repeats=args.repeats,
                    device=args.device,
                    dtype=args.dtype,
                    size=(64 if kind == "dynamicrafter" else uf.IMAGE_SIZE) if args.tiny else None,
                )
                rows.append(_run_worker(job, tmp))
    print(format_table(rows, args.device))
    if args.json:
        print(json.dumps({"device": args.device, "dtype": args.dtype, "rows": rows}))
    return 0


def _tiny_video_pair(folder: str) -> str:
    """Tiny DynamiCrafter and VideoCrafter1 in the released layout, converted by the real code; returns the former."""
    import diffusers

    from ..video.loading import convert
    from ..video.tiny import save_tiny_checkpoint

    diffusers.utils.logging.disable_progress_bar()  # the VAE's "Writing model shards" bar
    for flavour, seed in (("dynamicrafter", 1), ("videocrafter", 2)):
        p = save_tiny_checkpoint(os.path.join(folder, f"{flavour}-ckpt"), flavour, seed)
        convert(p["ckpt"], os.path.join(folder, flavour), flavour, p["config"], p["openclip"])
    return os.path.join(folder, "dynamicrafter")


def _run_worker(job: dict, tmp: str) -> dict:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    out = subprocess.run(
        [sys.executable, "-m", "priorswap.toolkit.commands.bench_unet", json.dumps(job)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp,
    )
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        err = [ln for ln in out.stderr.strip().splitlines() if ln.strip()]
        raise PriorswapError(f"bench of {job['kind']} ({job['mode']}) failed: {err[-1] if err else 'no output'}")
    return json.loads(lines[-1])


def format_table(rows: list[dict], device: str) -> str:
    """A fixed-width table; the deltas are relative to the same model's vanilla row."""
    base = {r["kind"]: r for r in rows if r["mode"] == "vanilla"}
    k = max([8] + [len(r["kind"]) for r in rows])
    head = f"{'model':<{k}} {'mode':<16} {'weights MB':>10} {'peak MB':>9} {'d peak':>7} {'s/sample':>9} {'d time':>7}"
    lines = [f"priorswap bench unet on {device}", head, "-" * len(head)]
    for r in rows:
        b = base.get(r["kind"])
        dp = f"{100 * (r['peak_mb'] / b['peak_mb'] - 1):+.0f}%" if b and b is not r and b["peak_mb"] > 0 else ""
        dt = f"{100 * (r['s_per_sample'] / b['s_per_sample'] - 1):+.0f}%" if b and b is not r else ""
        lines.append(
            f"{r['kind']:<{k}} {r['mode']:<16} {r['weights_mb']:>10.2f} {r['peak_mb']:>9.1f} {dp:>7} {r['s_per_sample']:>9.3f} {dt:>7}"
        )
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


def _best_seconds(run, job: dict, cuda: bool) -> float:
    """The best of ``job["repeats"]`` (2) timings of ``run()``: other processes share the machine."""
    return min(seconds_of(run, cuda) for _ in range(job.get("repeats", 2)))


def _result(job: dict, nets: list, seconds: float, cuda: bool, base_rss: float) -> dict:
    """One row of the table: weights and peak memory (CUDA's own count, else the process's RSS above the baseline)."""
    import torch

    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else _peak_rss_mb() - base_rss
    return {
        "kind": job["kind"],
        "mode": job["mode"],
        "weights_mb": _weights_mb(nets),
        "peak_mb": peak,
        "s_per_sample": seconds / job["num_samples"],
        "steps": job["steps"],
        "num_samples": job["num_samples"],
    }


def video_worker(job: dict) -> dict:
    """The video pair: DynamiCrafter alone (vanilla) or with VideoCrafter1 as the prior (swapped), dual CFG."""
    from PIL import Image

    from ..core.sampling import DTYPES
    from ..video.loading import load_video_model
    from ..video.pipeline import VideoJob, prepare

    cuda = job["device"].startswith("cuda")
    base_rss = _rss_mb()
    offload = job["mode"].endswith("offload")
    home, dtype = "cpu" if offload else job["device"], DTYPES[job["dtype"]]
    model = load_video_model(job["model"], "dynamicrafter", "model", dtype, home)
    prior = load_video_model(job["prior"], "videocrafter", "prior", dtype, home) if job["prior"] else None
    size = (job["size"], job["size"]) if job["size"] else None
    vjob = VideoJob(
        image=Image.open(job["image"]),
        prompt="a dog running",
        num_samples=job["num_samples"],
        steps=1,
        batch_size=job["num_samples"],
        size=size,
        device=job["device"],
        offload=offload,
        progress=False,
        spacing="uniform_trailing",
    )
    prepared = prepare(model, prior, vjob)
    swapped = prior is not None
    prepared.samples(swapped)  # warm-up at the same batch shape, one step
    vjob.steps = job["steps"]
    seconds = _best_seconds(lambda: prepared.samples(swapped), job, cuda)
    nets = [model.unet, model.vae] + ([] if prior is None else [prior.unet])
    return _result(job, nets, seconds, cuda, base_rss)


def worker(job: dict) -> dict:

    from . import sample_unet

    if job["kind"] == "dynamicrafter":
        return video_worker(job)

    cuda = job["device"].startswith("cuda")
    _import_model_classes()  # so the CPU baseline holds the libraries, and the peak only models + activations
    base_rss = _rss_mb()
    kind, size = job["kind"], job["size"]
    common = dict(
        model=job["model"],
        prior=job["prior"],
        image=job["image"],
        output_dir=os.getcwd(),
        num_samples=job["num_samples"],
        offload=job["mode"].endswith("offload"),
        steps=1,
        batch_size=job["num_samples"],
        device=job["device"],
        dtype=job["dtype"],
        progress=False,
    )
    if kind == "ip2p":
        args = sample_unet.SampleIP2P(prompt="make it a watercolor", width=size, height=size, **common)
    elif kind == "zero123":
        args = sample_unet.SampleZero123(polar=30.0, azimuth=60.0, **({"size": size} if size else {}), **common)
    else:
        args = sample_unet.SampleVD(size=size, **common)
    prepared, prior = sample_unet.prepare_paired(args, job["kind"])
    prepared.samples(args, prior)  # warm-up at the same batch shape, one step
    args.steps = job["steps"]
    seconds = _best_seconds(lambda: prepared.samples(args, prior), job, cuda)
    nets = [*prepared.model.denoiser.modules(), prepared.model.vae] + (
        [] if prior is None else prior.denoiser.modules()
    )
    return _result(job, nets, seconds, cuda, base_rss)


COMMAND = Command(BenchUNet, bench_unet, "memory and time per sample of IP2P / Zero-1-to-3 / VD, vanilla vs swapped")


if __name__ == "__main__":
    print(json.dumps(worker(json.loads(sys.argv[1]))))
