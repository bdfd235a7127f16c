"""``priorswap bench sample``: cost of one guided prediction, vanilla (one batched pass) vs swapped (two models).

Each (mode, batch) cell runs in its own subprocess so that peak memory is that cell's alone: on CUDA
``torch.cuda.max_memory_allocated``, on the CPU the process's peak resident set size (ru_maxrss).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

from .. import checks
from ..argspec import Command, arg
from . import bench_train, bench_unet


@dataclass(kw_only=True)
class BenchSample:
    """``priorswap bench sample``: one guided prediction, vanilla against prior-swapped."""

    size: str = arg("S/2", help="random DiT size (S/2: 40M parameters)")
    batch_sizes: list[int] = arg(default_factory=lambda: [1, 8, 32], help="batch sizes, one table row each")
    repeats: int = arg(5, help="timed repeats per cell (median reported)")
    device: str = arg("auto", help="cpu, cuda or cuda:N (auto: cuda when one is available)")
    dtype: str = arg("fp32", choices=checks.DTYPE_NAMES, help="weights and activations (fp16 needs CUDA)")
    json: bool = arg(False, help="print a JSON object as the last line")

    def check(self) -> None:
        checks.at_least("--repeats", self.repeats)
        for b in self.batch_sizes:
            checks.at_least("--batch-sizes", b)
        self.device = checks.resolve_device(self.device)
        checks.check_device(self.device, self.dtype)


def _cell(task: str, batch: int, size: str, repeats: int, device: str, dtype: str) -> dict:
    """One cell, run in a fresh subprocess.

    ``task="time"`` loads both models and alternates vanilla and swapped calls, so that load on the
    machine hits both modes alike; ``task="mem-vanilla"|"mem-swapped"`` loads only what that mode needs
    and reports the peak memory of two calls.
    """
    import resource

    import torch

    from ..adapters.dit import DiTDenoiser
    from ..denoisers import LatentSpace
    from ..loading import alphas_cumprod
    from ..models import build_dit, dit_scheduler_config
    from ..sampling import DTYPES, Guidance, cfg_eps

    torch.manual_seed(0)
    space = LatentSpace(alphas_cumprod(dit_scheduler_config()), "epsilon", 4, 0.18215)
    model = DiTDenoiser(build_dit(size, num_classes=101), space).to(device, DTYPES[dtype])
    need_prior = task in ("time", "mem-swapped")
    prior = DiTDenoiser(build_dit(size, num_classes=1000), space).to(device, DTYPES[dtype]) if need_prior else None
    labels = torch.randint(0, 101, (batch,), device=device)
    fns = {
        "vanilla": cfg_eps(model, labels, Guidance(scale=1.5)),
        "swapped": cfg_eps(model, labels, Guidance(scale=1.5), prior),
    }
    modes = ["vanilla", "swapped"] if task == "time" else [task.removeprefix("mem-")]
    x = torch.randn(batch, 4, model.sample_size, model.sample_size, device=device)
    t = torch.tensor(500, device=device)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times: dict[str, list[float]] = {m: [] for m in modes}
    with torch.no_grad():
        for i in range((repeats if task == "time" else 1) + 1):  # round 0 is a warm-up
            for m in modes:
                if cuda:
                    torch.cuda.synchronize()
                start = time.perf_counter()
                fns[m](x, t)
                if cuda:
                    torch.cuda.synchronize()
                if i:
                    times[m].append(time.perf_counter() - start)
    if task != "time":
        peak = (
            torch.cuda.max_memory_allocated() / 2**20
            if cuda
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        )
        return {"task": task, "batch": batch, "peak_mb": peak}
    return {"task": task, "batch": batch, **{f"{m}_s": statistics.median(v) for m, v in times.items()}}


def _worker(task: str, batch: int, args: BenchSample) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "priorswap.toolkit.commands.bench",
        task,
        str(batch),
        args.size,
        str(args.repeats),
        args.device,
        args.dtype,
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if res.returncode != 0:
        raise RuntimeError(
            f"benchmark worker failed: {res.stderr.strip().splitlines()[-1] if res.stderr.strip() else res.returncode}"
        )
    return json.loads(res.stdout.strip().splitlines()[-1])


def run_sample_bench(args: BenchSample) -> int:
    import torch

    rows = []
    for batch in args.batch_sizes:
        timing = _worker("time", batch, args)
        mem = {m: _worker(f"mem-{m}", batch, args)["peak_mb"] for m in ("vanilla", "swapped")}
        rows.append(
            {
                "batch": batch,
                "vanilla_s": timing["vanilla_s"],
                "swapped_s": timing["swapped_s"],
                "vanilla_peak_mb": mem["vanilla"],
                "swapped_peak_mb": mem["swapped"],
            }
        )
    device = (
        torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
    )
    mem = "peak CUDA MiB" if args.device.startswith("cuda") else "peak RSS MiB"
    print(f"one guided prediction, random DiT-{args.size}, {args.dtype}, {device}, median of {args.repeats}")
    print(f"| batch | vanilla s | swapped s | swapped/vanilla | vanilla {mem} | swapped {mem} |")
    print("|---|---|---|---|---|---|")
    ratios = {}
    for r in rows:
        ratios[r["batch"]] = r["swapped_s"] / r["vanilla_s"]
        print(
            f"| {r['batch']} | {r['vanilla_s']:.3f} | {r['swapped_s']:.3f} | {ratios[r['batch']]:.2f} | {r['vanilla_peak_mb']:.0f} | {r['swapped_peak_mb']:.0f} |"
        )
    if args.json:
        key = 8 if 8 in ratios else args.batch_sizes[0]
        print(json.dumps({"swapped_over_vanilla": round(ratios[key], 4), "batch_for_ratio": key, "rows": rows}))
    return 0


COMMANDS = {
    "sample": Command(BenchSample, run_sample_bench, "one guided prediction: vanilla vs prior-swapped, batch 1/8/32"),
    "train": bench_train.COMMAND,
    "unet": bench_unet.COMMAND,
}
HELP = "benchmarks that print figures (tables in the README)"


if __name__ == "__main__":  # worker: python -m priorswap.toolkit.commands.bench TASK BATCH SIZE REPEATS DEVICE DTYPE
    task, batch, size, repeats, device, dtype = sys.argv[1:7]
    print(json.dumps(_cell(task, int(batch), size, int(repeats), device, dtype)))
