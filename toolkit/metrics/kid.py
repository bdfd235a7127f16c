"""Kernel Inception Distance (Bińkowski et al., "Demystifying MMD GANs", 2018): the unbiased estimator of the squared
MMD between two feature sets under the cubic polynomial kernel k(x, y) = (x·y / d + 1)^3.

Unlike the Fréchet distance, whose plug-in estimate is biased upward by an amount that depends on the sample count,
this estimator's expectation is the population value at any sample count, so small-sample runs can be compared
with each other and with larger ones. All samples are used at once (no subsets), in float64:

  MMD²_u = Σ_{i≠j} k(x_i, x_j) / (m(m−1)) + Σ_{i≠j} k(y_i, y_j) / (n(n−1)) − 2 Σ_{i,j} k(x_i, y_j) / (mn)

For m = n this is torchmetrics' ``poly_mmd`` (the test checks that); m ≠ n is allowed.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import PriorswapError


def _kernel_sum(a: Tensor, b: Tensor, block: int = 2048) -> Tensor:
    """Σ_ij k(a_i, b_j), in blocks so that large reference sets never build an n x n matrix."""
    d = a.shape[1]
    total = torch.zeros((), dtype=torch.float64)
    for i in range(0, len(a), block):
        total += ((a[i : i + block] @ b.T) / d + 1).pow(3).sum()
    return total


def _off_diagonal_mean(x: Tensor) -> Tensor:
    """Σ_{i≠j} k(x_i, x_j) / (m(m−1))."""
    m, d = x.shape
    diag = ((x * x).sum(1) / d + 1).pow(3).sum()
    return (_kernel_sum(x, x) - diag) / (m * (m - 1))


class KIDReference:
    """A reference feature set with its own kernel term computed once (it does not depend on the samples)."""

    def __init__(self, features: Tensor):
        self.features = _as_f64(features, "reference")
        self.self_term = _off_diagonal_mean(self.features)

    def kid(self, features: Tensor) -> float:
        """Unbiased MMD² between ``features`` (m, d) and the reference (n, d)."""
        x = _as_f64(features, "sample")
        if x.shape[1] != self.features.shape[1]:
            raise PriorswapError(
                f"sample features are {x.shape[1]}-d but the reference's are {self.features.shape[1]}-d"
            )
        cross = _kernel_sum(x, self.features) / (len(x) * len(self.features))
        return float(_off_diagonal_mean(x) + self.self_term - 2 * cross)


def kernel_inception_distance(x: Tensor, y: Tensor) -> float:
    """KID between two (m, d) and (n, d) feature sets; lower is better, and it can be slightly negative."""
    return KIDReference(y).kid(x)


def _as_f64(features: Tensor, what: str) -> Tensor:
    x = torch.as_tensor(features).detach().to("cpu", torch.float64)
    if x.ndim != 2 or len(x) < 2:
        raise PriorswapError(
            f"KID needs at least 2 {what} feature vectors as an (N, D) array, got shape {tuple(x.shape)}"
        )
    return x
