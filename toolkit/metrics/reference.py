"""Reference statistics of a real split, computed once and cached on disk (as edm2 does for FID).

The cache key is the caller's dataset identity (name, split, resolution, ...) plus the extractor's name
(network and weights) and the number of samples. The file is written to a temp name and moved into
place with ``os.replace``, which is atomic, so a killed run never leaves a half-written cache behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Any, Iterable

import safetensors.torch
from safetensors import safe_open

from ..errors import PriorswapError
from ..files import atomic_write
from .extractor import FeatureExtractor
from .stats import FeatureStats, extract_stats


def cache_key(extractor: FeatureExtractor, num_samples: int | None, key_parts: dict[str, Any]) -> dict[str, str]:
    """Everything the statistics depend on, as strings."""
    key = {str(k): str(v) for k, v in sorted(key_parts.items())}
    key.update(
        extractor=extractor.name,
        dim=str(extractor.dim),
        num_samples=str(num_samples if num_samples is not None else "all"),
    )
    return key


def cache_path(cache_dir: str, key: dict[str, str]) -> str:
    """``<cache_dir>/refstats-<readable slug>-<sha256 of the key>.safetensors``."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    slug = re.sub(
        r"[^A-Za-z0-9._-]+", "_", "-".join(key.get(k, "") for k in ("dataset", "split", "resolution")).strip("-")
    )[:60]
    return os.path.join(cache_dir, f"refstats-{slug + '-' if slug else ''}{digest}.safetensors")


def save_stats(stats: FeatureStats, path: str, metadata: dict[str, str]) -> None:
    """Write ``stats`` to ``path`` atomically: temp file in the same folder, then ``os.replace``."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_write(path, "wb") as f:
        safetensors.torch.save_file({k: v.contiguous() for k, v in stats.state().items()}, f.name, metadata=metadata)


def load_stats(path: str, key: dict[str, str] | None = None) -> FeatureStats | None:
    """Statistics from ``path``; None if the file is absent or was written for a different key."""
    if not os.path.isfile(path):
        return None
    with safe_open(path, framework="pt") as f:
        if key is not None and f.metadata() != key:
            return None
        return FeatureStats.from_state({k: f.get_tensor(k) for k in f.keys()})


def reference_stats(
    extractor: FeatureExtractor,
    images: Iterable,
    num_samples: int | None,
    cache_dir: str | None,
    key_parts: dict[str, Any],
) -> FeatureStats:
    """Statistics of ``extractor`` features over the first ``num_samples`` real images (all if None).

    ``key_parts`` must identify the data, e.g. ``{"dataset": "food101", "split": "train", "resolution": 256}``;
    ``images`` yields (B, C, H, W) batches in [0, 1] (or tuples whose first item is one) and is only
    iterated on a cache miss. ``cache_dir=None`` disables the cache.
    """
    if not key_parts:
        raise PriorswapError(
            "reference stats key_parts is empty; expected at least the dataset name, split and resolution"
        )
    key = cache_key(extractor, num_samples, key_parts)
    path = cache_path(cache_dir, key) if cache_dir else None
    cached = load_stats(path, key) if path else None
    if cached is not None:
        return cached
    stats = extract_stats(extractor, images, num_samples)
    if num_samples is not None and stats.n < num_samples:
        raise PriorswapError(
            f"reference split gave {stats.n} images; num_samples={num_samples} asked for more (lower it or use a larger split)"
        )
    if path:
        save_stats(stats, path, key)
    return stats
