"""``priorswap bench sample``: cost of one guided prediction, vanilla (one batched pass) vs swapped (two models, the
prior in fp32 or bf16), and for a LoRA fine-tune vanilla vs its free prior (one mixed batch, one copy of the weights).

Each (mode, batch) cell runs in its own subprocess so that peak memory is that cell's alone: on CUDA
``torch.cuda.max_memory_allocated``, on the CPU the process's peak resident set size (ru_maxrss).
"""

from __future__ import annotations

import functools
import json
import sys
from dataclasses import dataclass

from .. import checks
from ..argspec import Command, arg
from . import bench_t2i, bench_train, bench_unet
from .bench_cells import measure, run_worker

MODES = ("vanilla", "swapped", "bf16-prior", "lora-vanilla", "lora-free")
# The default run makes the README's first table (vanilla and swapped at batch 1/8/32, median of 3): about 6 minutes
# on a CPU. --full times every mode 5 times, 75 timed predictions, which takes over 25 minutes on a busy 2-core CPU.
TABLE_MODES, TABLE_REPEATS, FULL_REPEATS = ("vanilla", "swapped"), 3, 5
# each mode's time and memory are compared with the vanilla CFG of the same fine-tune
REFERENCE = {
    "vanilla": "vanilla",
    "swapped": "vanilla",
    "bf16-prior": "vanilla",
    "lora-vanilla": "lora-vanilla",
    "lora-free": "lora-vanilla",
}


@dataclass(kw_only=True)
class BenchSample:
    """``priorswap bench sample``: one guided prediction of a full fine-tune (vanilla, swapped with an fp32 or a bf16
    prior) and of a LoRA fine-tune (vanilla, swapped with its free prior), each against its own vanilla CFG."""

    size: str = arg("S/2", help="random DiT size (S/2: 40M parameters)")
    batch_sizes: list[int] = arg(default_factory=lambda: [1, 8, 32], help="batch sizes, one table row each")
    modes: list[str] | None = arg(
        None,
        help=f"modes to run ({', '.join(MODES)}); default: {' '.join(TABLE_MODES)} (the README's first table), "
        "with --full: all",
    )
    lora_rank: int = arg(16, help="rank of the random LoRA (B non-zero) of the lora-* modes")
    repeats: int | None = arg(
        None, help=f"timed repeats per cell, median reported (default: {TABLE_REPEATS}; with --full: {FULL_REPEATS})"
    )
    full: bool = arg(
        False,
        help=f"the whole matrix: every mode, {FULL_REPEATS} repeats (75 timed predictions at 3 batch sizes; "
        "half an hour on a busy 2-core CPU)",
    )
    t2i: bool = arg(
        False,
        help="instead: an SDXL- and an SD3-architecture LoRA at real widths (fewer blocks), vanilla vs the free "
        "prior; slow on a CPU, so not in the default run",
    )
    t2i_archs: list[str] = arg(
        default_factory=lambda: list(bench_t2i.ARCHS), choices=bench_t2i.ARCHS, help="with --t2i"
    )
    t2i_latent: int = arg(32, help="with --t2i: latent side (32: 256 px images; SDXL trains at 128)")
    device: str = arg("auto", help="cpu, cuda or cuda:N (auto: cuda when one is available)")
    dtype: str = arg("fp32", choices=checks.DTYPE_NAMES, help="weights and activations (fp16 needs CUDA)")
    json: bool = arg(False, help="print a JSON object as the last line")

    def check(self) -> None:
        if self.t2i and self.modes:
            raise checks.PriorswapError("--modes picks DiT modes; --t2i always runs lora-vanilla and lora-free")
        checks.at_least("--t2i-latent", self.t2i_latent, 8)
        if self.modes is None:
            self.modes = list(MODES if self.full else TABLE_MODES)
        if self.repeats is None:
            self.repeats = FULL_REPEATS if self.full else TABLE_REPEATS
        checks.at_least("--repeats", self.repeats)
        checks.at_least("--lora-rank", self.lora_rank)
        for b in self.batch_sizes:
            checks.at_least("--batch-sizes", b)
        bad = [m for m in self.modes if m not in MODES]
        if bad or not self.modes:
            raise checks.PriorswapError(f"unknown --modes {bad or '(none)'}; choose from {', '.join(MODES)}")
        self.modes = list(dict.fromkeys([*self.modes, *(REFERENCE[m] for m in self.modes)]))
        self.device = checks.resolve_device(self.device)
        checks.check_device(self.device, self.dtype)


def _dit(size: str, num_classes: int, dtype):
    """A random DiT built directly in ``dtype`` (no transient fp32 copy inflating the peak memory)."""
    import torch

    from ..dit.models import build_dit

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        return build_dit(size, num_classes=num_classes)
    finally:
        torch.set_default_dtype(previous)


def _eps_fns(modes: list[str], size: str, device: str, dtype, rank: int, labels):
    """The guided eps of each mode, building only the networks those modes need."""
    import torch

    from ..core.loading import latent_space
    from ..core.sampling import DTYPES, Guidance, guided_eps
    from ..dit.denoiser import DiTDenoiser
    from ..dit.lora import LoRADiTDenoiser, LoRASpec, add_class_rows, inject, lora_config
    from ..dit.models import dit_scheduler_config
    from ..lora import BasePrior

    # no VAE runs here: the networks are timed on 4-channel inputs, and model and prior share this one space
    space = latent_space("random DiT", dit_scheduler_config(), None, 4)
    g, fns = Guidance(scale=1.5), {}
    if {"vanilla", "swapped", "bf16-prior"} & set(modes):
        model = DiTDenoiser(_dit(size, 101, dtype), space).to(device)
        fns["vanilla"] = guided_eps(model, labels, g, None, 1000)
        for mode, prior_dtype in (("swapped", dtype), ("bf16-prior", DTYPES["bf16"])):
            if mode in modes:
                fns[mode] = guided_eps(
                    model, labels, g, DiTDenoiser(_dit(size, 1000, prior_dtype), space).to(device), 1000
                )
    if {"lora-vanilla", "lora-free"} & set(modes):
        tr = _dit(size, 1000, dtype)
        add_class_rows(tr, 101)
        tr = inject(tr, lora_config(LoRASpec(rank=rank, alpha=rank), 1000, 101))
        with torch.no_grad():
            for name, p in tr.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.01)
        lora = LoRADiTDenoiser(tr.to(device, dtype), space, 101)
        fns["lora-vanilla"] = guided_eps(lora, labels, g, None, 1000)
        if "lora-free" in modes:
            fns["lora-free"] = guided_eps(lora, labels, g, BasePrior(lora), 1000)
    return {m: fns[m] for m in modes}


def _cell(task: str, batch: int, size: str, repeats: int, device: str, dtype: str, modes: list[str], rank: int) -> dict:
    """One cell, run in a fresh subprocess.

    ``task="time"`` builds every mode and alternates their calls, so that load on the machine hits them alike;
    ``task="mem-<mode>"`` builds only what that mode needs and reports the peak memory of two calls.
    """
    import torch

    from ..core.sampling import DTYPES

    torch.manual_seed(0)
    modes = modes if task == "time" else [task.removeprefix("mem-")]
    labels = torch.randint(0, 101, (batch,), device=device)
    fns = _eps_fns(modes, size, device, DTYPES[dtype], rank, labels)
    x = torch.randn(batch, 4, 32, 32, device=device, dtype=DTYPES[dtype])
    t = torch.tensor(500, device=device)
    calls = {m: functools.partial(fns[m], x, t) for m in modes}
    return {"task": task, "batch": batch, **measure(task, calls, repeats, device)}


def _worker(task: str, batch: int, args: BenchSample) -> dict:
    argv = [task, str(batch), args.size, str(args.repeats), args.device, args.dtype, ",".join(args.modes)]
    return run_worker("priorswap.toolkit.commands.bench", [*argv, str(args.lora_rank)])


def timed_predictions(args: BenchSample) -> int:
    """How many guided predictions are timed (warm-ups and the memory cells' calls not counted)."""
    return len(args.batch_sizes) * len(args.modes) * args.repeats


def _t2i_worker(argv: list[str]) -> dict:
    return run_worker("priorswap.toolkit.commands.bench_t2i", argv)


def _device_name(args: BenchSample) -> str:
    import torch

    return torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"


def run_t2i_bench(args: BenchSample) -> int:
    n = len(args.t2i_archs) * len(args.batch_sizes)
    print(f"{n * 2 * args.repeats} timed predictions ({' '.join(args.t2i_archs)}, lora-vanilla and lora-free at batch "
          f"{' '.join(map(str, args.batch_sizes))}, {args.repeats} repeats)", flush=True)  # fmt: skip
    rows = bench_t2i.rows(args, _t2i_worker)
    bench_t2i.print_rows(rows, args, _device_name(args))
    if args.json:
        print(json.dumps({"rows": rows}))
    return 0


def run_sample_bench(args: BenchSample) -> int:
    import torch

    if args.t2i:
        return run_t2i_bench(args)
    more = "" if args.full else "; --full runs every mode"
    print(
        f"{timed_predictions(args)} timed predictions ({' '.join(args.modes)} at batch "
        f"{' '.join(map(str, args.batch_sizes))}, {args.repeats} repeats){more}",
        flush=True,
    )
    rows = []
    for batch in args.batch_sizes:
        timing = _worker("time", batch, args)
        mem = {m: _worker(f"mem-{m}", batch, args)["peak_mb"] for m in args.modes}
        for m in args.modes:
            ref = REFERENCE[m]
            rows.append(
                {
                    "batch": batch,
                    "mode": m,
                    "s": timing[f"{m}_s"],
                    "time_ratio": timing[f"{m}_s"] / timing[f"{ref}_s"],
                    "peak_mb": mem[m],
                    "memory_ratio": mem[m] / mem[ref],
                }
            )
    device = (
        torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
    )
    mem_name = "peak CUDA MiB" if args.device.startswith("cuda") else "peak RSS MiB"
    print(f"one guided prediction, random DiT-{args.size}, {args.dtype}, {device}, median of {args.repeats}")
    print("ratios are to the vanilla CFG of the same fine-tune (full: vanilla; LoRA: lora-vanilla)")
    print(f"| batch | mode | s | time ratio | {mem_name} | memory ratio |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['batch']} | {r['mode']} | {r['s']:.3f} | {r['time_ratio']:.2f} | {r['peak_mb']:.0f} | {r['memory_ratio']:.2f} |"
        )
    if args.json:
        key = 8 if 8 in args.batch_sizes else args.batch_sizes[0]
        ratio = {r["mode"]: r["time_ratio"] for r in rows if r["batch"] == key}
        summary = {f"{m}_over_vanilla": round(v, 4) for m, v in ratio.items() if REFERENCE[m] != m}
        summary = {k.replace("lora-free_over_vanilla", "lora_free_over_lora_vanilla"): v for k, v in summary.items()}
        print(json.dumps({**summary, "batch_for_ratio": key, "rows": rows}))
    return 0


COMMANDS = {
    "sample": Command(
        BenchSample,
        run_sample_bench,
        "one guided prediction, vanilla vs swapped at batch 1/8/32 (the README table); --full adds bf16 and LoRA priors",
    ),
    "train": bench_train.COMMAND,
    "unet": bench_unet.COMMAND,
}
HELP = "benchmarks that print figures (tables in the README)"


if (
    __name__ == "__main__"
):  # worker: python -m priorswap.toolkit.commands.bench TASK BATCH SIZE REPEATS DEVICE DTYPE MODES R
    task, batch, size, repeats, device, dtype, modes, rank = sys.argv[1:9]
    print(json.dumps(_cell(task, int(batch), size, int(repeats), device, dtype, modes.split(","), int(rank))))
