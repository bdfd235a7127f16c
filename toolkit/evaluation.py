"""Vanilla vs prior-swapped CFG, compared on the same labels and seeds: the evaluation both the Lightning
callback and ``priorswap eval`` run. No Lightning here: work is split by (rank, world) and the caller passes
``all_reduce`` (a sum over ranks) so that metrics are computed once from gathered statistics.

Sample i of an evaluation has label ``i % num_classes`` and seed ``seed + i``, whatever the world size, so
results do not depend on the number of GPUs, and vanilla/swapped pairs share their noise (paired randomness).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Subset

from .core.sampling import Guidance, sample
from .metrics import FeatureExtractor, FeatureStats, inception_score
from .metrics.reference import cache_key, cache_path, load_stats, save_stats

Reduce = Callable[[Tensor], Tensor]
MODES = ("vanilla", "swapped")


@dataclass
class EvalSettings:
    """What to sample: guidance scales, sample count per (scale, mode), sampler and seeds."""

    guidance_scales: tuple[float, ...] = (1.5,)
    num_samples: int = 1000
    steps: int = 50
    scheduler: str = "ddim"
    batch_size: int = 32
    seed: int = 0
    guided_channels: int | None = None
    prior_mix: float = 1.0


@dataclass
class ModeResult:
    """Per-rank accumulators for one (scale, mode)."""

    stats: FeatureStats
    correct: float = 0.0
    count: float = 0.0
    classified: bool = False  # a classifier was given, so acc_* is reported (even at 0% agreement)
    logits: list[Tensor] = field(default_factory=list)


def eval_labels(num_samples: int, num_classes: int) -> Tensor:
    """Balanced labels: sample i gets class i % num_classes."""
    return torch.arange(num_samples) % num_classes


def shard(n: int, rank: int, world: int) -> list[int]:
    """This rank's sample indices: i = rank, rank + world, ..."""
    return list(range(rank, n, world))


def sample_images(
    model,
    prior,
    labels: Tensor | None,
    indices: list[int],
    guidance: Guidance,
    settings: EvalSettings,
    scheduler_config: dict,
    decode: Callable[[Tensor], Tensor] | None,
    progress: bool = False,
    desc: str = "eval",
) -> Tensor:
    """Images (len(indices), C, H, W) in [0, 1] for the given sample indices (seed = settings.seed + i): sample i
    has label ``labels[i]`` (Eq. 6; Eq. 7 with ``prior``). ``labels=None`` samples unconditionally: the prior's
    null when a prior is given, else the model's own."""
    if labels is None:
        model, prior, conds = prior if prior is not None else model, None, None
    else:
        conds = labels[indices].to(model.device)
    size = model.sample_size
    return sample(
        model,
        conds,
        guidance,
        prior=prior,
        seeds=[settings.seed + i for i in indices],
        shape=(model.latent_channels, size, size),
        steps=settings.steps,
        scheduler=settings.scheduler,
        scheduler_config=scheduler_config,
        decode=decode,
        batch_size=settings.batch_size,
        progress=progress,
        desc=desc,
    )


def evaluate_local(
    model,
    prior,
    num_classes: int,
    settings: EvalSettings,
    scheduler_config: dict,
    decode,
    extractor: FeatureExtractor,
    classifier: Callable[[Tensor], Tensor] | None = None,
    rank: int = 0,
    world: int = 1,
    progress: bool = False,
) -> dict[tuple[float, str], ModeResult]:
    """This rank's share of every (scale, mode): features, classifier hits and (for IS) logits."""
    labels = eval_labels(settings.num_samples, num_classes)
    mine = shard(settings.num_samples, rank, world)
    out: dict[tuple[float, str], ModeResult] = {}
    for scale in settings.guidance_scales:
        g = Guidance(scale=scale, prior_mix=settings.prior_mix, guided_channels=settings.guided_channels)
        for mode in MODES:
            res = ModeResult(FeatureStats(extractor.dim))
            for chunk in _chunks(mine, max(settings.batch_size, 1) * 4):
                images = sample_images(
                    model,
                    prior if mode == "swapped" else None,
                    labels,
                    chunk,
                    g,
                    settings,
                    scheduler_config,
                    decode,
                    progress,
                    f"{mode} g={scale:g}",
                )
                x = images.to(extractor.device)
                if has_logits(extractor):  # Inception: one pass gives pool features and IS logits
                    feats, logits = extractor.features_and_logits(x)
                    res.logits.append(logits.cpu())
                else:
                    feats = extractor(x)
                res.stats.add(feats)
                if classifier is not None:
                    pred = classifier(images).argmax(dim=1).cpu()
                    res.correct += float((pred == labels[chunk]).sum())
                    res.classified = True
                res.count += len(chunk)
            out[(scale, mode)] = res
    return out


def summarise(
    local: dict[tuple[float, str], ModeResult],
    reference: FeatureStats,
    metric: str = "fd",
    all_reduce: Reduce = lambda t: t,
) -> dict[str, float]:
    """Gather statistics over ranks and compute each metric once: ``{metric}_{mode}_g{scale}`` plus deltas.

    Keys: ``fd_*`` (Fréchet distance to ``reference``), ``acc_*`` (classifier agreement with the requested
    label, when a classifier was given), and ``*_delta_g{scale}`` = swapped - vanilla.
    """
    values: dict[str, float] = {}
    for (scale, mode), res in local.items():
        state = {k: all_reduce(v.clone()) for k, v in res.stats.state().items()}
        stats = FeatureStats.from_state(state)
        tag = f"g{scale:g}"
        values[f"{metric}_{mode}_{tag}"] = stats.frechet_to(reference)
        # reduced on every rank, so a rank with no hits (or no samples) never decides alone
        correct, count, classified = all_reduce(
            torch.tensor([res.correct, res.count, float(res.classified)], dtype=torch.float64)
        )
        if classified > 0 and count > 0:
            values[f"acc_{mode}_{tag}"] = float(correct / count)
        if res.logits:
            values[f"is_{mode}_{tag}"] = inception_score(torch.cat(res.logits))[0]
    for key in list(values):
        if "_vanilla_" in key:
            other = key.replace("_vanilla_", "_swapped_")
            if other in values:
                values[key.replace("_vanilla_", "_delta_")] = values[other] - values[key]
    return values


@dataclass
class PendingReference:
    """Reference statistics in two phases, so a failure on one rank never leaves others in a collective:
    :func:`local_reference` (no communication) then :meth:`gather` (sum over ranks, rank 0 caches)."""

    stats: FeatureStats
    complete: bool
    path: str | None = None
    key: dict | None = None

    def gather(self, all_reduce: Reduce = lambda t: t, is_rank_zero: bool = True) -> FeatureStats:
        if self.complete:
            return self.stats
        total = FeatureStats.from_state({k: all_reduce(v.clone()) for k, v in self.stats.state().items()})
        if self.path and is_rank_zero:
            save_stats(total, self.path, self.key)
        self.stats, self.complete = total, True
        return total


def local_reference(
    extractor: FeatureExtractor,
    dataset,
    num_samples: int | None,
    key_parts: dict,
    cache_dir: str | None,
    to_images: Callable[[object], Tensor],
    collate_fn=None,
    batch_size: int = 64,
    rank: int = 0,
    world: int = 1,
) -> PendingReference:
    """Real-image statistics of the first ``num_samples`` items of ``dataset`` (all if None): cached on disk
    (keyed by ``key_parts``, the extractor and the count), else this rank's share i = rank, rank + world, ...

    ``to_images(batch)`` turns a collated batch into images in [0, 1].
    """
    n = len(dataset) if num_samples is None else min(num_samples, len(dataset))
    key = cache_key(extractor, n, key_parts)
    path = cache_path(os.path.expanduser(cache_dir), key) if cache_dir else None
    cached = load_stats(path, key) if path else None
    if cached is not None:
        return PendingReference(cached, True)
    stats = FeatureStats(extractor.dim)
    loader = DataLoader(Subset(dataset, shard(n, rank, world)), batch_size=batch_size, collate_fn=collate_fn)
    for batch in loader:
        if batch is None:
            continue
        with torch.no_grad():
            stats.add(extractor(to_images(batch).to(extractor.device)))
    return PendingReference(stats, False, path, key)


def has_logits(extractor: FeatureExtractor) -> bool:
    """Whether the extractor has class logits (Inception), so the Inception Score can be reported."""
    return hasattr(extractor, "features_and_logits")


def _chunks(items: list[int], size: int):
    for i in range(0, len(items), size):
        yield items[i : i + size]


def grid_rows(images_by_mode: dict[str, Tensor]) -> Tensor:
    """Vanilla row above swapped row, the same seed in each column: (2k, C, H, W)."""
    return torch.cat([images_by_mode[m] for m in MODES])


def combine_runs(runs: list[dict[str, float]], distance: str) -> dict[str, float]:
    """Several evaluation runs (disjoint seeds) as one: ``distance`` keys take the minimum over runs, as the paper
    reports FID (the minimum of 3 FID-5k runs, after Karras et al.); every other metric the mean. Deltas are
    recomputed from the combined vanilla and swapped values."""
    keys = [k for k in runs[0] if "_delta_" not in k]
    out = {}
    for k in keys:
        vals = [r[k] for r in runs]
        out[k] = min(vals) if k.startswith(distance + "_") else sum(vals) / len(vals)
    for k in keys:
        if "_vanilla_" in k and k.replace("_vanilla_", "_swapped_") in out:
            out[k.replace("_vanilla_", "_delta_")] = out[k.replace("_vanilla_", "_swapped_")] - out[k]
    return out


def format_table(values: dict[str, float], scales: Iterable[float]) -> list[tuple[str, float, float, float]]:
    """Rows (metric @ scale, vanilla, swapped, swapped - vanilla) for printing."""
    rows = []
    metrics = sorted({k.rsplit("_", 2)[0] for k in values})  # keys are {metric}_{mode}_g{scale}; metric may hold "_"
    for scale in scales:
        tag = f"g{scale:g}"
        for m in metrics:
            v, s = values.get(f"{m}_vanilla_{tag}"), values.get(f"{m}_swapped_{tag}")
            if v is not None and s is not None and not (math.isnan(v) or math.isnan(s)):
                rows.append((f"{m} @ {scale:g}", v, s, s - v))
    return rows
