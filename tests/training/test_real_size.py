"""Opt-in (PRIORSWAP_REAL_SIZE=1): the paper recipe at true DiT-XL/2 size on this machine's CPU, random weights.

    PRIORSWAP_REAL_SIZE=1 python -m pytest tests/training/test_real_size.py -m slow_real_size -s

Each fit runs in its own process (its peak resident memory is that run's alone) with the recipe as shipped except
for sizes: batch 1, 3 steps at bf16-mixed, gradient checkpointing off then on, and the callback's evaluation at
step 3 with 10 samples per (scale, mode) (the fewest the Inception Score's 10 splits take) and 2 DDIM steps against
2 real images, through a random-weight FID
Inception. Steps 1 and 2 time training alone; step 3 adds the evaluation. The figures are printed and written to
$PRIORSWAP_REAL_SIZE_OUT (default: real_size.json in the test's temporary folder).
PRIORSWAP_REAL_SIZE_CHECKPOINTING=off|on runs one of the two fits; PRIORSWAP_REAL_SIZE_ACCELERATOR=cuda runs the fits on a GPU (.ci/gpu_check.sh does); PRIORSWAP_REAL_SIZE_DIT=tiny
swaps the transformer for a tiny one (the VAE, images and recipe keep their sizes) so the plumbing can be checked in
a minute (the GPU check's --cpu-dry-run).
"""

import csv
import json
import os
import subprocess
import sys
import time

import pytest
import torch

from priorswap.toolkit.dit.models import build_dit, dit_scheduler_config

from fakedata import make_food101
from metric_factories import inception_weights
from repo_paths import RECIPES

pytestmark = pytest.mark.slow_real_size
RECIPE = os.path.join(RECIPES, "dit_xl2_food101.yaml")
CB = "--trainer.callbacks.init_args."


SIZE = os.environ.get("PRIORSWAP_REAL_SIZE_DIT", "XL/2")
ACCELERATOR = os.environ.get("PRIORSWAP_REAL_SIZE_ACCELERATOR", "cpu")
# gradient checkpointing off and on (PRIORSWAP_REAL_SIZE_CHECKPOINTING=on runs only that one, to fit a smaller machine)
CHECKPOINTING = {"off": [False], "on": [True]}.get(
    os.environ.get("PRIORSWAP_REAL_SIZE_CHECKPOINTING", ""), [False, True]
)


def save_xl2_base(path: str, size: str = "XL/2") -> str:
    """facebook/DiT-XL-2-256's layout and architecture with random weights: a DiTPipeline folder holding the XL/2
    transformer (28 layers, 16 heads of 72, patch 2, 32x32x4 latents, 1000 classes, learned sigma), the SD VAE
    architecture (sd-vae-ft-ema: 128-256-512-512 blocks, 4 latent channels) and DiT's DDIM schedule."""
    from diffusers import AutoencoderKL, DDIMScheduler, DiTPipeline

    torch.manual_seed(0)
    transformer = build_dit(size, num_classes=1000)
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=2,
        sample_size=256,
        scaling_factor=0.18215,
    )
    DiTPipeline(transformer=transformer, vae=vae, scheduler=DDIMScheduler(**dit_scheduler_config())).save_pretrained(
        path, safe_serialization=True
    )
    return path


def child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p), "HF_HUB_OFFLINE": "1"}


def fit(base: str, food: str, inception: str, runs: str, checkpointing: bool) -> dict:
    clock = os.path.join(runs, "clock.json")
    argv = [sys.executable, "-m", "priorswap.toolkit", "fit", "-c", RECIPE, "--data.root", food,
            "--data.batch_size", "1", "--data.num_workers", "0", "--data.latent_cache", "null",
            "--model.pretrained", base, "--model.vae", os.path.join(base, "vae"),
            "--model.gradient_checkpointing", str(checkpointing).lower(),
            "--trainer.accelerator", ACCELERATOR, "--trainer.precision", "bf16-mixed", "--trainer.max_steps", "3",
            "--trainer.limit_val_batches", "0", "--trainer.log_every_n_steps", "1",
            "--trainer.enable_progress_bar", "false", "--trainer.logger.init_args.save_dir", runs,
            CB + "prior", base, CB + "extractor.init_args.weights_path", inception,
            CB + "extractor.init_args.allow_download", "false", CB + "num_samples", "10",
            CB + "reference_samples", "2", CB + "steps", "2", CB + "batch_size", "10", CB + "every_n_steps", "3",
            CB + "grid_samples", "2", CB + "stats_cache", os.path.join(runs, "stats"),
            "--trainer.callbacks+=step_clock.StepClock", "--trainer.callbacks.init_args.path", clock]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, out[-4000:]
    times = json.load(open(clock))["step_seconds"]
    with open(os.path.join(runs, "dit_xl2_food101", "version_0", "cfg_eval.csv")) as f:
        rows = list(csv.DictReader(f))
    assert len(times) == 3 and len(rows) == 1 and rows[0]["step"] == "3"
    return {
        "gradient_checkpointing": checkpointing,
        "peak_rss_gib": usage.ru_maxrss / 2**20,  # KiB on Linux
        "peak_cuda_gib": json.load(open(clock)).get("peak_cuda_gib"),
        "train_step_s": sum(times[:2]) / 2,
        "eval_s": times[2] - sum(times[:2]) / 2,
        "whole_run_s": time.perf_counter() - start,
        "eval_row": rows[0],
    }


def test_dit_xl2_recipe_at_true_size_trains_and_evaluates(tmp_path):
    base = str(tmp_path / "DiT-XL-2-256")
    # built in a child process, so this one does not hold 2.5 GiB of weights while the fits run
    build = f"from test_real_size import save_xl2_base; save_xl2_base({base!r}, {SIZE!r})"
    subprocess.run([sys.executable, "-c", build], env=child_env(), check=True, timeout=1800)
    food = make_food101(str(tmp_path / "food"), classes=3, per_class=2, test_per_class=2, size=(288, 256))
    inception = inception_weights(str(tmp_path / "inception.pth"))
    results = [fit(base, food, inception, str(tmp_path / f"gc_{gc}"), gc) for gc in CHECKPOINTING]
    path = os.environ.get("PRIORSWAP_REAL_SIZE_OUT") or str(tmp_path / "real_size.json")
    with open(path, "w") as f:
        json.dump({"size": SIZE, "accelerator": ACCELERATOR, "cpu_threads": torch.get_num_threads(),
                   "dit": results}, f, indent=1)  # fmt: skip
    for r in results:
        print(f"DiT-{SIZE} {ACCELERATOR} bf16-mixed batch 1, checkpointing {r['gradient_checkpointing']}: "
              f"{r['train_step_s']:.1f} s/step, evaluation {r['eval_s']:.1f} s, peak RSS {r['peak_rss_gib']:.2f} GiB")  # fmt: skip
    if SIZE == "XL/2" and ACCELERATOR == "cpu":
        assert all(r["peak_rss_gib"] > 2.5 for r in results)  # 675M fp32 parameters alone are 2.5 GiB: truly XL/2
