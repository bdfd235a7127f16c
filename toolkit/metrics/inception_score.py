"""Inception Score (Salimans et al. 2016): IS = exp(E_x KL(p(y|x) || p(y))), mean and std over splits.

As in the original code (and torch-fidelity), samples are cut into ``splits`` consecutive chunks, p(y) is the
chunk's mean prediction, and the std is the population std (ddof=0) of the per-chunk scores.
"""

from __future__ import annotations

import torch

from ..errors import PriorswapError


def inception_score(logits: torch.Tensor, splits: int = 10) -> tuple[float, float]:
    """(mean, std) of the IS over ``splits`` chunks of (N, K) class logits."""
    if logits.ndim != 2:
        raise PriorswapError(f"logits have shape {tuple(logits.shape)}; expected (N, num_classes)")
    n = logits.shape[0]
    if not 1 <= int(splits) <= n:
        raise PriorswapError(
            f"Inception Score splits={splits} with {n} samples; expected 1 <= splits <= number of samples"
        )
    logp = torch.log_softmax(logits.detach().to("cpu", torch.float64), dim=1)  # (N, K)
    scores = []
    for chunk in torch.tensor_split(logp, int(splits)):
        logp_y = torch.logsumexp(chunk, dim=0) - torch.log(
            torch.tensor(float(chunk.shape[0]), dtype=torch.float64)
        )  # (K,) log mean p(y|x)
        kl = (chunk.exp() * (chunk - logp_y)).sum(1)  # (n,) KL(p(y|x) || p(y))
        scores.append(kl.mean().exp())
    s = torch.stack(scores)
    return float(s.mean()), float(s.std(correction=0))
