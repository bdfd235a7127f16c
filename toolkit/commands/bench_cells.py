"""What ``bench sample``'s DiT cells and its ``--t2i`` cells share: one cell's timing or peak memory inside its
worker subprocess, and running that worker from the parent."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable


def seconds_of(call: Callable[[], object], cuda: bool) -> float:
    """Wall seconds of one ``call()``; on CUDA the queued kernels are waited for on both sides."""
    import torch

    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    call()
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def measure(task: str, calls: dict[str, Callable[[], object]], repeats: int, device: str) -> dict:
    """``task="time"`` alternates the calls of every mode, so that load on the machine hits them alike, and gives each
    mode's median seconds (``{mode}_s``); ``task="mem-<mode>"`` (``calls`` holds that mode only) gives the peak memory
    of two calls (``peak_mb``): on CUDA ``torch.cuda.max_memory_allocated``, on the CPU the peak resident set size."""
    import resource

    import torch

    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times: dict[str, list[float]] = {m: [] for m in calls}
    with torch.no_grad():
        for i in range((repeats if task == "time" else 1) + 1):  # round 0 is a warm-up
            for m, call in calls.items():
                seconds = seconds_of(call, cuda)
                if i:
                    times[m].append(seconds)
    if task != "time":
        peak = (
            torch.cuda.max_memory_allocated() / 2**20
            if cuda
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        )
        return {"peak_mb": peak}
    return {f"{m}_s": statistics.median(v) for m, v in times.items()}


def run_worker(module: str, argv: list[str]) -> dict:
    """``python -m module *argv`` in a fresh process (so that peak memory is that cell's alone): its last line's JSON."""
    cmd = [sys.executable, "-m", module, *argv]
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if res.returncode != 0:
        last = res.stderr.strip().splitlines()[-1] if res.stderr.strip() else res.returncode
        raise RuntimeError(f"benchmark worker failed: {last}")
    return json.loads(res.stdout.strip().splitlines()[-1])
