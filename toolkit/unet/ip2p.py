"""InstructPix2Pix: an SD1.5 UNet with 8 input channels (noisy latent + input-image latent) and two conditions.

Quirks owned here (docs/method.md traps 6-7):
- the image condition is the *unscaled* VAE latent of the input image (``latent_dist.mode()``); only the
  noisy latent is scaled, and a swapped prior only ever sees that 4-channel noisy latent;
- the null image is zero latents, the null text is the CLIP embedding of "" (computed once);
- guidance is dual (paper Eq. 9); only the fully unconditional ``cond=None`` = (null image, null text)
  is swappable, ``IP2PCond(image=..., text=None)`` always comes from this model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor

from ..core.denoisers import LatentSpace
from .denoiser import UNetDenoiser
from .text_prior import encode_prompts


@dataclass(frozen=True)
class IP2PCond:
    """Both conditions of one call: ``image`` (B or 1, 4, h, w) unscaled latent, ``text`` (B or 1, L, D).

    A field left as None is that condition's null.
    """

    image: Tensor | None = None
    text: Tensor | None = None


def prompt_embedding(tokenizer, text_encoder, prompts: Sequence[str]) -> Tensor:
    """CLIP text embeddings (N, L, D) of ``prompts``, padded to the tokenizer's length as SD pipelines do."""
    return encode_prompts(tokenizer, text_encoder, prompts)[0]


@torch.no_grad()
def image_latents(vae: torch.nn.Module, images: Tensor) -> Tensor:
    """Unscaled VAE latents (N, 4, H/f, W/f) of images (N, 3, H, W) in [-1, 1] (docs/method.md trap 7: mode, no scaling_factor)."""
    p = next(vae.parameters())
    return vae.encode(images.to(device=p.device, dtype=p.dtype)).latent_dist.mode().detach()


def batch_to(t: Tensor, b: int) -> Tensor:
    """A condition of batch 1 (shared by every sample) or b, as batch b."""
    return t.expand(b, *t.shape[1:]) if t.shape[0] == 1 else t


class IP2PDenoiser(UNetDenoiser):
    """``cond`` is an :class:`IP2PCond`; ``None`` means (null image, null text), the term Eq. 9 swaps."""

    def __init__(self, unet: torch.nn.Module, null_text: Tensor, space: LatentSpace, name: str = "instruct-pix2pix"):
        super().__init__(unet, space, name)
        self.null_text = null_text  # (1, L, D)

    def forward_batch(self, x: Tensor, t: Tensor, conds: Sequence[Any]) -> Tensor:
        b = x.shape[0] // len(conds)
        texts, images = [], []
        for c in conds:
            c = IP2PCond() if c is None else c
            texts.append(batch_to(self.null_text if c.text is None else c.text, b).to(x.device, self.dtype))
            null_image = torch.zeros(b, *x.shape[1:], device=x.device, dtype=self.dtype)  # docs/method.md trap 6
            images.append(null_image if c.image is None else batch_to(c.image, b).to(x.device, self.dtype))
        x_in = torch.cat([x.to(self.dtype), torch.cat(images)], dim=1)  # (n*B, 4 + 4, h, w)
        return self.unet(x_in, t, encoder_hidden_states=torch.cat(texts)).sample  # (n*B, 4, h, w)
