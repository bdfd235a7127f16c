"""Zero-1-to-3 (novel-view synthesis): an SD UNet with 8 input channels conditioned on an image and a pose.

The condition (Liu et al. 2023, as the diffusers-format zero123 weights implement it) is
  c = cc_projection([CLIP_image_embed(input) (768), polar (rad), sin(azimuth), cos(azimuth), radius])  (B, 1, 768)
cross-attended, plus the *unscaled* VAE latent of the input image concatenated to the noisy latent (docs/method.md trap 7).
Its null is zeros *after* ``cc_projection`` and zero image latents (docs/method.md trap 6); that is what ``cond=None`` gives.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..core.denoisers import LatentSpace
from .denoiser import UNetDenoiser
from .ip2p import batch_to

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class Zero123Cond:
    """``embedding`` (B or 1, 1, D) after cc_projection and ``image`` (B or 1, 4, h, w) unscaled latent."""

    embedding: Tensor
    image: Tensor


def pose_vector(polar: float, azimuth: float, radius: float) -> Tensor:
    """Relative camera pose as zero123 feeds it: [polar (rad), sin(azimuth), cos(azimuth), radius], (1, 1, 4).

    ``polar`` and ``azimuth`` are in degrees, ``radius`` in the training data's distance units.
    """
    p, a = math.radians(polar), math.radians(azimuth)
    return torch.tensor([[[p, math.sin(a), math.cos(a), radius]]], dtype=torch.float32)


def clip_pixels(images: Tensor, size: int, mean=CLIP_MEAN, std=CLIP_STD) -> Tensor:
    """Images (N, 3, H, W) in [-1, 1] -> CLIP input, the way the original zero123 code preprocesses.

    Bicubic resize with align_corners and no antialiasing (not the HF processor's PIL resize), then
    [0, 1] and CLIP's mean/std.
    """
    x = F.interpolate(images.float(), size=(size, size), mode="bicubic", align_corners=True, antialias=False)
    x = (x + 1.0) / 2.0
    m = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s


@torch.no_grad()
def zero123_embedding(
    image_encoder, cc_projection, images: Tensor, pose: Tensor, mean=CLIP_MEAN, std=CLIP_STD
) -> Tensor:
    """The cross-attention condition (N, 1, D): cc_projection of [CLIP image embed, pose] (pose (N or 1, 1, 4))."""
    p = next(image_encoder.parameters())
    pixels = clip_pixels(images, int(image_encoder.config.image_size), mean, std).to(p.device, p.dtype)
    embeds = image_encoder(pixels).image_embeds.unsqueeze(1)  # (N, 1, 768)
    q = next(cc_projection.parameters())
    pose = batch_to(pose, embeds.shape[0]).to(q.device, q.dtype)
    return cc_projection(torch.cat([embeds.to(q.dtype), pose], dim=-1)).detach()  # (N, 1, 772) -> (N, 1, 768)


class Zero123Denoiser(UNetDenoiser):
    """``cond`` is a :class:`Zero123Cond`; ``None`` is zeros after cc_projection plus zero image latents."""

    def __init__(self, unet: torch.nn.Module, space: LatentSpace, name: str = "zero123"):
        super().__init__(unet, space, name)
        self.embed_dim = int(unet.config.cross_attention_dim)

    def forward_batch(self, x: Tensor, t: Tensor, conds: Sequence[Any]) -> Tensor:
        b = x.shape[0] // len(conds)
        embs, images = [], []
        for c in conds:
            if c is None:  # docs/method.md trap 6: the null lives after cc_projection
                embs.append(torch.zeros(b, 1, self.embed_dim, device=x.device, dtype=self.dtype))
                images.append(torch.zeros(b, *x.shape[1:], device=x.device, dtype=self.dtype))
            else:
                embs.append(batch_to(c.embedding, b).to(x.device, self.dtype))
                images.append(batch_to(c.image, b).to(x.device, self.dtype))
        x_in = torch.cat([x.to(self.dtype), torch.cat(images)], dim=1)  # (n*B, 8, h, w)
        return self.unet(x_in, t, encoder_hidden_states=torch.cat(embs)).sample  # (n*B, 4, h, w)
