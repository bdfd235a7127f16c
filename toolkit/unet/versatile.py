"""Versatile Diffusion image variation: its ``image_unet`` cross-attends to all CLIP-vision tokens of the input.

As diffusers' ``VersatileDiffusionImageVariationPipeline`` builds them, the tokens are
``visual_projection(post_layernorm(last_hidden_state))`` divided by the norm of the class token, and the
null condition is the same embedding of a uniform grey image (0.5 everywhere, 512x512) sent through the
pipeline's own image processor (docs/method.md trap 6). Otherwise it is a plain SD UNet, hence :class:`UNetPrior`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..core.denoisers import LatentSpace
from .text_prior import UNetPrior


@torch.no_grad()
def vd_image_embedding(feature_extractor, image_encoder, images) -> Tensor:
    """Normalised CLIP-vision token embeddings (N, 1 + patches, D) of PIL images or HWC float arrays."""
    p = next(image_encoder.parameters())
    pixels = feature_extractor(images=images, return_tensors="pt").pixel_values.to(p.device, p.dtype)
    hidden = image_encoder(pixels).last_hidden_state  # (N, T, hidden)
    embeds = image_encoder.visual_projection(image_encoder.vision_model.post_layernorm(hidden))  # (N, T, D)
    return (embeds / embeds[:, 0:1].norm(dim=-1, keepdim=True)).detach()


def grey_null_embedding(feature_extractor, image_encoder) -> Tensor:
    """VD's image null (1, T, D): the embedding of a 512x512 image of 0.5 grey, as its pipeline makes it."""
    return vd_image_embedding(feature_extractor, image_encoder, [np.zeros((512, 512, 3)) + 0.5])


class VersatileDenoiser(UNetPrior):
    """VD's ``image_unet``; ``cond`` is a (B or 1, T, D) image embedding, ``None`` the grey-image null."""

    def __init__(
        self, unet: torch.nn.Module, null_embedding: Tensor, space: LatentSpace, name: str = "versatile-diffusion"
    ):
        super().__init__(unet, null_embedding, space, name)

    def forward_batch(self, x: Tensor, t: Tensor, conds) -> Tensor:
        b = x.shape[0] // len(conds)
        conds = [c.expand(b, *c.shape[1:]) if c is not None and c.shape[0] == 1 else c for c in conds]
        return super().forward_batch(x, t, conds)
