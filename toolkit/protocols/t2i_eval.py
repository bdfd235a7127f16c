"""``priorswap eval t2i``: a text-to-image fine-tune or LoRA over a prompt set, vanilla CFG against each prior.

The protocols' machinery, with diffusers' own pipeline as the sampler (``t2i.run``): samples are PNGs under
``<out>/samples/<method>/g<scale>/<prompt id>_<k>.png`` written atomically (a killed run resumes), ``run.json``
pins what they were made with, ``--shard K/N`` samples prompts i % N == K and an unsharded run scores them all.
Sample k of prompt i starts from seed + i * num_samples + k in every row, so rows pair image by image, and with one
sample per prompt they are ``sample t2i``'s images for the same seed.

Order of work (every check that can fail runs before the first sample):
1. prompts, model / LoRA / priors from their config files (pairing), reference and subject folders, run.json;
2. metric networks (weights checked) and the reference-count warning;
3. the model (and LoRA) loaded; reference statistics and subject embeddings;
4. sampling what is missing: vanilla, then each prior in turn (one prior loaded at a time);
5. scoring from the PNGs on disk: eval.md, eval.csv, items.csv, grid.png.
"""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import asdict, replace
from typing import Callable

import torch

from ..core.sampling import DTYPES
from ..errors import PriorswapError
from ..images import save_grid, to_uint8
from ..metrics.reference import reference_stats
from ..t2i.load import check_lora_file, inspect_pipeline
from ..t2i.pairing import check_pairing
from ..t2i.prompts import Prompt, read_prompts
from ..t2i.run import Settings, T2IJob, prepare, use_prior
from .generate import Method, SampleStore, Setting, single_settings
from .items import Item, check_files, image_paths, subset
from .runner import claim_output, prior_methods, write_json_atomic
from .score import build_metric_nets, reference_images, table, write_results
from .t2i_score import T2IScorer, subject_embeddings
from .t2i_settings import REFERENCE_METRICS, T2IEvalRun

# warn(n reference images, feature dims, metric name): the command's reference-count warning
Warn = Callable[[int, int, str], object]


def run_key(run: T2IEvalRun, prompts: list[Prompt]) -> dict:
    """What the samples on disk depend on; a resumed run (or another shard) must match it."""
    digest = hashlib.sha256("\n".join(f"{p.id}|{p.text}" for p in prompts).encode()).hexdigest()[:16]
    fields = ("model", "lora", "steps", "scheduler", "height", "width", "negative_prompt", "prior_mix", "seed")
    return {
        "kind": "t2i",
        **{f: getattr(run, f) for f in fields},
        "num_samples": run.num_samples,
        "dtype": run.dtype,
        "prior_dtype": run.prior_dtype,
        "prompts": len(prompts),
        "prompts_digest": digest,
    }


def plan(run: T2IEvalRun, methods: list[Method]):
    """The model's and each prior's Info, every refusal answered from config files (no weights yet)."""
    info = inspect_pipeline(run.model, "--model")
    if run.lora:
        check_lora_file(info, run.lora)
    if run.scheduler and info.flow:
        raise PriorswapError(f"--scheduler: {info.name!r} is flow matching; it samples with its own scheduler")
    priors = {}
    for m in methods[1:]:
        if m.prior != "base":
            priors[m.name] = inspect_pipeline(m.prior, "--priors")
            check_pairing(info, priors[m.name])
    return info, priors


def folder_images(folder: str, flag: str) -> list[str]:
    """Every image under ``folder`` (headers checked), or a one-line error naming ``flag``."""
    try:
        paths = image_paths(os.path.expanduser(folder))
    except PriorswapError as e:
        raise PriorswapError(f"{flag} {e}") from None
    check_files([Item(id=os.path.basename(p), image=p) for p in paths])
    return paths


def generate_missing(
    store: SampleStore, job: T2IJob, method: Method, settings: list[Setting], indexed, run: T2IEvalRun
) -> int:
    """Sample every (scale, prompt, k) of ``method`` not on disk yet, a batch at a time; returns how many."""
    base, made = job.settings, 0
    for s in settings:
        todo = [
            (i, p, k) for i, p in indexed for k in range(run.num_samples) if not store.has(method.name, s.tag, p.id, k)
        ]
        job.settings = replace(base, guidance_scale=s.guidance.scale)
        for start in range(0, len(todo), run.batch_size):
            chunk = todo[start : start + run.batch_size]
            seeds = [run.seed + i * run.num_samples + k for i, _, k in chunk]
            images = to_uint8(job.sample_seeded([p.text for _, p, _ in chunk], seeds, method.prior is not None))
            for (_, p, k), image in zip(chunk, images):
                store.save(method.name, s.tag, p.id, k, image)
            made += len(chunk)
        if todo and run.progress:
            print(f"{method.name} {s.label}: made {len(todo)} samples", file=sys.stderr)
    job.settings = base
    return made


def evaluate_t2i(run: T2IEvalRun, warn: Warn | None = None) -> str | None:
    """Run the evaluation; returns the table (None for a shard, whose samples an unsharded run scores)."""
    run.check()
    metrics = run.chosen_metrics()
    # 1. everything read from small files
    prompts = subset(read_prompts(run.prompts), run.limit, run.seed)
    methods = [Method("vanilla")] + prior_methods(run.priors)
    info, prior_infos = plan(run, methods)
    ref_paths = folder_images(run.reference, "--reference")[: run.reference_limit] if run.reference else []
    subject_paths = folder_images(run.subject_images, "--subject-images") if run.subject_images else []
    if set(metrics) & set(REFERENCE_METRICS):
        if len(prompts) * run.num_samples < 2:
            raise PriorswapError(
                f"FID / FD-DINOv2 need at least 2 samples per row; {len(prompts)} prompts x {run.num_samples} given"
            )
        if len(ref_paths) < 2:
            raise PriorswapError(
                f"FID / FD-DINOv2 need at least 2 reference images; --reference gives {len(ref_paths)}"
            )
    claim_output(run.output_dir, run_key(run, prompts), methods)
    # 2. metric networks (shards too: the scoring run must not fail) and the reference's size against their width
    asked = tuple("clip_t" if m == "clip_score" else m for m in metrics)  # CLIP score needs CLIP-T's tokenizer
    nets = build_metric_nets(
        asked,
        run.clip,
        inception_weights=run.inception_weights,
        dinov2_weights=run.dinov2_weights,
        dinov2_model=run.dinov2_model,
        dinov2_size=run.dinov2_size,
    )
    for m, net in (("fid", nets.inception), ("fd_dinov2", nets.dinov2)):
        if m in metrics and warn is not None:
            warn(len(ref_paths), int(net.dim), {"fid": "FID", "fd_dinov2": "FD-DINOv2"}[m])
    indexed = list(enumerate(prompts))
    if run.shard is not None:
        indexed = [(i, p) for i, p in indexed if i % run.shard[1] == run.shard[0]]
    # 3. the model, then what scoring compares with (before sampling, so a bad file fails early)
    scales = run.guidance_scales or [float(info.call_default("guidance_scale"))]
    settings = single_settings(scales)
    sample_settings = Settings(
        steps=run.steps, height=run.height, width=run.width, negative_prompt=run.negative_prompt,
        prior_mix=run.prior_mix, seed=run.seed, batch_size=run.batch_size, progress=run.progress,
    )  # fmt: skip
    device = torch.device(run.device)
    job = prepare(info, [], sample_settings, DTYPES[run.dtype], run.device, lora=run.lora, scheduler=run.scheduler)
    height, width = job.size()
    reference, subjects = {}, {}
    if run.shard is None:
        nets.to(device)
        for m, net in (("fid", nets.inception), ("fd_dinov2", nets.dinov2)):
            if m in metrics:
                px = min(height, width)
                key = {"dataset": "folder", "split": "reference", "root": os.path.abspath(os.path.expanduser(run.reference)),
                       "resolution": px, "count": len(ref_paths)}  # fmt: skip
                cache = os.path.expanduser(run.stats_cache) if run.stats_cache else None
                reference[m] = reference_stats(net, reference_images(ref_paths, px, run.batch_size), None, cache, key)
        subjects = subject_embeddings(nets, subject_paths, metrics, device)
        nets.to("cpu")
    # 4. sampling, one prior at a time
    store, made = SampleStore(run.output_dir), 0
    for m in methods:
        if m.prior is not None:
            use_prior(job, m.prior, prior_infos.get(m.name), DTYPES[run.prior_dtype or run.dtype], run.device, run.lora)
        made += generate_missing(store, job, m, settings, indexed, run)
    if run.shard is not None:
        print(
            f"shard {run.shard[0]}/{run.shard[1]}: made {made} samples in {store.root}; run again without --shard to score"
        )
        return None
    del job  # the pipelines leave the device before the metric networks come on
    if device.type == "cuda":
        torch.cuda.empty_cache()
    # 5. scoring
    scorer = T2IScorer(metrics, nets.to(device), store, reference, subjects, run.batch_size, device)
    results = {(m.name, s.tag): scorer.score(m, s, prompts, run.num_samples) for m in methods for s in settings}
    steps = run.steps or info.call_default("num_inference_steps")
    title = (
        f"Text-to-image: {run.model}{' + ' + run.lora if run.lora else ''} on {run.prompts}, {len(prompts)} prompts x "
        f"{run.num_samples} samples, {height}x{width}, {steps} steps, seed {run.seed}"
    )
    text = table(results, methods, settings, metrics, title)
    write_results(run.output_dir, text, results, methods, settings, metrics)
    shown = prompts[:8]
    rows = [torch.cat([store.load(m.name, settings[0].tag, p.id, 0) for p in shown]) for m in methods]
    save_grid(os.path.join(run.output_dir, "grid.png"), rows, row_labels=[m.name for m in methods])
    write_json_atomic(
        os.path.join(run.output_dir, "settings.json"),
        {**asdict(run), "metrics": list(metrics), "guidance_scales": scales, "made_this_run": made},
    )
    print(text)
    print(f"wrote {os.path.join(run.output_dir, 'eval.md')}, eval.csv and items.csv", file=sys.stderr)
    return text
