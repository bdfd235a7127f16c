"""Streaming Gaussian statistics of features: sums in float64, mergeable across batches and ranks.

Keeps n, sum x and sum x x^T, so mu = sum x / n and the unbiased covariance is
S = (sum x x^T - n mu mu^T) / (n - 1), equal to ``feature_stats`` on the concatenated features.
"""

from __future__ import annotations

from typing import Iterable

import torch

from ..errors import PriorswapError
from .frechet import frechet_distance


class FeatureStats:
    """Running (count, sum, outer-product sum) of D-dim features.

    For DDP: ``state()`` gives float64 tensors to ``all_reduce(SUM)`` (or all_gather and sum), and
    ``FeatureStats.from_state`` rebuilds the accumulator; ``merge`` adds another one in place.
    """

    def __init__(self, dim: int):
        if int(dim) <= 0:
            raise PriorswapError(f"feature dim {dim!r} is not positive; expected the extractor's output width")
        self.dim = int(dim)
        self.count = torch.zeros((), dtype=torch.float64)
        self.sum = torch.zeros(self.dim, dtype=torch.float64)
        self.outer = torch.zeros(self.dim, self.dim, dtype=torch.float64)

    def add(self, features: torch.Tensor) -> "FeatureStats":
        """Accumulate a (B, D) batch."""
        if features.ndim != 2 or features.shape[1] != self.dim:
            raise PriorswapError(f"features have shape {tuple(features.shape)}; expected (B, {self.dim})")
        x = features.detach().to("cpu", torch.float64)  # (B, D)
        self.count += x.shape[0]
        self.sum += x.sum(0)
        self.outer += x.T @ x
        return self

    def merge(self, other: "FeatureStats") -> "FeatureStats":
        """Add another accumulator (e.g. another rank's) into this one."""
        if other.dim != self.dim:
            raise PriorswapError(
                f"cannot merge feature stats of dim {other.dim} into dim {self.dim}; expected equal dims"
            )
        self.count += other.count
        self.sum += other.sum
        self.outer += other.outer
        return self

    def state(self) -> dict[str, torch.Tensor]:
        """The sums as tensors, ready for all_reduce(SUM) or safetensors."""
        return {"count": self.count.reshape(1), "sum": self.sum, "outer": self.outer}

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> "FeatureStats":
        out = cls(int(state["sum"].shape[0]))
        out.count = state["count"].to("cpu", torch.float64).reshape(())
        out.sum = state["sum"].to("cpu", torch.float64).clone()
        out.outer = state["outer"].to("cpu", torch.float64).clone()
        return out

    @property
    def n(self) -> int:
        return int(round(float(self.count)))

    def mean_cov(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, unbiased covariance), as ``feature_stats`` would give on all features at once."""
        n = float(self.count)
        if n < 2:
            raise PriorswapError(f"feature stats hold {n:g} samples; expected at least 2 for a covariance")
        mu = self.sum / n  # (D,)
        cov = (self.outer - n * torch.outer(mu, mu)) / (n - 1)  # (D, D)
        return mu, (cov + cov.T) / 2

    def frechet_to(self, ref: "FeatureStats") -> float:
        """Fréchet distance between these statistics and ``ref`` (e.g. FID against a real split)."""
        if ref.dim != self.dim:
            raise PriorswapError(
                f"reference stats have dim {ref.dim}; expected {self.dim} (same extractor for both sides)"
            )
        return frechet_distance(*self.mean_cov(), *ref.mean_cov())


def _batch_images(batch) -> torch.Tensor:
    """Images out of a loader batch: a tensor, or the first item of a (images, labels, ...) tuple, or dict['image']."""
    if isinstance(batch, dict):
        for key in ("image", "images", "pixel_values"):
            if key in batch:
                return batch[key]
        raise PriorswapError(f"batch dict has keys {sorted(batch)}; expected an 'image' or 'images' entry")
    if isinstance(batch, (tuple, list)):
        return batch[0]
    return batch


def extract_stats(extractor: torch.nn.Module, images: Iterable, num_samples: int | None = None) -> FeatureStats:
    """Run ``extractor`` over batches of images in [0, 1] and accumulate the first ``num_samples`` (all if None)."""
    stats = FeatureStats(extractor.dim)
    for batch in images:
        x = _batch_images(batch)
        if num_samples is not None:
            x = x[: num_samples - stats.n]
        if x.shape[0] == 0:
            break
        with torch.no_grad():
            stats.add(extractor(x))
        if num_samples is not None and stats.n >= num_samples:
            break
    return stats
