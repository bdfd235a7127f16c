"""``priorswap eval dynamicrafter``: the paper's Table 4, vanilla CFG against each VideoCrafter1 prior, on VBench-I2V.

Order of work (every check before the first sample):
1. read the suite or manifest and decode every image; build each metric network from its file;
2. load DynamiCrafter and each prior, and pair them;
3. sample what is missing into ``videos/<method>/{prompt}-{k}.mp4`` (VBench's names, so VBench itself can score the
   same folders), video k of prompt i from seed + i * V + k in every method;
4. score every video from its mp4 and write ``eval.md`` (Table 4's rows, in percent), ``eval.csv``, ``items.csv`` and
   ``grid.png``.
A killed run resumes from the videos on disk; ``--shard K/N`` samples a share and leaves scoring to an unsharded run.
Videos are decoded with PyAV here, where VBench uses decord and OpenCV: on lossy H.264 their YUV -> RGB conversions
can differ by a level.
"""

from __future__ import annotations

import csv
import hashlib
import os
import sys

import numpy as np
import torch
from PIL import Image

from ..core.sampling import DTYPES
from ..errors import PriorswapError
from ..files import write_text_atomic
from ..images import read_image, save_grid, to_unit
from ..protocols.generate import Method
from ..protocols.items import subset
from ..protocols.runner import claim_output, prior_methods
from ..video.loading import load_video_model
from ..video.pipeline import VideoJob, encode_job, prepare
from ..video.writer import read_fps, read_mp4, to_uint8_frames, write_mp4
from . import dimensions as D
from . import raft
from .amt import load_amt, motion_smoothness
from .dreamsim import DreamSimEnsemble
from .formulas import PairSums, frame_weighted, mean_over_videos
from .networks import AestheticHead, DINOFeatures, load_musiq, load_openai_clip
from .settings import NOT_BUILT, VideoEvalRun
from .suite import DIMENSIONS, TITLES, VideoItem, check_images, read_suite


def video_path(out: str, method: str, item: VideoItem, k: int) -> str:
    return os.path.join(out, "videos", method, f"{item.stem}-{k}.mp4")


def build_nets(run: VideoEvalRun, dims: tuple[str, ...]) -> dict:
    nets = {}
    if {"subject_consistency", "i2v_subject"} & set(dims):
        nets["dino"] = DINOFeatures(run.dino_weights)
    if "background_consistency" in dims:
        nets["clip_b32"] = load_openai_clip(run.clip_b32, "--clip-b32")
    if "aesthetic_quality" in dims:
        nets["clip_l14"] = load_openai_clip(run.clip_l14, "--clip-l14")
        nets["aesthetic"] = AestheticHead(run.aesthetic_head)
    if "motion_smoothness" in dims:
        nets["amt"] = load_amt(run.amt_weights)
    if "dynamic_degree" in dims:
        nets["raft"] = raft.load_raft(run.raft_weights)
    if "imaging_quality" in dims:
        nets["musiq"] = load_musiq(run.musiq_weights)
    if "i2v_background" in dims:
        nets["dreamsim"] = DreamSimEnsemble(run.dreamsim_weights)
    return nets


def score_video(nets: dict, dims: tuple[str, ...], item: VideoItem, frames: np.ndarray, fps: float) -> dict:
    """One video's value per dimension it counts for (consistency: its (sum, count) pair sums)."""
    out: dict = {}
    for d in dims:
        if d not in item.dimensions:
            continue
        if d == "subject_consistency":
            out[d] = D.subject_consistency(nets["dino"], frames)
        elif d == "background_consistency":
            out[d] = D.background_consistency(nets["clip_b32"], frames)
        elif d == "temporal_flickering":
            out[d] = D.temporal_flickering(frames)
        elif d == "motion_smoothness":
            out[d] = motion_smoothness(nets["amt"], frames)
        elif d == "dynamic_degree":
            out[d] = float(raft.dynamic_degree(nets["raft"], frames, fps))
        elif d == "aesthetic_quality":
            out[d] = D.aesthetic_quality(nets["clip_l14"], nets["aesthetic"], frames)
        elif d == "imaging_quality":
            out[d] = D.imaging_quality(nets["musiq"], frames)
        elif d == "i2v_subject":
            out[d] = D.i2v_subject(nets["dino"], Image.open(item.image), frames)  # opened as is, like VBench
        elif d == "i2v_background":
            out[d] = D.i2v_background(nets["dreamsim"], Image.open(item.image), frames)  # as is, like VBench
    return out


def aggregate(dimension: str, values: list) -> float:
    if values and isinstance(values[0], PairSums):
        return frame_weighted(values)
    if dimension == "imaging_quality":  # per-video values are MOS in 0-100; only the aggregate is /100 (54-55)
        return mean_over_videos(values) / 100.0
    return mean_over_videos(values)


def evaluate_videos(run: VideoEvalRun) -> str | None:
    run.check()
    dims = run.chosen()
    items = read_suite(run.data)
    items = subset(items, run.limit, run.seed)
    if not items:
        raise PriorswapError(f"--data {run.data!r} holds no prompt for the chosen dimensions")
    check_images(items)
    methods = [Method("vanilla")] + prior_methods(run.priors)
    nets = build_nets(run, dims) if run.shard is None else None
    key = _run_key(run, items)
    claim_output(run.output_dir, key, methods)
    indexed = [(i, it) for i, it in enumerate(items) if run.shard is None or i % run.shard[1] == run.shard[0]]

    def written(it: VideoItem) -> bool:
        return all(
            os.path.isfile(video_path(run.output_dir, m.name, it, k))
            for m in methods
            for k in range(run.videos_per_prompt)
        )

    missing = [(i, it) for i, it in indexed if not written(it)]
    made = _sample(run, methods, missing, load_video_model) if missing else 0
    if run.shard is not None:
        print(f"shard {run.shard[0]}/{run.shard[1]}: made {made} videos; run again without --shard to score")
        return None
    rows, per = [], {(m.name, d): [] for m in methods for d in dims}
    for m in methods:
        for it in items:
            for k in range(run.videos_per_prompt):
                path = video_path(run.output_dir, m.name, it, k)
                frames = read_mp4(path)  # the file's own frame rate, as VBench reads it (not --fps)
                for d, v in score_video(nets, dims, it, frames, read_fps(path)).items():
                    per[(m.name, d)].append(v)
                    value = v.video_value if hasattr(v, "video_value") else v
                    rows.append({"method": m.name, "prompt": it.prompt, "k": k, "dimension": d, "value": value})
    results = {key: aggregate(key[1], vals) for key, vals in per.items() if vals}
    text = _table(results, methods, dims, run, len(items))
    _write(run.output_dir, text, results, rows, methods, dims, per)
    _grid(run.output_dir, methods, items[:8])
    print(text)
    print(f"wrote {os.path.join(run.output_dir, 'eval.md')}, eval.csv and items.csv", file=sys.stderr)
    return text


def _run_key(run: VideoEvalRun, items: list[VideoItem]) -> dict:
    digest = hashlib.sha256("\n".join(f"{it.prompt}|{it.image}" for it in items).encode()).hexdigest()[:16]
    keep = (
        "model",
        "videos_per_prompt",
        "steps",
        "eta",
        "text_guidance",
        "image_guidance",
        "frame_stride",
        "timestep_spacing",
        "size",
        "fps",
        "seed",
        "dtype",
    )
    return {**{k: getattr(run, k) for k in keep}, "kind": "dynamicrafter", "items": len(items), "items_digest": digest}


def _sample(run: VideoEvalRun, methods, todo, load_video_model) -> int:
    home = "cpu" if run.offload else run.device
    dtype = DTYPES[run.dtype]
    model = load_video_model(run.model, "dynamicrafter", "model", dtype, home)
    priors = {m.name: load_video_model(m.prior, "videocrafter", f"prior {m.name}", dtype, home) for m in methods[1:]}
    made = 0
    for i, it in todo:
        seed = run.seed + i * run.videos_per_prompt
        job = VideoJob.from_flags(run, Image.open(it.image), it.prompt, run.videos_per_prompt, seed)
        conds = encode_job(model, job)  # the image and prompt are encoded once, for every method
        for m in methods:
            paths = [video_path(run.output_dir, m.name, it, k) for k in range(run.videos_per_prompt)]
            if all(os.path.isfile(p) for p in paths):
                continue
            prepared = prepare(model, priors.get(m.name), job, free_encoders=False, conds=conds)
            videos = prepared.samples(m.name != "vanilla", f"{m.name}: {it.prompt[:40]}")
            os.makedirs(os.path.dirname(paths[0]), exist_ok=True)
            for p, v in zip(paths, videos):
                write_mp4(p, to_uint8_frames(v), run.fps)
                made += 1
    return made


def _table(results: dict, methods, dims, run: VideoEvalRun, n: int) -> str:
    names = [m.name for m in methods]
    lines = [
        f"VBench-I2V (Table 4): {run.model} on {run.data}, {n} prompts x {run.videos_per_prompt} videos, "
        f"{run.steps} DDIM steps, eta {run.eta}, gT {run.text_guidance}, gI {run.image_guidance}, seed {run.seed}",
        "",
        "| dimension (%) | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for d in DIMENSIONS:
        if d in dims:
            cells = [f"{100 * results[(m, d)]:.2f}" if (m, d) in results else "-" for m in names]
        elif d in NOT_BUILT:
            cells = [f"not computed: {NOT_BUILT[d]}"] + [""] * (len(names) - 1)
        else:
            cells = ["not chosen"] + [""] * (len(names) - 1)
        lines.append(f"| {TITLES[d]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _write(out: str, text: str, results: dict, rows: list[dict], methods, dims, per: dict) -> None:
    write_text_atomic(os.path.join(out, "eval.md"), lambda f: f.write(text + "\n"))

    def table(f):
        w = csv.writer(f)
        w.writerow(["method", "dimension", "value", "n"])
        for (m, d), v in results.items():
            w.writerow([m, d, v, len(per[(m, d)])])

    def items_csv(f):
        w = csv.DictWriter(f, fieldnames=["method", "prompt", "k", "dimension", "value"])
        w.writeheader()
        w.writerows(rows)

    write_text_atomic(os.path.join(out, "eval.csv"), table)
    write_text_atomic(os.path.join(out, "items.csv"), items_csv)


def _grid(out: str, methods, items: list[VideoItem]) -> None:
    """The input images, then each method's first video's middle frame, one column per prompt."""

    def frame(m, it):
        f = read_mp4(video_path(out, m.name, it, 0))
        return torch.from_numpy(f[len(f) // 2]).permute(2, 0, 1).float() / 255

    h, w = frame(methods[0], items[0]).shape[-2:]
    inputs = torch.cat([to_unit(read_image(it.image, (w, h), quiet=True)) for it in items])
    rows = [inputs] + [torch.stack([frame(m, it) for it in items]) for m in methods]
    save_grid(os.path.join(out, "grid.png"), rows, row_labels=["input"] + [m.name for m in methods])
