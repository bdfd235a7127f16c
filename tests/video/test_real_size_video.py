"""Opt-in (PRIORSWAP_REAL_SIZE=1): DynamiCrafter-256 with a VideoCrafter1 prior at released size on this machine's CPU.

    PRIORSWAP_REAL_SIZE=1 python -m pytest tests/video/test_real_size_video.py -m slow_real_size -s

Random-weight checkpoints of DynamiCrafter-256 and VideoCrafter1 T2V 512 are written in the released layout and
architecture (the released inference YAMLs, open_clip's ViT-H-14 towers, fp32 as the releases are), converted by
`priorswap convert` as a user would, then sampled by `priorswap sample dynamicrafter` for 2 DDIM steps at 256 x 256,
16 frames, dual CFG (gT 7.5, gI 1.5): once vanilla (no prior loaded) and once swapped (`--prior`, `--no-vanilla`).
Every build, conversion and sampling run is its own process, so its peak resident memory is its own. The time per
sampling step is the command's own progress bar's (its average rate; tqdm told by environment to print every step
and not to smooth); the rest of a run's wall time (imports, loading, encoding, decoding, writing) is reported beside
it. Each .ckpt is deleted once converted, to keep the disk in use down. The figures are printed and written to
$PRIORSWAP_REAL_SIZE_OUT (default: real_size_video.json in the test's temporary folder).

PRIORSWAP_REAL_SIZE_VIDEO=tiny uses the tiny test models instead (same commands, so the plumbing can be checked in a
minute); PRIORSWAP_REAL_SIZE_VIDEO_DTYPE=bf16 samples in bf16 instead of fp32; PRIORSWAP_REAL_SIZE_VIDEO_CKPT=fp16
writes the .ckpt files in fp16 (half the disk; they convert to the same fp32 folders).
"""

import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image
from safetensors import safe_open

from priorswap.toolkit.video.config import read_config
from priorswap.toolkit.video.pipeline import default_size
from priorswap.toolkit.video.writer import read_mp4

pytestmark = pytest.mark.slow_real_size

SIZE = os.environ.get("PRIORSWAP_REAL_SIZE_VIDEO", "released")
DTYPE = os.environ.get("PRIORSWAP_REAL_SIZE_VIDEO_DTYPE", "fp32")
CKPT_DTYPE = {"fp16": "float16"}.get(os.environ.get("PRIORSWAP_REAL_SIZE_VIDEO_CKPT", ""), "float32")
STEPS = 2
SEEDS = {"dynamicrafter": 1, "videocrafter": 2}
GIB = 2**30
# the last refresh of `sample`'s progress bar: "vanilla CFG: 100%|...| 2/2 [00:41<00:00, 20.51s/img-step]"
BAR = re.compile(
    r"(?P<desc>vanilla|swapped) CFG: *\d+%\|[^|\r\n]*\| *(?P<n>\d+)/(?P<total>\d+) "
    r"\[[^<\]]*<[^,\]]*, *(?P<rate>[\d.]+)(?P<unit>s/img-step|img-step/s)\]"
)


def child_env() -> dict[str, str]:
    # tqdm reads TQDM_* as its defaults: a refresh at every step and the plain average rate, so the last refresh of a
    # bar is its steps' mean time
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p), "HF_HUB_OFFLINE": "1",
            "TQDM_MININTERVAL": "0", "TQDM_SMOOTHING": "0"}  # fmt: skip


def child(argv: list[str], what: str) -> dict:
    """Run ``argv`` in its own process: its wall time, peak resident memory and output."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, f"{what} failed:\n{out[-4000:]}"
    return {"wall_s": time.perf_counter() - start, "peak_rss_gib": usage.ru_maxrss / 2**20, "output": out}  # KiB


def build(folder: str, flavour: str) -> dict:
    """A random checkpoint in the released layout, written by a child process; its paths."""
    if SIZE == "tiny":
        code = f"from priorswap.toolkit.video.tiny import save_tiny_checkpoint as s; s({folder!r}, {flavour!r}, {SEEDS[flavour]})"  # fmt: skip
    else:
        code = (f"import torch; from priorswap.toolkit.video.tiny import save_released_size_checkpoint as s; "
                f"s({folder!r}, {flavour!r}, {SEEDS[flavour]}, torch.{CKPT_DTYPE})")  # fmt: skip
    run = child([sys.executable, "-c", code], f"building the {flavour} checkpoint")
    json_files = [f for f in os.listdir(folder) if f.endswith(".json")]
    paths = {"ckpt": os.path.join(folder, "model.ckpt"), "config": os.path.join(folder, "config.yaml")}
    return {**paths, "openclip": os.path.join(folder, json_files[0]) if json_files else None, "build": run}


def convert(paths: dict, flavour: str, out: str) -> dict:
    """`priorswap convert FLAVOUR model.ckpt OUT` in a child process (the tiny YAML and open_clip JSON passed as a
    user of a custom model would; the released size needs neither), then the .ckpt is deleted."""
    argv = [sys.executable, "-m", "priorswap.toolkit", "convert", flavour, paths["ckpt"], out]
    if SIZE == "tiny":
        argv += ["--config", paths["config"], "--openclip-config", paths["openclip"]]
    run = child(argv, f"converting {flavour}")
    ckpt_gib = os.path.getsize(paths["ckpt"]) / GIB
    os.remove(paths["ckpt"])
    folder_gib = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(out) for f in fs) / GIB
    return {
        "wall_s": run["wall_s"],
        "peak_rss_gib": run["peak_rss_gib"],
        "ckpt_gib": ckpt_gib,
        "folder_gib": folder_gib,
    }


def unet_params(folder: str) -> int:
    """Parameters in a converted folder's UNet, from the safetensors header (nothing loaded)."""
    with safe_open(os.path.join(folder, "unet.safetensors"), "pt") as f:
        return sum(int(np.prod(f.get_slice(k).get_shape())) for k in f.keys())


def sample(dc: str, vc: str | None, image: str, side: int, out: str, mode: str) -> dict:
    """`priorswap sample dynamicrafter` in a child process: vanilla alone (no prior loaded) or swapped alone."""
    argv = [sys.executable, "-m", "priorswap.toolkit", "sample", "dynamicrafter", "--model", dc, "--image", image,
            "--prompt", "a red fox running through fresh snow", "--output-dir", out, "--steps", str(STEPS),
            "--size", str(side), "--image-guidance", "1.5", "--device", "cpu", "--dtype", DTYPE, "--seed", "0"]  # fmt: skip
    if vc is not None:
        argv += ["--prior", vc, "--no-vanilla"]
    run = child(argv, f"sampling {mode}")
    bars = [m for m in BAR.finditer(run["output"]) if m["desc"] == mode and m["n"] == m["total"]]
    assert bars, f"no finished '{mode} CFG' progress bar in the output:\n{run['output'][-3000:]}"
    last = bars[-1]
    assert int(last["total"]) == STEPS  # one sample: an img-step is a sampling step
    rate = float(last["rate"])
    step_s = rate if last["unit"] == "s/img-step" else 1 / rate
    return {"wall_s": run["wall_s"], "peak_rss_gib": run["peak_rss_gib"], "step_s": step_s,
            "other_s": run["wall_s"] - STEPS * step_s}  # fmt: skip


def check_videos(out: str, mode: str, frames: int, side: int) -> None:
    """The written videos are ``frames`` frames of ``side`` x ``side`` (decoded with PyAV), beside their PNG strip."""
    clip = read_mp4(os.path.join(out, mode, "000.mp4"))
    assert clip.shape == (frames, side, side, 3), clip.shape
    assert Image.open(os.path.join(out, mode, "000.png")).size == (frames * side, side)
    assert read_mp4(os.path.join(out, "compare.mp4")).shape[0] == frames
    assert os.path.isfile(os.path.join(out, "input.png")) and os.path.isfile(os.path.join(out, "meta.json"))


def test_dynamicrafter_with_videocrafter_prior_at_released_size_samples(tmp_path):
    folders, runs = {}, {"build": {}, "convert": {}, "sample": {}}
    for flavour in ("dynamicrafter", "videocrafter"):
        paths = build(str(tmp_path / f"{flavour}-ckpt"), flavour)
        cfg = read_config(paths["config"])
        runs["build"][flavour] = {k: paths["build"][k] for k in ("wall_s", "peak_rss_gib")}
        folders[flavour] = str(tmp_path / flavour)
        runs["convert"][flavour] = convert(paths, flavour, folders[flavour])
        if flavour == "dynamicrafter":
            side, frames = default_size(cfg)[0], cfg.unet.temporal_length
    params = {f: unet_params(folders[f]) for f in folders}
    if SIZE != "tiny":
        # the released architectures: DynamiCrafter-256's UNet 1.44B parameters, VideoCrafter1 T2V 512's 1.14B
        assert params["dynamicrafter"] > 1.4e9 and params["videocrafter"] > 1.1e9, params
        assert (side, frames) == (256, 16)
    rng = np.random.default_rng(0)
    image = tmp_path / "input.png"
    Image.fromarray(rng.integers(0, 255, (256, 320, 3), dtype=np.uint8)).save(image)  # not square: resize + crop
    for mode, prior in (("vanilla", None), ("swapped", folders["videocrafter"])):
        out = str(tmp_path / mode)
        runs["sample"][mode] = sample(folders["dynamicrafter"], prior, str(image), side, out, mode)
        check_videos(out, mode, frames, side)
        other = "vanilla" if mode == "swapped" else "swapped"
        assert not os.path.exists(os.path.join(out, other))  # each run sampled its one mode only

    # true size shows in memory: sampling holds DynamiCrafter's UNet, and swapped sampling VideoCrafter1's beside it
    per_param = 4 if DTYPE == "fp32" else 2
    assert runs["sample"]["vanilla"]["peak_rss_gib"] * GIB > params["dynamicrafter"] * per_param
    assert (
        runs["sample"]["swapped"]["peak_rss_gib"] * GIB > (params["dynamicrafter"] + params["videocrafter"]) * per_param
    )
    for flavour in folders:  # conversion holds the fp32 networks it writes
        assert runs["convert"][flavour]["peak_rss_gib"] * GIB > params[flavour] * 4

    report = {"size": SIZE, "dtype": DTYPE, "ckpt_dtype": CKPT_DTYPE, "steps": STEPS, "frames": frames,
              "side": side, "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "cpu_count": os.cpu_count(),
              "unet_params": params, **runs}  # fmt: skip
    path = os.environ.get("PRIORSWAP_REAL_SIZE_OUT") or str(tmp_path / "real_size_video.json")
    with open(path, "w") as f:
        json.dump(report, f, indent=1)
    for flavour, r in runs["convert"].items():
        print(f"{flavour} ({params[flavour] / 1e6:.0f}M-parameter UNet): built in {runs['build'][flavour]['wall_s']:.0f} s "
              f"(peak RSS {runs['build'][flavour]['peak_rss_gib']:.2f} GiB), .ckpt {r['ckpt_gib']:.2f} GiB; "
              f"convert {r['wall_s']:.0f} s, peak RSS {r['peak_rss_gib']:.2f} GiB, folder {r['folder_gib']:.2f} GiB")  # fmt: skip
    for mode, r in runs["sample"].items():
        print(f"DynamiCrafter-{SIZE} {mode}, {side}x{side}, {frames} frames, {STEPS} DDIM steps, dual CFG, {DTYPE}: "
              f"{r['step_s']:.2f} s/step, other {r['other_s']:.0f} s (load, encode, decode, write), "
              f"total {r['wall_s']:.0f} s, peak RSS {r['peak_rss_gib']:.2f} GiB")  # fmt: skip
    print(f"figures written to {path}")
