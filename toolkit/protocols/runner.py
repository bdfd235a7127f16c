"""One protocol run: vanilla CFG against each prior on a user's evaluation set, resumable and shardable.

Order of work (every check that can fail runs before the first sample):
1. read the items and check every image file; build the metric networks (weights checked);
2. load the fine-tune, then each prior on the CPU, and pair it for every latent size the items need;
3. reference statistics for FID / FD-DINOv2 (cached on disk);
4. sample what is missing: vanilla, then each prior (one model on the device at a time);
5. score everything from the PNGs on disk and write eval.md / eval.csv / items.csv.
With ``shard=(k, n)`` only items i = k, k + n, ... are sampled and step 5 is left to an unsharded run.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import asdict

import torch
import torch.nn.functional as F

from ..core.offload import Offloaded, offloaded_decoder
from ..core.pairing import pair
from ..core.sampling import DTYPES, vae_decoder
from ..errors import PriorswapError
from ..files import atomic_write, write_text_atomic
from ..images import read_image, save_grid, to_unit
from ..metrics.reference import reference_stats
from ..priors import load_unet_prior
from ..unet.load import LOADERS
from .conditions import CONDITIONS
from .generate import Method, SampleStore, Setting, dual_settings, generate_missing, single_settings
from .items import check_files, image_paths, read_items, safe_id, subset
from .score import (
    SET_METRICS,
    TITLES,
    Scorer,
    build_metric_nets,
    compare_to_vanilla,
    reference_images,
    table,
    write_results,
)
from .settings import ProtocolRun, check_metrics

KIND_TITLES = {
    "zero123": "Zero-1-to-3 novel views",
    "vd": "Versatile Diffusion image variations",
    "ip2p": "InstructPix2Pix edits",
}


def prior_methods(priors: list[str]) -> list[Method]:
    """``NAME=REF`` or ``REF`` (named after the folder / hub repo) -> methods with unique names."""
    methods = []
    for spec in priors:
        name, _, ref = spec.partition("=") if "=" in spec and not os.path.exists(spec) else ("", "", spec)
        name = safe_id(name or os.path.basename(os.path.normpath(ref)))
        if name == "vanilla" or name in {m.name for m in methods}:
            raise PriorswapError(f"prior name {name!r} is taken; name the prior explicitly as NAME=REF")
        methods.append(Method(name, ref))
    return methods


def settings_of(run: ProtocolRun) -> list[Setting]:
    if run.kind == "ip2p":
        return dual_settings(run.image_guidance, run.text_guidance)
    return single_settings(run.guidance_scales or [run.paper.scale])


def run_key(run: ProtocolRun, steps: int, size: int | None, items) -> dict:
    """What the samples on disk depend on; a resumed run must match it."""
    digest = hashlib.sha256(
        "\n".join(f"{it.id}|{it.image}|{it.target}|{it.pose}|{it.edit}" for it in items).encode()
    ).hexdigest()[:16]
    return {
        "kind": run.kind,
        "model": run.model,
        "steps": steps,
        "scheduler": run.scheduler,
        "seed": run.seed,
        "num_samples": run.num_samples,
        "size": size,
        "dtype": run.dtype,
        "items": len(items),
        "items_digest": digest,
    }


def write_json_atomic(path: str, obj) -> None:
    write_text_atomic(path, lambda f: json.dump(obj, f, indent=2))


def claim_output(out_dir: str, key: dict, methods: list[Method]) -> None:
    """Record ``key`` and each method's prior in out/run.json, or check them against a previous run's: samples are
    reused only like for like, and a prior name keeps its prior (new priors may be added)."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "run.json")
    priors = {m.name: m.prior for m in methods}
    if not os.path.isfile(path):  # first claim: link the file into place, so of two shards starting at once one wins
        try:
            with atomic_write(path, exclusive=True) as f:
                json.dump({**key, "priors": priors}, f, indent=2)
            return
        except FileExistsError:
            pass  # another process claimed it first: check against its claim below
    if os.path.isfile(path):
        try:
            with open(path) as f:
                old = json.load(f)
        except (OSError, ValueError):
            raise PriorswapError(
                f"{path!r} is unreadable; it records what the samples in {out_dir!r} were made with "
                f"(delete the folder or use another)"
            ) from None
        diff = [k for k in key if old.get(k) != key[k]]
        if diff:
            k = diff[0]
            raise PriorswapError(
                f"--output-dir {out_dir!r} holds a run with {k}={old.get(k)!r}, this one has {k}={key[k]!r}; "
                f"use another folder to keep both (or delete it)"
            )
        known = old.get("priors", {})
        for name, ref in priors.items():
            if name in known and known[name] != ref:
                raise PriorswapError(
                    f"--output-dir {out_dir!r} holds samples of prior {name!r} = {known[name]!r}, not {ref!r}; "
                    f"give this prior another name (NAME=REF) or use another folder"
                )
        if all(name in known for name in priors):
            return
        priors = {**known, **priors}
    write_json_atomic(path, {**key, "priors": priors})


def write_grid(path: str, store: SampleStore, conditions, items, methods: list[Method], setting: Setting) -> None:
    """Side by side, first sample of each item: inputs, true views (Zero-1-to-3), then one row per method."""
    h, w = store.load(methods[0].name, setting.tag, items[0].id, 0).shape[-2:]
    fit = lambda x: F.interpolate(x, size=(h, w), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)  # noqa: E731
    rows = [torch.cat([fit(to_unit(conditions.model_input(it))) for it in items])]
    if all(it.target for it in items):
        rows.append(torch.cat([fit(to_unit(read_image(it.target, (w, h), quiet=True))) for it in items]))
    rows += [torch.cat([fit(store.load(m.name, setting.tag, it.id, 0)) for it in items]) for m in methods]
    labels = ["input"] + (["target"] if len(rows) > len(methods) + 1 else []) + [m.name for m in methods]
    save_grid(path, rows, row_labels=labels)


def evaluate_protocol(run: ProtocolRun) -> str | None:
    """Run the protocol; returns the table (None for a shard, whose samples an unsharded run scores)."""
    run.check()
    metrics = check_metrics(run.kind, run.metrics)
    methods = [Method("vanilla")] + prior_methods(run.priors)
    settings = settings_of(run)
    steps = run.resolved_steps()
    size = run.size or run.paper.size  # zero123: 256; vd: the UNet's own; ip2p: each input's own
    if set(metrics) & set(SET_METRICS) and run.reference is None and not os.path.isdir(os.path.expanduser(run.data)):
        raise PriorswapError("--data is a manifest; FID / FD-DINOv2 need --reference (a folder of real images)")
    # 1. data and metric networks
    items = read_items(
        run.data,
        run.kind,
        captions=bool({"clip_t", "clip_d", "imagereward", "pickscore"} & set(metrics)),
        reference_view=run.reference_view,
    )
    items = subset(items, run.limit, run.seed)
    check_files(items)  # all of them, shards too: a shard reads every header to learn the latent sizes
    indexed = list(enumerate(items))
    if run.shard is not None:
        indexed = [(i, it) for i, it in indexed if i % run.shard[1] == run.shard[0]]
    ref_paths = []
    if set(metrics) & set(SET_METRICS):
        if len(items) * run.num_samples < 2:
            raise PriorswapError(
                f"FID / FD-DINOv2 need at least 2 samples per row; {len(items)} items x {run.num_samples} samples given"
            )
        ref_paths = image_paths(os.path.expanduser(run.reference or run.data))[: run.reference_limit]
        if len(ref_paths) < 2:
            raise PriorswapError(
                f"FID / FD-DINOv2 need at least 2 reference images; {run.reference or run.data!r} gives {len(ref_paths)}"
            )
    claim_output(run.output_dir, run_key(run, steps, size, items), methods)
    nets = build_metric_nets(
        metrics,
        run.clip,
        run.lpips_net,
        run.lpips_weights,
        run.inception_weights,
        run.dinov2_weights,
        run.dinov2_model,
        run.dinov2_size,
        run.pickscore,
        run.pickscore_processor,
        run.imagereward_weights,
        run.imagereward_config,
        run.imagereward_tokenizer,
    )  # shards too: the scoring run must not fail
    if run.shard is not None:
        nets = None
    # 2. models, paired before any sampling
    dtype, device = DTYPES[run.dtype], torch.device(run.device)
    home = "cpu" if run.offload else device
    model = LOADERS[run.kind](run.model, dtype, home)
    conditions = CONDITIONS[run.kind](model, device, size, run.offload)
    sizes = sorted({conditions.latent_hw(it) for it in items})
    priors = {}
    for m in methods[1:]:
        loaded = load_unet_prior(m.prior, dtype, "cpu")
        for hw in sizes:
            paired = pair(model.denoiser, loaded.denoiser, hw)  # one schedule for every size
        loaded.vae = None  # only its denoiser is used
        priors[m.name] = paired
    # 3. reference statistics (before sampling, so a bad reference set fails early)
    reference = {}
    if nets is not None and ref_paths:
        folder, paths = os.path.expanduser(run.reference or run.data), ref_paths
        px = conditions.pixel_size(items[0])[0]
        for m, net in (("fid", nets.inception), ("fd_dinov2", nets.dinov2)):
            if m in metrics:
                key = {
                    "dataset": "folder",
                    "split": "reference",
                    "root": os.path.abspath(folder),
                    "resolution": px,
                    "count": len(paths),
                }
                cache = os.path.expanduser(run.stats_cache) if run.stats_cache else None
                reference[m] = reference_stats(
                    net.to(device), reference_images(paths, px, run.batch_size), None, cache, key
                )
                net.to("cpu")
    # 4. sampling
    store = SampleStore(run.output_dir)
    decode = offloaded_decoder(model.vae, device) if run.offload else vae_decoder(model.vae)
    own = Offloaded(model.denoiser, device) if run.offload else model.denoiser
    made = 0
    for m in methods:
        base = priors.get(m.name)
        if base is not None:
            base = Offloaded(base, device) if run.offload else base.to(device)
        made += generate_missing(
            store,
            model,
            conditions,
            m,
            base,
            settings,
            indexed,
            run.num_samples,
            steps,
            run.scheduler,
            run.seed,
            run.batch_size,
            device,
            decode,
            own,
            run.progress,
        )
        if base is not None and not run.offload:
            base.to("cpu")
    if run.shard is not None:
        print(
            f"shard {run.shard[0]}/{run.shard[1]}: made {made} samples in {store.root}; run again without --shard to score"
        )
        return None
    # 5. scoring
    del own, priors
    model.denoiser.to("cpu")
    model.vae.to("cpu")
    conditions.release()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    scorer = Scorer(run.kind, metrics, nets.to(device), conditions, store, reference, run.batch_size, device)
    results = {}
    for m in methods:
        for s in settings:
            results[(m.name, s.tag)] = scorer.score(m, s, items, run.num_samples)
    compare_to_vanilla(results, methods, settings)
    title = (
        f"{KIND_TITLES[run.kind]}: {run.model} on {run.data}, {len(items)} items x {run.num_samples} samples, "
        f"{steps} {run.scheduler} steps, seed {run.seed}"
    )
    text = table(results, methods, settings, metrics, title)
    write_results(run.output_dir, text, results, methods, settings, metrics)
    write_grid(os.path.join(run.output_dir, "grid.png"), store, conditions, items[:8], methods, settings[0])
    write_json_atomic(
        os.path.join(run.output_dir, "settings.json"),
        {**asdict(run), "steps": steps, "metrics": list(metrics), "made_this_run": made},
    )
    print(text)
    print(f"wrote {os.path.join(run.output_dir, 'eval.md')}, eval.csv and items.csv", file=sys.stderr)
    return text


__all__ = ["ProtocolRun", "evaluate_protocol", "TITLES"]
