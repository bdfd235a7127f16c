"""Per-image PSNR and SSIM (Zero-1-to-3 novel-view evaluation), via torchmetrics' functional API.

Both take images in [0, 1] and return one value per image (B,), so callers can average or all_gather.
PSNR = 10 log10(1 / MSE) for data range 1; SSIM is Wang et al. 2004 with a Gaussian window (sigma 1.5, size 11).
"""

from __future__ import annotations

import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from ..errors import PriorswapError


def _pair(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if pred.shape != target.shape or pred.ndim != 4:
        raise PriorswapError(
            f"image pair has shapes {tuple(pred.shape)} and {tuple(target.shape)}; expected two equal (B, C, H, W) shapes"
        )
    return pred.float(), target.float().to(pred.device)


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B,) PSNR in dB of images in [0, 1]."""
    pred, target = _pair(pred, target)
    return peak_signal_noise_ratio(pred, target, data_range=1.0, reduction="none", dim=(1, 2, 3))


def ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B,) SSIM of images in [0, 1] (images smaller than the 11 px window are not supported by SSIM)."""
    pred, target = _pair(pred, target)
    if min(pred.shape[-2:]) < 11:
        raise PriorswapError(
            f"SSIM images are {tuple(pred.shape[-2:])} px; expected at least 11x11 (the Gaussian window)"
        )
    return structural_similarity_index_measure(pred, target, data_range=1.0, reduction="none")
